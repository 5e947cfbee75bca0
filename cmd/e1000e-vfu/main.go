// Command e1000e-vfu serves an emulated Intel 82574L (e1000e) NIC over
// vfio-user, describes the device models it implements, and checks whether
// a source device's configuration can migrate to a destination.
//
// Usage errors exit with status 2 and one line on stderr that names the bad
// flag or value; see usage for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"e1000e-vfu/device/model"
)

const usage = `e1000e-vfu: an emulated Intel 82574L (e1000e) NIC served over vfio-user

Usage:
  e1000e-vfu serve --socket PATH [flags]   serve one NIC until SIGINT/SIGTERM
  e1000e-vfu describe                      print every device model as JSON
  e1000e-vfu check --source SRC [--dest FILE] [--dest-config DST]
                                           check a source configuration against
                                           a destination's description or its
                                           server's configuration
  e1000e-vfu control --socket PATH COMMAND talk to a running server's control
                                           socket (query-config, query-stats,
                                           query-status, link-up, link-down)
  e1000e-vfu migrate --src-control PATH --src-qmp PATH --dst-qmp PATH --uri URI
                                           check the destination, then live-migrate
                                           the guest between two QEMUs
  e1000e-vfu version                       print the program and model versions
  e1000e-vfu help                          print this text

Run 'e1000e-vfu COMMAND --help' for a command's flags.
`

// Exit statuses.
const (
	exitOK           = 0
	exitFailure      = 1 // the command ran and the answer is "no" or it failed
	exitUsage        = 2 // bad command line; nothing was started
	exitIncompatible = exitFailure
)

// usageError is a bad command line: exit status 2, one line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// env is what a command reads and writes, so tests can run commands in
// process as well as through the binary.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func main() {
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(cli(e, os.Args[1:]))
}

// cli runs one command line and returns the exit status.
func cli(e env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serveCmd(e, rest)
	case "describe":
		err = describeCmd(e, rest)
	case "check":
		var ok bool
		ok, err = checkCmd(e, rest)
		if err == nil && !ok {
			return exitIncompatible
		}
	case "control":
		err = controlCmd(e, rest)
	case "migrate":
		err = migrateCmd(e, rest)
	case "version", "--version", "-version":
		err = versionCmd(e, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		err = usagef("unknown command %q (commands: serve, describe, check, control, migrate, version, help)", cmd)
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "e1000e-vfu %s: %s\n", cmd, oneLine(ue.msg))
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "e1000e-vfu %s: %s\n", cmd, oneLine(err.Error()))
		return exitFailure
	}
}

// errHelp is returned after a command printed its help on request.
var errHelp = errors.New("help requested")

// oneLine keeps a message on one line: errors.Join separates with newlines.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

func serveCmd(e env, args []string) error {
	cfg, err := parseServe(e, args)
	if err != nil {
		return err
	}
	if cfg.ValidateOnly {
		return printValidated(e.stdout, cfg)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg.Log = e.stderr
	return run(ctx, cfg)
}

func describeCmd(e env, args []string) error {
	fs := newFlagSet(e, "describe", "e1000e-vfu describe\n\nPrints the JSON description of every device model this program implements.\n")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	out, err := model.Describe(model.All()...)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(out)
	return err
}

func versionCmd(e env, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	fmt.Fprintf(e.stdout, "e1000e-vfu %s\n", v)
	for _, m := range model.All() {
		vs := make([]string, 0, len(m.Versions))
		for i := len(m.Versions) - 1; i >= 0; i-- {
			vs = append(vs, fmt.Sprint(m.Versions[i].Number))
		}
		fmt.Fprintf(e.stdout, "model %s versions %s (latest %d)\n", m.Name, strings.Join(vs, ", "), m.Latest())
	}
	return nil
}
