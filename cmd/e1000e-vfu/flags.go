package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// flagSet is a command's flags with its help text.
type flagSet struct {
	*flag.FlagSet
	head   string
	stdout io.Writer
}

// newFlagSet makes a flag set that reports errors instead of printing them,
// so that every usage error is one line, and prints its help (head plus the
// flag defaults) to stdout on -h/--help only.
func newFlagSet(e env, name, head string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // the flag package calls it on every error too
	return &flagSet{FlagSet: fs, head: head, stdout: e.stdout}
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flagSet, args []string) error {
	if err := parseFlagsAndArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (see e1000e-vfu %s --help)", fs.Arg(0), fs.Name())
	}
	return nil
}

// parseFlagsAndArgs parses args, leaving positional arguments in fs.Args.
func parseFlagsAndArgs(fs *flagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(fs.stdout, fs.head, "\nFlags:\n")
		fs.SetOutput(fs.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		return errHelp
	}
	return usagef("%s (see e1000e-vfu %s --help)", err, fs.Name())
}

// listFlag collects a repeatable flag's values in order.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, " ") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flagSet) map[string]bool {
	m := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}
