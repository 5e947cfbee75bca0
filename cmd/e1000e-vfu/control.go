package main

import (
	"context"
	"fmt"

	"e1000e-vfu/control"
)

const controlHead = `e1000e-vfu control --socket PATH COMMAND

Sends one command to a running server's control socket and prints the
result as JSON. COMMAND is one of:

  query-config   the model, parameter list and MAC, as check --source,
                 check --dest-config and serve --config read it
  query-stats    statistics and link state
  query-status   run and migration state
  link-up        set the link up
  link-down      set the link down
  announce       announce the guest's addresses to the network now (RARP
                 rounds, as after a migration)

Exit status: 0 the server answered; 2 bad usage (one line naming the flag
or command); 4 the server cannot be reached or answered with an error.
`

func controlCmd(e env, args []string) error {
	fs := newFlagSet(e, "control", controlHead)
	var path string
	fs.StringVar(&path, "socket", "", "control socket `PATH` (required)")
	// The command comes last, after the flags.
	if err := parseFlagsAndArgs(fs, args); err != nil {
		return err
	}
	if path == "" {
		return usagef("--socket is required (see e1000e-vfu control --help)")
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one COMMAND: query-config, query-stats, query-status, link-up, link-down or announce")
	}
	var req control.Request
	up, down := true, false
	switch cmd := fs.Arg(0); cmd {
	case "query-config":
		req.Cmd = control.CmdQueryConfig
	case "query-stats":
		req.Cmd = control.CmdQueryStats
	case "query-status":
		req.Cmd = control.CmdQueryStatus
	case "link-up":
		req = control.Request{Cmd: control.CmdSetLink, Up: &up}
	case "link-down":
		req = control.Request{Cmd: control.CmdSetLink, Up: &down}
	case "announce":
		req.Cmd = control.CmdAnnounce
	default:
		return usagef("unknown COMMAND %q (query-config, query-stats, query-status, link-up, link-down, announce)", cmd)
	}
	res, err := control.Call(context.Background(), path, req)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", res)
	return err
}
