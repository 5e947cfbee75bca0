package main

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
	"e1000e-vfu/internal/panictest"
)

type target struct {
	mu   sync.Mutex
	cfg  model.Config
	link bool
}

func (t *target) Config() model.Config     { return t.cfg }
func (t *target) Stats() map[string]uint64 { return map[string]uint64{"gprc": 1} }
func (t *target) LinkUp() bool             { t.mu.Lock(); defer t.mu.Unlock(); return t.link }
func (t *target) SetLink(up bool) error    { t.mu.Lock(); t.link = up; t.mu.Unlock(); return nil }
func (t *target) Status() control.Status   { return control.Status{State: "running"} }
func (t *target) Announce() (control.AnnounceResult, error) {
	return control.AnnounceResult{Addresses: 1, Rounds: 5}, nil
}
func (t *target) AnnounceStats() control.AnnounceStats {
	return control.AnnounceStats{Rounds: 5, Frames: 5}
}

func startControl(t *testing.T, version int) (string, *target) {
	t.Helper()
	cfg, err := model.E1000E().Resolve(version, nil)
	if err != nil {
		t.Fatal(err)
	}
	tgt := &target{cfg: cfg, link: true}
	return startControlWith(t, tgt), tgt
}

// startControlWith serves tgt on a fresh control socket until the test
// ends, and fails the test if the server recovered a panic.
func startControlWith(t *testing.T, tgt control.Target) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &control.Server{Target: tgt}
	panictest.Check(t, "control server", srv)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func TestControlCommand(t *testing.T) {
	path, tgt := startControl(t, 1)
	for _, tc := range []struct {
		cmd, want string
	}{
		{"query-config", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1}` + "\n"},
		{"query-stats", `{"link_up":true,"stats":{"gprc":1},"announce":{"rounds":5,"frames":5,"errors":0}}` + "\n"},
		{"query-status", `{"state":"running"}` + "\n"},
		{"link-down", `{"link_up":false}` + "\n"},
		{"announce", `{"addresses":1,"tagged":0,"rounds":5}` + "\n"},
	} {
		r := runBinary(t, "", "control", "--socket", path, tc.cmd)
		if r.code != 0 || r.stdout != tc.want || r.stderr != "" {
			t.Errorf("%s: %+v, want %q", tc.cmd, r, tc.want)
		}
	}
	if tgt.LinkUp() {
		t.Error("link-down left the link up")
	}
	if r := runBinary(t, "", "control", "--socket", path, "link-up"); r.code != 0 || !tgt.LinkUp() {
		t.Errorf("link-up: %+v", r)
	}
	// The orchestrator's flow: the running source's configuration into check.
	src := runBinary(t, "", "control", "--socket", path, "query-config")
	r := runBinary(t, "", "check", "--source", strings.TrimSpace(src.stdout), "--dest", filepath.Join("testdata", "v1-only.json"))
	if r.code != 0 || r.stdout != "compatible\n" {
		t.Errorf("check of a running version-1 source against a v1-only host: %+v", r)
	}
}

func TestControlCommandErrors(t *testing.T) {
	path, _ := startControl(t, 2)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"control", "query-config"}, 2, "e1000e-vfu control: --socket is required"},
		{[]string{"control", "--socket", path}, 2, "want exactly one COMMAND"},
		{[]string{"control", "--socket", path, "reboot"}, 2, `unknown COMMAND "reboot"`},
		{[]string{"control", "--socket", path, "query-config", "more"}, 2, "want exactly one COMMAND"},
		{[]string{"control", "--sock", path}, 2, "flag provided but not defined: -sock"},
		{[]string{"control", "--socket", filepath.Join(t.TempDir(), "none"), "query-stats"}, exitFailure, "e1000e-vfu control: control socket: dial unix"},
		// A server that answers with an error: no configuration to report.
		{[]string{"control", "--socket", startControlWith(t, &target{}), "query-config"}, exitFailure,
			"e1000e-vfu control: query-config: the device has no configuration"},
	} {
		r := runBinary(t, "", tc.args...)
		if r.code != tc.code || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %+v, want exit %d and %q", tc.args, r, tc.code, tc.want)
		}
	}
}
