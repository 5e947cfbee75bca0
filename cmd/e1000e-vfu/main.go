// Command e1000e-vfu serves an emulated Intel 82574L (e1000e) NIC over
// vfio-user, describes the device models it implements, checks whether a
// source device's configuration can migrate to a destination, talks to a
// running server's control socket, and drives a live migration between two
// QEMUs.
//
// Every command follows one exit-status rule (see usage and README.md):
// 0 success, 1 incompatible, 2 bad usage or input, 3 a migration that
// failed after it started, 4 any other failure at run time.
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
                                           query-status, link-up, link-down,
                                           announce)
  e1000e-vfu migrate --src-control PATH (--dst-control PATH | --dest-describe FILE)...
                     --src-qmp PATH --dst-qmp PATH --uri URI
                                           check the destination, then live-migrate
                                           the guest between two QEMUs
  e1000e-vfu libvirt-xml --socket PATH [flags]
                                           print a libvirt domain's <metadata> and
                                           <qemu:commandline> blocks for one NIC
  e1000e-vfu version                       print the program and model versions
  e1000e-vfu help                          print this text

Exit status, for every command:
  0  success
  1  incompatible: check found an incompatibility, or migrate refused an
     incompatible destination before anything started
  2  bad usage or bad input, with one line on stderr naming the flag or value;
     nothing was started
  3  a migration failed after it started (the source keeps running)
  4  any other failure at run time: a server or QEMU that cannot be reached, a
     control command answered with an error, serve failing to start, while
     serving, or to shut down

Run 'e1000e-vfu COMMAND --help' for a command's flags.
`

// Exit statuses: one rule for every command, so that a script can tell "no"
// from "you asked wrongly" from "it broke" without knowing which command
// it ran.
const (
	exitOK = 0
	// exitIncompatible: check found an incompatibility, or migrate refused
	// an incompatible destination before anything started.
	exitIncompatible = 1
	// exitUsage: a bad command line or unreadable input; nothing started.
	exitUsage = 2
	// exitMigrationFailed: a migration failed after it started; the source
	// keeps running.
	exitMigrationFailed = 3
	// exitFailure: any other failure at run time (a server or QEMU that
	// cannot be reached, a control command answered with an error, serve
	// failing to start, while serving or to shut down).
	exitFailure = 4
)

// usageError is a bad command line or input: exit status 2, one line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// statusError is a failure with an exit status other than exitFailure.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// exitStatus maps a command's error to its exit status.
func exitStatus(err error) int {
	var (
		ue *usageError
		se *statusError
	)
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &se):
		return se.code
	}
	return exitFailure
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
	case "libvirt-xml":
		err = libvirtXMLCmd(e, rest)
	case "version", "--version", "-version":
		err = versionCmd(e, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		err = usagef("unknown command %q (commands: serve, describe, check, control, migrate, libvirt-xml, version, help)", cmd)
	}
	code := exitStatus(err)
	if code != exitOK {
		fmt.Fprintf(e.stderr, "e1000e-vfu %s: %s\n", cmd, oneLine(err.Error()))
	}
	return code
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

const describeHead = `e1000e-vfu describe

Prints the JSON description of every device model this program implements,
for 'e1000e-vfu check --dest' on another host.

Exit status: 0 printed; 2 bad usage; 4 the output could not be written.
`

func describeCmd(e env, args []string) error {
	fs := newFlagSet(e, "describe", describeHead)
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
