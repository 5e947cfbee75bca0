package orchestrator

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/qmp/qmptest"
)

// fakeTarget serves a fixed configuration, and a MAC when it has one, on
// a control socket.
type fakeTarget struct {
	cfg model.Config
	mac net.HardwareAddr
}

func (f fakeTarget) MAC() net.HardwareAddr    { return f.mac }
func (f fakeTarget) Config() model.Config     { return f.cfg }
func (f fakeTarget) Stats() map[string]uint64 { return nil }
func (f fakeTarget) LinkUp() bool             { return true }
func (f fakeTarget) SetLink(bool) error       { return nil }

func serveControl(t *testing.T, version int, settings ...string) string {
	t.Helper()
	return serveControlMAC(t, nil, version, settings...)
}

func serveControlMAC(t *testing.T, mac net.HardwareAddr, version int, settings ...string) string {
	t.Helper()
	var ss []model.Setting
	for _, s := range settings {
		st, err := model.ParseSetting(s)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, st)
	}
	cfg, err := model.E1000E().Resolve(version, ss)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := &control.Server{Target: fakeTarget{cfg, mac}}
	panictest.Check(t, "control server", srv)
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func loadModels(t *testing.T, path string) []*model.Model {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := model.DecodeDescription(f)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestRunCompletes(t *testing.T) {
	dst := &qmptest.QEMU{Status: "inmigrate"}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{
		`{"status":"active","total-time":100,"ram":{"transferred":1048576,"remaining":4194304,"dirty-sync-count":1}}`,
		`{"status":"completed","total-time":900,"downtime":42,"setup-time":3,"ram":{"transferred":9437184,"dirty-sync-count":4},"vfio":{"transferred":2048}}`,
	}}
	src.OnMigrate = func() { dst.SetStatus("running", true) }
	var progress strings.Builder
	p := Plan{
		SrcControl:    serveControl(t, 2),
		DstControl:    serveControl(t, 2),
		DstModels:     model.All(),
		SrcQMP:        src.Serve(t),
		DstQMP:        dst.Serve(t),
		URI:           "unix:/nonexistent/mig.sock",
		Poll:          time.Millisecond,
		Progress:      &progress,
		DowntimeLimit: 500 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Run(ctx, p)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	if s.Total != 900*time.Millisecond || s.Downtime != 42*time.Millisecond || s.DeviceBytes != 2048 || s.RAMBytes != 9437184 || s.DirtySyncs != 4 {
		t.Errorf("summary %+v", s)
	}
	if len(s.Source.Params) != 1 || s.Source.Params[0].Name != model.RXFilterSize {
		t.Errorf("source list %+v", s.Source.Params)
	}
	out := progress.String()
	for _, want := range []string{"check: destination accepts", "migrate: active", "1.0 MiB sent", "migrate: completed", "device state 2048 bytes"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	got := strings.Join(src.Commands(), ",")
	if !strings.Contains(got, "migrate-set-parameters,migrate,query-migrate") {
		t.Errorf("source QEMU saw %s", got)
	}
	if !strings.Contains(strings.Join(dst.Commands(), ","), "migrate-incoming") {
		t.Errorf("destination QEMU saw %v", dst.Commands())
	}
}

// A version-2 source against a destination that only knows version 1 is
// refused before either QEMU is touched, naming rx-filter-size.
func TestRunRefusesIncompatibleDestinationBeforeQEMU(t *testing.T) {
	dst := &qmptest.QEMU{Status: "inmigrate"}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"completed"}`}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstModels:  loadModels(t, "testdata/v1-only.json"),
		SrcQMP:     src.Serve(t),
		DstQMP:     dst.Serve(t),
		URI:        "unix:/x",
	}
	_, err := Run(context.Background(), p)
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Fatalf("err = %v, want an IncompatibleError naming rx-filter-size", err)
	}
	if n := len(src.Commands()) + len(dst.Commands()); n != 0 {
		t.Errorf("QEMU was contacted: src %v dst %v", src.Commands(), dst.Commands())
	}
}

// A server started as version 1 may go to the old host.
func TestCheckVersion1SourceAcceptedByV1Only(t *testing.T) {
	p := Plan{SrcControl: serveControl(t, 1), DstModels: loadModels(t, "testdata/v1-only.json")}
	if _, err := Check(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// A destination described with no models at all takes nothing: an
// incompatibility, even beside a destination server that matches.
func TestCheckEmptyDescriptionIsIncompatible(t *testing.T) {
	p := Plan{SrcControl: serveControl(t, 2), DstControl: serveControl(t, 2), DstModels: []*model.Model{}}
	_, err := Check(context.Background(), p)
	var ie *IncompatibleError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want an IncompatibleError", err)
	}
}

// The destination server must run the source's configuration.
func TestCheckDestinationServerConfigMismatch(t *testing.T) {
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstControl: serveControl(t, 2, "rx-filter-size=8"),
		DstModels:  model.All(),
	}
	_, err := Check(context.Background(), p)
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunReportsFailedMigration(t *testing.T) {
	dst := &qmptest.QEMU{Status: "inmigrate"}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{
		`{"status":"active","total-time":10}`,
		`{"status":"failed","error-desc":"vfio device refused the state"}`,
	}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstModels:  model.All(),
		SrcQMP:     src.Serve(t),
		DstQMP:     dst.Serve(t),
		URI:        "unix:/x",
		Poll:       time.Millisecond,
	}
	_, err := Run(context.Background(), p)
	var fe *FailedError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "vfio device refused the state") {
		t.Fatalf("err = %v, want a FailedError with QEMU's reason", err)
	}
}

func TestRunRefusesDestinationNotWaiting(t *testing.T) {
	dst := &qmptest.QEMU{Status: "running", Running: true}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"completed"}`}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstModels:  model.All(),
		SrcQMP:     src.Serve(t),
		DstQMP:     dst.Serve(t),
		URI:        "unix:/x",
	}
	_, err := Run(context.Background(), p)
	var ne *NotStartedError
	if !errors.As(err, &ne) || !strings.Contains(err.Error(), "not waiting") {
		t.Fatalf("err = %v, want a NotStartedError", err)
	}
	for _, c := range src.Commands() {
		if c == "migrate" {
			t.Fatal("source migration started")
		}
	}
}

