package main

import (
	"fmt"
	"io"
	"os"

	"e1000e-vfu/device/model"
)

const checkHead = `e1000e-vfu check --source SRC --dest FILE
e1000e-vfu check --source-version N [--source-param name=value]... --dest FILE

Checks, without migrating anything, whether a destination whose description
is in FILE (the output of 'e1000e-vfu describe' there; - for stdin) can take
the state of a source device. SRC is the source's configuration as
query-config or 'serve --validate-only --json' print it: a file, - for stdin,
or the JSON itself. Alternatively --source-version and --source-param give the
source as serve's --version and --param would start it here.

Prints every incompatibility, one per line, and exits 1 when there is one;
prints "compatible" and exits 0 when there is none; exits 2 on a bad command
line or unreadable input.
`

// checkCmd returns whether the source is compatible with the destination.
func checkCmd(e env, args []string) (bool, error) {
	fs := newFlagSet(e, "check", checkHead)
	var (
		source, dest, version string
		params                listFlag
	)
	fs.StringVar(&source, "source", "", "source configuration: `SRC` file, - for stdin, or the JSON itself")
	fs.StringVar(&version, "source-version", "", "source started here as version `N`")
	fs.Var(&params, "source-param", "source parameter `name=value`, with --source-version; repeatable")
	fs.StringVar(&dest, "dest", "", "destination description `FILE`, - for stdin (required)")
	if err := parseFlags(fs, args); err != nil {
		return false, err
	}
	given := setFlags(fs)
	if dest == "" {
		return false, usagef("--dest is required (see e1000e-vfu check --help)")
	}
	byFlags := given["source-version"] || given["source-param"]
	if given["source"] == byFlags {
		return false, usagef("give either --source or --source-version/--source-param")
	}
	if source == "-" && dest == "-" {
		return false, usagef("--source and --dest cannot both read stdin")
	}

	var src model.Source
	if byFlags {
		n := 0
		var err error
		if given["source-version"] {
			if n, err = model.ParseVersion(version); err != nil {
				return false, usagef("--source-version: %s", err)
			}
		}
		settings := make([]model.Setting, 0, len(params))
		for _, p := range params {
			s, err := model.ParseSetting(p)
			if err != nil {
				return false, usagef("--source-param %s", err)
			}
			settings = append(settings, s)
		}
		c, err := model.E1000E().Resolve(n, settings)
		if err != nil {
			return false, usagef("source: %s", err)
		}
		src = c.Source()
	} else {
		var err error
		if src, err = readSource(e, source); err != nil {
			return false, usagef("--source %s", err)
		}
	}

	models, err := readDescription(e, dest)
	if err != nil {
		return false, usagef("--dest %s", err)
	}
	probs := model.Check(src, models)
	for _, p := range probs {
		fmt.Fprintln(e.stdout, p.Msg)
	}
	if len(probs) == 0 {
		fmt.Fprintln(e.stdout, "compatible")
	}
	return len(probs) == 0, nil
}

func readDescription(e env, file string) ([]*model.Model, error) {
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	return model.DecodeDescription(r)
}
