// Package orchestrator migrates a running guest whose NIC is served by
// e1000e-vfu from one QEMU to another, in the order the device-model rules
// set: check that the destination can take the source's state before
// anything starts — against the destination server's own configuration
// (model, parameters, MAC) and/or the destination host's description —
// then drive both QEMUs over QMP, showing progress, and sum up what it
// took.
//
// Run's errors say how far it got, so a caller can tell a refusal from a
// failure: *IncompatibleError (refused, nothing started), *NotStartedError
// (something could not be reached or was not ready before the migration
// started), *FailedError (the migration started and did not complete).
package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
	"e1000e-vfu/qmp"
)

// Plan says what to migrate where.
type Plan struct {
	// SrcControl is the source server's control socket: its configuration
	// (model and parameter list) is read there.
	SrcControl string
	// DstControl, when set, is the destination server's control socket: its
	// configuration (model, parameters, and MAC when both report one) must
	// be the source's (model.Compare).
	DstControl string
	// DstModels, when set, is the destination's description (what
	// `describe` prints on the destination host); the source's list is
	// checked against it (model.Check). It cannot see the destination's
	// MAC. At least one of DstControl and DstModels must be set: checking
	// against this program's own models would say nothing about the
	// destination.
	DstModels []*model.Model
	// SrcQMP and DstQMP are the QMP sockets of the two QEMUs. The
	// destination QEMU waits for the migration (started with -incoming).
	SrcQMP, DstQMP string
	// URI is the migration channel, e.g. "unix:/run/mig.sock". When the
	// destination was started with "-incoming defer", it is told to listen
	// there first.
	URI string
	// DowntimeLimit, when not zero, is set as QEMU's downtime-limit.
	DowntimeLimit time.Duration
	// Poll is the progress interval (500 ms when zero).
	Poll time.Duration
	// Progress receives one line per poll and the summary; nil discards.
	Progress io.Writer
}

// Summary is what a completed migration took.
type Summary struct {
	Total, Downtime, Setup time.Duration
	// DeviceBytes is the VFIO device state QEMU moved; RAMBytes the guest
	// memory.
	DeviceBytes, RAMBytes uint64
	DirtySyncs            uint64
	Source                model.Source
}

// IncompatibleError lists every reason the destination cannot take the
// source's state; the migration was refused before anything was sent to
// either QEMU.
type IncompatibleError struct {
	Problems []model.Problem
}

func (e *IncompatibleError) Error() string {
	return "destination is incompatible: " + model.Join(e.Problems)
}

// NotStartedError is a failure before the migration started: a server or
// a QEMU could not be reached or answered with an error, or the
// destination QEMU was not waiting for a migration. The source QEMU was not
// asked to migrate; it runs on untouched.
type NotStartedError struct{ Err error }

func (e *NotStartedError) Error() string { return e.Err.Error() }
func (e *NotStartedError) Unwrap() error { return e.Err }

// FailedError is a migration that started and did not complete: QEMU
// reported it failed or cancelled, it was cancelled after the deadline, or
// the destination did not resume. When QEMU's migration failed or was
// cancelled, the source QEMU keeps running the guest; when it completed but
// the destination never ran the guest (its load failed), the source is
// resumed.
type FailedError struct{ Err error }

func (e *FailedError) Error() string { return e.Err.Error() }
func (e *FailedError) Unwrap() error { return e.Err }

// ErrNoDestination is a plan that names nothing to check the destination
// against.
var ErrNoDestination = errors.New("nothing to check the destination against: give its control socket or its description")

func notStarted(format string, args ...any) error {
	return &NotStartedError{Err: fmt.Errorf(format, args...)}
}

func failed(format string, args ...any) error {
	return &FailedError{Err: fmt.Errorf(format, args...)}
}

// Check runs the checks that need no QEMU: the destination server's
// configuration against the source's (when DstControl is set) and the
// source's list against the destination's description (when DstModels
// is). Every problem found is reported in one *IncompatibleError; a server
// that cannot be asked is a *NotStartedError. It returns the source's
// configuration.
func Check(ctx context.Context, p Plan) (model.Source, error) {
	if p.DstControl == "" && p.DstModels == nil {
		return model.Source{}, &NotStartedError{Err: ErrNoDestination}
	}
	src, err := querySource(ctx, p.SrcControl)
	if err != nil {
		return model.Source{}, notStarted("source server: %w", err)
	}
	var probs []model.Problem
	if p.DstModels != nil {
		probs = append(probs, model.Check(src, p.DstModels)...)
	}
	if p.DstControl != "" {
		dst, err := querySource(ctx, p.DstControl)
		if err != nil {
			return src, notStarted("destination server: %w", err)
		}
		probs = append(probs, model.Compare(src, dst)...)
	}
	if len(probs) > 0 {
		return src, &IncompatibleError{Problems: probs}
	}
	return src, nil
}