// A destination server with another MAC would refuse the state inside the
// downtime; the orchestrator refuses it before either QEMU is contacted,
// naming the address, even when the description accepts the list.
func TestRunRefusesOtherMACBeforeQEMU(t *testing.T) {
	a := net.HardwareAddr{0x02, 0xe1, 0x0e, 0, 0, 1}
	b := net.HardwareAddr{0x02, 0xe1, 0x0e, 0, 0, 2}
	dst := &qmptest.QEMU{Status: "inmigrate"}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"completed"}`}}
	var progress strings.Builder
	p := Plan{
		SrcControl: serveControlMAC(t, a, 2),
		DstControl: serveControlMAC(t, b, 2),
		DstModels:  model.All(),
		SrcQMP:     src.Serve(t),
		DstQMP:     dst.Serve(t),
		URI:        "unix:/x",
		Progress:   &progress,
	}
	_, err := Run(context.Background(), p)
	var ie *IncompatibleError
	if !errors.As(err, &ie) || len(ie.Problems) != 1 || ie.Problems[0].Param != "mac" ||
		!strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), b.String()) {
		t.Fatalf("err = %v, want an IncompatibleError naming mac and both addresses", err)
	}
	if n := len(src.Commands()) + len(dst.Commands()); n != 0 {
		t.Errorf("QEMU was contacted: src %v dst %v", src.Commands(), dst.Commands())
	}
	if progress.Len() != 0 {
		t.Errorf("progress before the refusal: %q", progress.String())
	}
	// The same address passes, and the check line names it.
	p.DstControl = serveControlMAC(t, a, 2)
	if _, err := Check(context.Background(), p); err != nil {
		t.Fatalf("same MAC: %v", err)
	}
}

// With nothing to check the destination against, Run refuses before it
// asks anything: checking against this program's own models would accept
// a destination that refuses the state.
func TestRunWithoutDestinationCheckIsRefused(t *testing.T) {
	dst := &qmptest.QEMU{Status: "inmigrate"}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"completed"}`}}
	p := Plan{
		SrcControl: filepath.Join(t.TempDir(), "never-asked.sock"),
		SrcQMP:     src.Serve(t),
		DstQMP:     dst.Serve(t),
		URI:        "unix:/x",
	}
	_, err := Run(context.Background(), p)
	var ne *NotStartedError
	if !errors.As(err, &ne) || !errors.Is(err, ErrNoDestination) {
		t.Fatalf("err = %v, want a NotStartedError wrapping ErrNoDestination", err)
	}
	if n := len(src.Commands()) + len(dst.Commands()); n != 0 {
		t.Errorf("QEMU was contacted: src %v dst %v", src.Commands(), dst.Commands())
	}
}

