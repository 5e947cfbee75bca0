package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
	"e1000e-vfu/qmp/qmptest"
)

func TestMigrateUsageErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.json")
	all := []string{"--src-control", "c", "--src-qmp", "a", "--dst-qmp", "b", "--uri", "unix:/x", "--dst-control", "d"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate"}, "--src-control is required"},
		{[]string{"migrate", "--src-control", "c"}, "--src-qmp is required"},
		{[]string{"migrate", "--src-control", "c", "--src-qmp", "a"}, "--dst-qmp is required"},
		{[]string{"migrate", "--src-control", "c", "--src-qmp", "a", "--dst-qmp", "b"}, "--uri is required"},
		// Nothing to check the destination against: refused, not guessed.
		{[]string{"migrate", "--src-control", "c", "--src-qmp", "a", "--dst-qmp", "b", "--uri", "unix:/x"},
			"--dst-control PATH or --dest-describe FILE is required"},
		{append(append([]string{"migrate"}, all...), "--timeout", "0s"), "must be positive"},
		{append(append([]string{"migrate"}, all...), "--dest-describe", missing), "--dest-describe open " + missing},
		{append(append([]string{"migrate"}, all...), "--summary-json", filepath.Join(dir, "no", "s.json")), "--summary-json " + filepath.Join(dir, "no", "s.json")},
		{append(append([]string{"migrate"}, all...), "extra"), `unexpected argument "extra"`},
	} {
		r := runBinary(t, "", tc.args...)
		name := strings.Join(tc.args, " ")
		if r.code != exitUsage || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", name, r.code, r.stderr, tc.want)
		}
	}
}

type staticTarget struct {
	cfg model.Config
	mac net.HardwareAddr
}

func (s staticTarget) Config() model.Config     { return s.cfg }
func (s staticTarget) Stats() map[string]uint64 { return nil }
func (s staticTarget) LinkUp() bool             { return true }
func (s staticTarget) SetLink(bool) error       { return nil }
func (s staticTarget) MAC() net.HardwareAddr    { return s.mac }

// serveStatic serves a server's control socket: version's configuration
// and mac (none when nil).
func serveStatic(t *testing.T, version int, mac net.HardwareAddr) string {
	t.Helper()
	cfg, err := model.E1000E().Resolve(version, nil)
	if err != nil {
		t.Fatal(err)
	}
	return startControlWith(t, staticTarget{cfg, mac})
}

