package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
)

func TestMigrateUsageErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.json")
	all := []string{"--src-control", "c", "--src-qmp", "a", "--dst-qmp", "b", "--uri", "unix:/x"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate"}, "--src-control is required"},
		{[]string{"migrate", "--src-control", "c"}, "--src-qmp is required"},
		{[]string{"migrate", "--src-control", "c", "--src-qmp", "a"}, "--dst-qmp is required"},
		{[]string{"migrate", "--src-control", "c", "--src-qmp", "a", "--dst-qmp", "b"}, "--uri is required"},
		{append(append([]string{"migrate"}, all...), "--timeout", "0s"), "must be positive"},
		{append(append([]string{"migrate"}, all...), "--dest-describe", missing), "--dest-describe open " + missing},
		{append(append([]string{"migrate"}, all...), "extra"), `unexpected argument "extra"`},
	} {
		r := runBinary(t, "", tc.args...)
		name := strings.Join(tc.args, " ")
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", name, r.code, r.stderr, tc.want)
		}
	}
}

type staticTarget struct{ cfg model.Config }

func (s staticTarget) Config() model.Config     { return s.cfg }
func (s staticTarget) Stats() map[string]uint64 { return nil }
func (s staticTarget) LinkUp() bool             { return true }
func (s staticTarget) SetLink(bool) error       { return nil }

// A version-2 source is refused by a version-1-only destination before any
// QEMU is contacted: the QMP sockets given do not even exist.
func TestMigrateRefusesIncompatibleDestination(t *testing.T) {
	dir := t.TempDir()
	cfg, err := model.E1000E().Resolve(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); (&control.Server{Target: staticTarget{cfg}}).Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	v1only, err := os.ReadFile(filepath.Join("..", "..", "device", "model", "testdata", "v1-only.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, string(v1only), "migrate", "--src-control", sock, "--dest-describe", "-",
		"--src-qmp", filepath.Join(dir, "none-a"), "--dst-qmp", filepath.Join(dir, "none-b"), "--uri", "unix:"+filepath.Join(dir, "m"))
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "rx-filter-size") || !strings.Contains(r.stderr, "nothing was started") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
}
