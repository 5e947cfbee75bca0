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

	"e1000e-vfu/device/model"
	"e1000e-vfu/orchestrator"
)

const migrateHead = `e1000e-vfu migrate --src-control PATH --src-qmp PATH --dst-qmp PATH --uri URI [flags]

Live-migrates a guest whose NIC this program serves, as the device-model
rules order it: the source server's configuration (read on its control
socket) is checked against the destination's description (--dest-describe,
the output of 'e1000e-vfu describe' on the destination host; by default this
program's own), and against the destination server's configuration when
--dst-control is given (it must have been started with the source's list,
e.g. 'serve --config' with the source's query-config). Only then are the
QEMUs driven over QMP: the destination QEMU must wait with -incoming (a URI
or "defer"), the source migrates to URI. Progress is printed while it runs,
then a summary: total time, downtime, device state and guest memory sizes.

Exits 1 when the destination is incompatible (nothing was started) or the
migration failed (the source keeps running), 2 on a bad command line.
`

func migrateCmd(e env, args []string) error {
	fs := newFlagSet(e, "migrate", migrateHead)
	var (
		p                 orchestrator.Plan
		describe, asJSON  string
		downtime, timeout time.Duration
	)
	fs.StringVar(&p.SrcControl, "src-control", "", "source server's control socket `PATH` (required)")
	fs.StringVar(&p.DstControl, "dst-control", "", "destination server's control socket `PATH`, to verify its configuration")
	fs.StringVar(&describe, "dest-describe", "", "destination description `FILE` (- for stdin); default: this program's")
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
	if downtime < 0 || timeout <= 0 {
		return usagef("--downtime-limit and --timeout must be positive")
	}
	p.DowntimeLimit = downtime
	p.DstModels = model.All()
	if describe != "" {
		ms, err := readDescription(e, describe)
		if err != nil {
			return usagef("--dest-describe %s", err)
		}
		p.DstModels = ms
	}
	p.Progress = e.stdout

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := orchestrator.Run(ctx, p)
	var ie *orchestrator.IncompatibleError
	if errors.As(err, &ie) {
		for _, pr := range ie.Problems {
			fmt.Fprintln(e.stdout, pr.Msg)
		}
		return errors.New("destination is incompatible; nothing was started")
	}
	if err != nil {
		return err
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