// Servers that cannot be reached fail before the migration starts.
func TestRunUnreachableIsNotStarted(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		p    Plan
		want string
	}{
		{"source server", Plan{SrcControl: filepath.Join(dir, "none"), DstModels: model.All()}, "source server"},
		{"destination server", Plan{SrcControl: serveControl(t, 2), DstControl: filepath.Join(dir, "none")}, "destination server"},
		{"source QEMU", Plan{SrcControl: serveControl(t, 2), DstModels: model.All(), SrcQMP: filepath.Join(dir, "none")}, "source QEMU"},
	} {
		_, err := Run(context.Background(), tc.p)
		var ne *NotStartedError
		if !errors.As(err, &ne) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a NotStartedError starting %q", tc.name, err, tc.want)
		}
		var fe *FailedError
		var ie *IncompatibleError
		if errors.As(err, &fe) || errors.As(err, &ie) {
			t.Errorf("%s: %v is also a FailedError or IncompatibleError", tc.name, err)
		}
	}
}

// A migration cancelled while it runs is one that failed after starting.
func TestRunCancelledAfterStartIsFailed(t *testing.T) {
	dst := &qmptest.QEMU{Status: "inmigrate"}
	src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"active","total-time":10}`}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstControl: serveControl(t, 2),
		SrcQMP:     src.Serve(t),
		DstQMP:     dst.Serve(t),
		URI:        "unix:/x",
		Poll:       time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	src.OnMigrate = func() { close(started) }
	go func() { <-started; time.Sleep(20 * time.Millisecond); cancel() }()
	_, err := Run(ctx, p)
	var fe *FailedError
	if !errors.As(err, &fe) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a FailedError wrapping the cancellation", err)
	}
	// The cancel is written before Run returns; the fake may read it a
	// moment later.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(strings.Join(src.Commands(), ","), "migrate_cancel") {
		if time.Now().After(deadline) {
			t.Fatalf("the source QEMU was not told to cancel: %v", src.Commands())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A destination whose load fails after the source completed (it stays
// waiting, its own migration "failed") does not leave the guest paused: the
// source, in postmigrate, runs it again, and the error says so. Without
// that evidence — a destination in a state the guest could have
// reached by running there — the source stays paused, and so does a source
// not paused where the migration left it.
func TestRunResumesSourceOnlyWhenTheDestinationLoadFailed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		srcAfter  string
		dstAfter  string
		dstScript string
		resume    bool
	}{
		{"load failed", "postmigrate", "inmigrate", `{"status":"failed","error-desc":"load of migration failed"}`, true},
		{"load failed, source not paused", "internal-error", "inmigrate", `{"status":"failed"}`, false},
		{"destination shut down", "postmigrate", "shutdown", `{"status":"completed"}`, false},
		{"destination paused", "postmigrate", "paused", `{"status":"completed"}`, false},
	} {
		dst := &qmptest.QEMU{Status: "inmigrate", Script: []string{`{}`}}
		src := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"completed","total-time":900}`}}
		src.OnMigrate = func() {
			src.Status, src.Running = tc.srcAfter, false // src is locked here
			dst.SetStatus(tc.dstAfter, false)
			dst.SetScript(tc.dstScript)
		}
		p := Plan{
			SrcControl: serveControl(t, 2), DstControl: serveControl(t, 2), DstModels: model.All(),
			SrcQMP: src.Serve(t), DstQMP: dst.Serve(t), URI: "unix:/nonexistent/mig.sock",
			Poll: time.Millisecond, Progress: io.Discard,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := Run(ctx, p)
		cancel()
		var fe *FailedError
		if !errors.As(err, &fe) {
			t.Fatalf("%s: %v, want a FailedError", tc.name, err)
		}
		resumed := slices.Contains(src.Commands(), "cont")
		if resumed != tc.resume || strings.Contains(err.Error(), "runs on the source again") != tc.resume {
			t.Errorf("%s: cont sent %v, error %q", tc.name, resumed, err)
		}
		if !tc.resume && tc.srcAfter == "postmigrate" && !strings.Contains(err.Error(), "paused on the source") {
			t.Errorf("%s: error %q does not say the guest is paused on the source", tc.name, err)
		}
	}
}
