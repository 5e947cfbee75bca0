package main

import (
	"fmt"
	"io"
	"os"

	"e1000e-vfu/device/model"
)

const checkHead = `e1000e-vfu check --source SRC (--dest FILE | --dest-config DST)...
e1000e-vfu check --source-version N [--source-param name=value]... (--dest FILE | --dest-config DST)...

Checks, without migrating anything, whether a destination can take the state
of a source device. SRC is the source's configuration as query-config or
'serve --validate-only --json' print it: a file, - for stdin, or the JSON
itself. Alternatively --source-version and --source-param give the source as
serve's --version and --param would start it here.

The destination is given as one or both of:
  --dest FILE          a destination host's description ('e1000e-vfu
                       describe' there): could a server there be started
                       with the source's list? It has no MAC.
  --dest-config DST    a destination server's configuration (its
                       query-config; a file, - or the JSON itself): does
                       it run the source's model and parameters, and the
                       source's MAC when both carry one?

Prints every incompatibility, one per line; "compatible" when there is none.
Exit status: 0 compatible; 1 incompatible; 2 bad usage or bad input (one
line naming the flag or value). Only one of the inputs may be - (stdin).
`

// checkCmd returns whether the source is compatible with the destination.
func checkCmd(e env, args []string) (bool, error) {
	fs := newFlagSet(e, "check", checkHead)
	var (
		source, dest, destConfig, version string
		params                            listFlag
	)
	fs.StringVar(&source, "source", "", "source configuration: `SRC` file, - for stdin, or the JSON itself")
	fs.StringVar(&version, "source-version", "", "source started here as version `N`")
	fs.Var(&params, "source-param", "source parameter `name=value`, with --source-version; repeatable")
	fs.StringVar(&dest, "dest", "", "destination host's description `FILE` (its describe output), - for stdin")
	fs.StringVar(&destConfig, "dest-config", "", "destination server's configuration `DST` (its query-config): file, - for stdin, or the JSON itself")
	if err := parseFlags(fs, args); err != nil {
		return false, err
	}
	given := setFlags(fs)
	if dest == "" && destConfig == "" {
		return false, usagef("--dest or --dest-config is required (see e1000e-vfu check --help)")
	}
	byFlags := given["source-version"] || given["source-param"]
	if given["source"] == byFlags {
		return false, usagef("give either --source or --source-version/--source-param")
	}
	stdin := 0
	for _, v := range []string{source, dest, destConfig} {
		if v == "-" {
			stdin++
		}
	}
	if stdin > 1 {
		return false, usagef("only one of --source, --dest and --dest-config may read stdin (-)")
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

	var probs []model.Problem
	if dest != "" {
		models, err := readDescription(e, dest)
		if err != nil {
			return false, usagef("--dest %s", err)
		}
		probs = append(probs, model.Check(src, models)...)
	}
	if destConfig != "" {
		dst, err := readSource(e, destConfig)
		if err != nil {
			return false, usagef("--dest-config %s", err)
		}
		probs = append(probs, model.Compare(src, dst)...)
	}
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
