package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"e1000e-vfu/orchestrator"
)

const migrateHead = `e1000e-vfu migrate --src-control PATH (--dst-control PATH | --dest-describe FILE)...
                   --src-qmp PATH --dst-qmp PATH --uri URI [flags]

Live-migrates a guest whose NIC this program serves, as the device-model
rules order it. First, before either QEMU is contacted, the source server's
configuration (read on its control socket) is checked against the
destination, given as one or both of:

  --dst-control PATH    the destination server's control socket: its
                        query-config must be the source's (model,
                        parameters, and MAC when both report one), as
                        'serve --config' with the source's query-config
                        starts it. The honest check: it is what will load
                        the state.
  --dest-describe FILE  the destination host's description ('e1000e-vfu
                        describe' there; - for stdin): could a server there
                        take the source's list? It cannot see a MAC.

With neither, nothing says the destination can take the state, and migrate
refuses to start. Only then are the QEMUs driven over QMP: the destination
QEMU must wait with -incoming (a URI or "defer"), the source migrates to
URI. Progress is printed while it runs, then a summary: total time,
downtime, device state and guest memory sizes.

Exit status: 0 migrated; 1 the destination is incompatible, every reason
printed, nothing started; 2 bad usage or bad input (one line naming the
flag or value), nothing started; 3 the migration failed after it started
(the source keeps running); 4 a server or QEMU could not be reached or was
not ready, before the migration started.
`

func migrateCmd(e env, args []string) error {
	fs := newFlagSet(e, "migrate", migrateHead)
	var (
		p                 orchestrator.Plan
		describe, asJSON  string
		downtime, timeout time.Duration
	)
	fs.StringVar(&p.SrcControl, "src-control", "", "source server's control socket `PATH` (required)")
	fs.StringVar(&p.DstControl, "dst-control", "", "destination server's control socket `PATH`: its configuration must be the source's")
	fs.StringVar(&describe, "dest-describe", "", "destination host's description `FILE` (- for stdin)")
	fs.StringVar(&p.SrcQMP, "src-qmp", "", "source QEMU's QMP socket `PATH` (required)")
	fs.StringVar(&p.DstQMP, "dst-qmp", "", "destination QEMU's QMP socket `PATH` (required)")
	fs.StringVar(&p.URI, "uri", "", "migration `URI`, e.g. unix:/run/mig.sock (required)")
	fs.DurationVar(&downtime, "downtime-limit", 0, "QEMU's downtime limit (e.g. 300ms); 0 keeps QEMU's")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "give up (and cancel the migration) after this long")
	fs.StringVar(&asJSON, "summary-json", "", "also write the summary as JSON to `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"src-control", p.SrcControl}, {"src-qmp", p.SrcQMP}, {"dst-qmp", p.DstQMP}, {"uri", p.URI},
	} {
		if f.v == "" {
			return usagef("--%s is required (see e1000e-vfu migrate --help)", f.name)
		}
	}
	// This program's own models would accept whatever it could run itself,
	// not what the destination runs: the check must be the destination's.
	if p.DstControl == "" && describe == "" {
		return usagef("--dst-control PATH or --dest-describe FILE is required: the destination must be checked before anything starts (see e1000e-vfu migrate --help)")
	}
	if downtime < 0 || timeout <= 0 {
		return usagef("--downtime-limit and --timeout must be positive")
	}
	p.DowntimeLimit = downtime
	if describe != "" {
		ms, err := readDescription(e, describe)
		if err != nil {
			return usagef("--dest-describe %s", err)
		}
		p.DstModels = ms
	}
	if asJSON != "" {
		if err := checkParentDir(asJSON); err != nil {
			return usagef("--summary-json %s", err)
		}
	}
	p.Progress = e.stdout

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := orchestrator.Run(ctx, p)
	var (
		ie *orchestrator.IncompatibleError
		fe *orchestrator.FailedError
	)
	switch {
	case errors.As(err, &ie):
		for _, pr := range ie.Problems {
			fmt.Fprintln(e.stdout, pr.Msg)
		}
		return &statusError{exitIncompatible, errors.New("destination is incompatible; nothing was started")}
	case errors.As(err, &fe):
		return &statusError{exitMigrationFailed, fmt.Errorf("the migration failed after it started: %w", err)}
	case err != nil:
		// *orchestrator.NotStartedError: nothing was migrated.
		return fmt.Errorf("nothing was migrated: %w", err)
	}
	if asJSON != "" {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := writeFile(asJSON, append(b, '\n')); err != nil {
			return fmt.Errorf("--summary-json: %w", err)
		}
	}
	return nil
}

func writeFile(path string, data []byte) error {
	return os.WriteFile(path, data, 0o644)
}
