//go:build integration

package migration

import (
	"context"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/qmp"
)

// TestMigrateUnplug: QEMU refuses device_del of our NIC while a migration
// is under way, as it does for its own devices, and neither side is
// harmed: the migration completes and the NIC works on the destination,
// where device_del then removes it and the destination's server is left
// waiting for its next client.
func TestMigrateUnplug(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{rootPort: "rp1"})
	src := r.cur
	dst := r.dest(nil)
	finish := r.slowMigration(ctx, dst, "a refused device_del")
	err := src.vm.QMP.Execute(ctx, "device_del", map[string]any{"id": "nic0"}, nil)
	if err == nil || !strings.Contains(err.Error(), "migrat") {
		t.Fatalf("device_del during a migration: %v, want QEMU's refusal", err)
	}
	t.Logf("device_del during the migration: %v", err)
	finish()

	if err := dst.vm.HotDel(ctx, "nic0", 90*time.Second); err != nil {
		t.Fatalf("device_del after the migration: %v\n%s", err, dst.vm.Dump())
	}
	if st, err := status(ctx, dst.vm); err != nil || st != "running" {
		t.Fatalf("destination QEMU after device_del: %q, %v", st, err)
	}
	if _, err := dst.srv.WaitState(ctx, "waiting", 15*time.Second); err != nil {
		t.Fatalf("destination server after device_del: %v", err)
	}
	t.Log("device_del after the migration: the guest let the NIC go, QEMU runs on, the server waits for a client")
}

// waitMigrationActive polls query-migrate until the migration is active.
func waitMigrationActive(t testing.TB, ctx context.Context, q *qmp.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.Status == "active" {
			return
		}
		if time.Now().After(deadline) || st.Status == "completed" || st.Status == "failed" {
			t.Fatalf("migration status %q, want active", st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