func querySource(ctx context.Context, path string) (model.Source, error) {
	raw, err := control.Call(ctx, path, control.Request{Cmd: control.CmdQueryConfig})
	if err != nil {
		return model.Source{}, err
	}
	return model.DecodeSource(bytes.NewReader(raw))
}

// migrateStatus is the part of query-migrate this package reads.
type migrateStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	TotalTime int64  `json:"total-time"`
	Downtime  int64  `json:"downtime"`
	SetupTime int64  `json:"setup-time"`
	RAM       *struct {
		Transferred uint64  `json:"transferred"`
		Remaining   uint64  `json:"remaining"`
		Total       uint64  `json:"total"`
		DirtySyncs  uint64  `json:"dirty-sync-count"`
		DirtyRate   uint64  `json:"dirty-pages-rate"`
		MbPerS      float64 `json:"mbps"`
	} `json:"ram"`
	VFIO *struct {
		Transferred uint64 `json:"transferred"`
	} `json:"vfio"`
}

// Run checks, then migrates. An incompatible destination is refused with an
// *IncompatibleError before either QEMU is contacted; a failure before the
// source QEMU accepted "migrate" is a *NotStartedError; one after it is a
// *FailedError, and a migration QEMU reports failed leaves the source
// running. Every error Run returns is one of the three.
func Run(ctx context.Context, p Plan) (Summary, error) {
	out := p.Progress
	if out == nil {
		out = io.Discard
	}
	poll := p.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	src, err := Check(ctx, p)
	if err != nil {
		return Summary{Source: src}, err
	}
	var against []string
	if p.DstControl != "" {
		against = append(against, "its server's configuration")
	}
	if p.DstModels != nil {
		against = append(against, "its description")
	}
	fmt.Fprintf(out, "check: destination accepts %s (checked against %s)\n", describeSource(src), strings.Join(against, " and "))

	sq, err := qmp.Dial(ctx, p.SrcQMP)
	if err != nil {
		return Summary{Source: src}, notStarted("source QEMU: %w", err)
	}
	defer sq.Close()
	dq, err := qmp.Dial(ctx, p.DstQMP)
	if err != nil {
		return Summary{Source: src}, notStarted("destination QEMU: %w", err)
	}
	defer dq.Close()

	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := dq.Execute(ctx, "query-status", nil, &st); err != nil {
		return Summary{Source: src}, notStarted("destination QEMU: %w", err)
	}
	if st.Status != "inmigrate" {
		return Summary{Source: src}, notStarted("destination QEMU is %q, not waiting for an incoming migration (start it with -incoming)", st.Status)
	}
	// exit-on-error false: a destination whose load fails stays, waiting,
	// with its migration "failed", which tells that it never ran the guest
	// (QEMU 9.1 and later); it would otherwise exit and leave no evidence.
	if err := dq.Execute(ctx, "migrate-incoming", map[string]any{"uri": p.URI, "exit-on-error": false}, nil); err != nil {
		// A destination started with -incoming URI already listens there.
		var qe *qmp.Error
		if !errors.As(err, &qe) || !strings.Contains(strings.ToLower(qe.Desc), "already") {
			return Summary{Source: src}, notStarted("destination QEMU: %w", err)
		}
	}
	if p.DowntimeLimit > 0 {
		args := map[string]any{"downtime-limit": p.DowntimeLimit.Milliseconds()}
		if err := sq.Execute(ctx, "migrate-set-parameters", args, nil); err != nil {
			return Summary{Source: src}, notStarted("source QEMU: %w", err)
		}
	}
	// QEMU refusing "migrate" has not started it; from its acceptance on,
	// a failure is one of a started migration.
	if err := sq.Execute(ctx, "migrate", map[string]any{"uri": p.URI}, nil); err != nil {
		return Summary{Source: src}, notStarted("source QEMU: %w", err)
	}
	fmt.Fprintf(out, "migrate: started to %s\n", p.URI)

	var ms migrateStatus
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if err := sq.Execute(ctx, "query-migrate", nil, &ms); err != nil {
			// A deadline that ends during the query still leaves a
			// migration running in the source QEMU: cancel it.
			if ctx.Err() != nil {
				cancelMigration(sq)
				return Summary{Source: src}, failed("migration cancelled: %w", ctx.Err())
			}
			return Summary{Source: src}, failed("source QEMU: %w", err)
		}
		fmt.Fprintln(out, progressLine(ms))
		if ms.Status == "completed" || ms.Status == "failed" || ms.Status == "cancelled" {
			break
		}
		select {
		case <-ctx.Done():
			cancelMigration(sq)
			return Summary{Source: src}, failed("migration cancelled: %w", ctx.Err())
		case <-t.C:
		}
	}
	if ms.Status != "completed" {
		return Summary{Source: src}, failed("migration %s: %s", ms.Status, ms.ErrorDesc)
	}

	// The destination resumes by itself once the migration completes. Only
	// when it says its load failed (still waiting for a migration, its own
	// migration "failed") is it certain that the guest never ran there:
	// then the source, which QEMU left paused in postmigrate with the guest
	// intact, runs it again, as libvirt does. Anything else (a destination
	// gone, in another state, or a deadline) leaves the source paused: it
	// may already run on the destination, and two running copies would
	// corrupt its disks.
	const paused = "the guest is paused on the source (postmigrate): resume it there with cont only if the destination never ran it"
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := dq.Execute(ctx, "query-status", nil, &st); err != nil {
			return Summary{Source: src}, failed("destination QEMU after the migration: %w; %s", err, paused)
		}
		if st.Running {
			break
		}
		if st.Status == "inmigrate" {
			var dm migrateStatus
			if err := dq.Execute(ctx, "query-migrate", nil, &dm); err == nil && dm.Status == "failed" {
				return Summary{Source: src}, resumeSource(sq, failed("the destination's load failed: %s", dm.ErrorDesc))
			}
		}
		if st.Status != "inmigrate" && st.Status != "finish-migrate" && st.Status != "prelaunch" {
			return Summary{Source: src}, failed("destination QEMU is %q after the migration; %s", st.Status, paused)
		}
		if time.Now().After(deadline) {
			return Summary{Source: src}, failed("destination QEMU still %q 30 s after the migration", st.Status)
		}
		select {
		case <-ctx.Done():
			return Summary{Source: src}, failed("waiting for the destination QEMU to resume: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}

	s := Summary{
		Source:   src,
		Total:    time.Duration(ms.TotalTime) * time.Millisecond,
		Downtime: time.Duration(ms.Downtime) * time.Millisecond,
		Setup:    time.Duration(ms.SetupTime) * time.Millisecond,
	}
	if ms.RAM != nil {
		s.RAMBytes = ms.RAM.Transferred
		s.DirtySyncs = ms.RAM.DirtySyncs
	}
	if ms.VFIO != nil {
		s.DeviceBytes = ms.VFIO.Transferred
	}
	fmt.Fprintf(out, "done: total %v, downtime %v, device state %d bytes, guest memory %.1f MiB in %d dirty syncs\n",
		s.Total, s.Downtime, s.DeviceBytes, float64(s.RAMBytes)/(1<<20), s.DirtySyncs)
	return s, nil
}

// cancelMigration asks the source QEMU to cancel its migration, so that it
// keeps running the guest; it has its own deadline because the caller's
// has passed.
func cancelMigration(sq *qmp.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sq.Execute(ctx, "migrate_cancel", nil, nil)
}

// resumeSource runs the guest on the source again after the destination's
// load failed, if the source is still paused where the migration left it
// (postmigrate), and says so in the returned error.
func resumeSource(sq *qmp.Client, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st struct {
		Status string `json:"status"`
	}
	if err := sq.Execute(ctx, "query-status", nil, &st); err != nil {
		return fmt.Errorf("%w; the source QEMU could not be asked to resume: %v", cause, err)
	}
	if st.Status != "postmigrate" {
		return fmt.Errorf("%w; the source QEMU is %q", cause, st.Status)
	}
	if err := sq.Execute(ctx, "cont", nil, nil); err != nil {
		return fmt.Errorf("%w; resuming the guest on the source failed: %v", cause, err)
	}
	return fmt.Errorf("%w; the guest runs on the source again", cause)
}

func describeSource(s model.Source) string {
	parts := make([]string, 0, len(s.Params))
	for _, a := range s.Params {
		parts = append(parts, a.String())
	}
	list := strings.Join(parts, ",")
	if list == "" {
		list = "no parameters"
	}
	if s.MAC != nil {
		return s.Model + " (" + list + "), mac " + s.MAC.String()
	}
	return s.Model + " (" + list + ")"
}

func progressLine(ms migrateStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "migrate: %-9s %6.1fs", ms.Status, float64(ms.TotalTime)/1000)
	if ms.RAM != nil {
		fmt.Fprintf(&b, "  ram %7.1f MiB sent, %7.1f MiB left, %d dirty pages/s, %.1f Mbit/s",
			float64(ms.RAM.Transferred)/(1<<20), float64(ms.RAM.Remaining)/(1<<20), ms.RAM.DirtyRate, ms.RAM.MbPerS)
	}
	if ms.VFIO != nil {
		fmt.Fprintf(&b, "  device %d bytes", ms.VFIO.Transferred)
	}
	return b.String()
}

// MarshalJSON writes the summary for scripts.
func (s Summary) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		TotalMS     int64        `json:"total_ms"`
		DowntimeMS  int64        `json:"downtime_ms"`
		SetupMS     int64        `json:"setup_ms"`
		DeviceBytes uint64       `json:"device_bytes"`
		RAMBytes    uint64       `json:"ram_bytes"`
		DirtySyncs  uint64       `json:"dirty_syncs"`
		Source      model.Source `json:"source"`
	}{s.Total.Milliseconds(), s.Downtime.Milliseconds(), s.Setup.Milliseconds(), s.DeviceBytes, s.RAMBytes, s.DirtySyncs, s.Source})
}
