//go:build integration

package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A migration that fails half-way leaves the guest running on the source
// with its traffic intact, and a fresh migration succeeds after: the
// destination server killed, the destination QEMU killed, and a device
// stream the destination refuses (its server runs another parameter list,
// which the orchestrator was not told to check).
func TestMigrateFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{})
	// Slow the RAM transfer down so that the fault lands mid-migration.
	r.setBandwidth(4 << 20)
	for _, fault := range []struct {
		name       string
		serverArgs []string
		kill       func(dst *side)
		wantInLog  string // in the destination server's log
		// check is the orchestrator's check of the destination, when
		// not the destination server's configuration.
		check []string
	}{
		{name: "destination server killed", kill: func(dst *side) { dst.srv.Kill() }},
		{name: "destination QEMU killed", kill: func(dst *side) { dst.vm.Kill() }},
		// The orchestrator checks against a description that accepts the
		// source (this program's), so the migration starts and only the
		// destination server can refuse: at the stream's header.
		{name: "device stream refused", serverArgs: []string{"--version", "1"}, wantInLog: "rx-filter-size",
			check: []string{"--dest-describe", filepath.Join(suite.Repo, "cmd", "e1000e-vfu", "testdata", "describe.golden")}},
	} {
		t.Logf("--- %s", fault.name)
		dst := r.dest(fault.serverArgs)
		tcp, udp := r.startFlows()
		done := make(chan migResult, 1)
		go func() { done <- r.migrate(dst, fault.check...) }()
		if fault.kill != nil {
			if err := r.waitActive(1 << 20); err != nil {
				t.Fatalf("%s: %v", fault.name, err)
			}
			fault.kill(dst)
		}
		var res migResult
		select {
		case res = <-done:
		case <-ctx.Done():
			t.Fatalf("%s: the orchestrator did not return", fault.name)
		}
		if res.code != 3 {
			t.Fatalf("%s: migrate exited %d, want 3 (failed after it started):\n%s", fault.name, res.code, res.out)
		}
		t.Logf("%s: migrate failed as it should: %s", fault.name, lastLine(res.out))
		if fault.wantInLog != "" && !strings.Contains(dst.srv.Log(), fault.wantInLog) {
			t.Errorf("%s: the destination server's log does not name %s:\n%s", fault.name, fault.wantInLog, dst.srv.LogTail(2048))
		}
		if err := r.waitRunning(30 * time.Second); err != nil {
			t.Fatalf("%s: %v", fault.name, err)
		}
		r.finishFlows(fault.name, tcp, udp, 4*time.Second)
		r.checkDevice()
		r.ping(3)
		r.checkDriver()
		dst.vm.Kill()
		dst.srv.Kill()
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Log("--- a fresh migration")
	r.setBandwidth(0)
	dst := r.dest(nil)
	tcp, udp := r.startFlows()
	res := r.mustMigrate(dst)
	if res.summary.DeviceBytes == 0 {
		t.Error("no device state moved")
	}
	r.finishFlows("after the faults", tcp, udp, 4*time.Second)
	r.checkDevice()
	r.checkDriver()
}

// setBandwidth sets the source QEMU's migration bandwidth limit in bytes
// per second; 0 restores QEMU's default (128 MiB/s).
func (r *rig) setBandwidth(bps int64) {
	r.t.Helper()
	if bps == 0 {
		bps = 128 << 20
	}
	if err := r.cur.vm.QMP.Execute(r.ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": bps}, nil); err != nil {
		r.t.Fatal(err)
	}
}

// waitActive waits until the source's migration is active with at least
// ram bytes of guest memory sent; a migration that ends first times out
// here.
func (r *rig) waitActive(ram uint64) error {
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		var raw json.RawMessage
		if err := r.cur.vm.QMP.Execute(r.ctx, "query-migrate", nil, &raw); err != nil {
			return err
		}
		var ms struct {
			Status string `json:"status"`
			RAM    struct {
				Transferred uint64 `json:"transferred"`
			} `json:"ram"`
		}
		json.Unmarshal(raw, &ms)
		last = string(raw)
		if ms.Status == "active" && ms.RAM.Transferred >= ram {
			return nil
		}
		// "failed" may be the previous attempt's status, before the new
		// one starts: keep polling.
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the migration did not become active: %s", last)
}

// waitRunning waits until the source QEMU runs again.
func (r *rig) waitRunning(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st, err := status(r.ctx, r.cur.vm)
		if err != nil {
			return err
		}
		if st == "running" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the source QEMU is %q, not running, %v after the failure", st, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