// A version-2 source is refused by a version-1-only destination before any
// QEMU is contacted: the QMP sockets given do not even exist.
func TestMigrateRefusesIncompatibleDestination(t *testing.T) {
	dir := t.TempDir()
	sock := serveStatic(t, 2, nil)
	v1only, err := os.ReadFile(filepath.Join("..", "..", "device", "model", "testdata", "v1-only.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, string(v1only), "migrate", "--src-control", sock, "--dest-describe", "-",
		"--src-qmp", filepath.Join(dir, "none-a"), "--dst-qmp", filepath.Join(dir, "none-b"), "--uri", "unix:"+filepath.Join(dir, "m"))
	if r.code != exitIncompatible {
		t.Fatalf("exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "rx-filter-size") || !strings.Contains(r.stderr, "nothing was started") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
}

// migrateAgainst runs migrate from a source server to a destination server
// and two fake QEMUs.
func migrateAgainst(t *testing.T, src, dst string, sq, dq *qmptest.QEMU, extra ...string) result {
	t.Helper()
	args := append([]string{"migrate", "--src-control", src, "--dst-control", dst,
		"--src-qmp", sq.Serve(t), "--dst-qmp", dq.Serve(t), "--uri", "unix:" + filepath.Join(t.TempDir(), "m")}, extra...)
	return runBinary(t, "", args...)
}

// A destination server with another MAC would refuse the state only inside
// the downtime: migrate refuses it before either QEMU hears anything, names
// the address, and exits 1.
func TestMigrateRefusesOtherMAC(t *testing.T) {
	a := net.HardwareAddr{0x02, 0xe1, 0x0e, 0, 0, 1}
	b := net.HardwareAddr{0x02, 0xe1, 0x0e, 0, 0, 2}
	sq := &qmptest.QEMU{Status: "running", Running: true, Script: []string{`{"status":"completed"}`}}
	dq := &qmptest.QEMU{Status: "inmigrate"}
	r := migrateAgainst(t, serveStatic(t, 2, a), serveStatic(t, 2, b), sq, dq)
	if r.code != exitIncompatible {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "mac: source runs "+a.String()+", destination "+b.String()) ||
		!strings.Contains(r.stderr, "nothing was started") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	if sq.Conns()+dq.Conns() != 0 {
		t.Errorf("a QEMU was contacted: source %v, destination %v", sq.Commands(), dq.Commands())
	}
}

// Each outcome of a migration has its exit status.
func TestMigrateExitStatus(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0xe1, 0x0e, 0, 0, 1}
	t.Run("completed", func(t *testing.T) {
		dq := &qmptest.QEMU{Status: "inmigrate"}
		sq := &qmptest.QEMU{Status: "running", Running: true, Script: []string{
			`{"status":"completed","total-time":900,"downtime":42,"vfio":{"transferred":2048}}`}}
		sq.OnMigrate = func() { dq.SetStatus("running", true) }
		sum := filepath.Join(t.TempDir(), "s.json")
		r := migrateAgainst(t, serveStatic(t, 2, mac), serveStatic(t, 2, mac), sq, dq, "--summary-json", sum)
		if r.code != exitOK || !strings.Contains(r.stdout, "check: destination accepts e1000e-vfu.dev/devices/e1000e-82574l (rx-filter-size=16), mac "+mac.String()) {
			t.Fatalf("exit %d; stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
		var s struct {
			DeviceBytes uint64 `json:"device_bytes"`
		}
		b, err := os.ReadFile(sum)
		if err != nil || json.Unmarshal(b, &s) != nil || s.DeviceBytes != 2048 {
			t.Errorf("summary %s, %v", b, err)
		}
	})
	t.Run("failed after the start", func(t *testing.T) {
		dq := &qmptest.QEMU{Status: "inmigrate"}
		sq := &qmptest.QEMU{Status: "running", Running: true, Script: []string{
			`{"status":"failed","error-desc":"vfio device refused the state"}`}}
		r := migrateAgainst(t, serveStatic(t, 2, mac), serveStatic(t, 2, mac), sq, dq)
		if r.code != exitMigrationFailed || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, "the migration failed after it started: migration failed: vfio device refused the state") {
			t.Errorf("exit %d, stderr %q; want 3", r.code, r.stderr)
		}
	})
	t.Run("destination QEMU not waiting", func(t *testing.T) {
		dq := &qmptest.QEMU{Status: "running", Running: true}
		sq := &qmptest.QEMU{Status: "running", Running: true}
		r := migrateAgainst(t, serveStatic(t, 2, mac), serveStatic(t, 2, mac), sq, dq)
		if r.code != exitFailure || !strings.Contains(r.stderr, "nothing was migrated: destination QEMU is \"running\"") {
			t.Errorf("exit %d, stderr %q; want 4", r.code, r.stderr)
		}
		for _, c := range sq.Commands() {
			if c == "migrate" {
				t.Error("the source QEMU was asked to migrate")
			}
		}
	})
	t.Run("destination server unreachable", func(t *testing.T) {
		sq, dq := &qmptest.QEMU{}, &qmptest.QEMU{}
		r := migrateAgainst(t, serveStatic(t, 2, mac), filepath.Join(t.TempDir(), "none"), sq, dq)
		if r.code != exitFailure || !strings.Contains(r.stderr, "nothing was migrated: destination server: control socket") {
			t.Errorf("exit %d, stderr %q; want 4", r.code, r.stderr)
		}
		if sq.Conns()+dq.Conns() != 0 {
			t.Error("a QEMU was contacted")
		}
	})
}

var _ control.AddressReporter = staticTarget{}
