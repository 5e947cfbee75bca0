package e1000e

import (
	"testing"

	"e1000e-vfu/device"
)

// TestMigratableResetLeavesMigration: a function-level reset in the middle
// of a save returns the machine to RUNNING and the NIC to work.
func TestMigratableResetLeavesMigration(t *testing.T) {
	n, err := New(Config{RXFilterSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMigratable(n, MigrationOptions{V1: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	if !n.Quiesced() {
		t.Fatal("STOP_COPY did not quiesce the NIC")
	}
	if err := m.Reset(); err != nil {
		t.Fatal(err)
	}
	if s := m.MigrationState(); s != device.MigRunning {
		t.Errorf("state %d after reset, want RUNNING", s)
	}
	if n.Quiesced() {
		t.Error("the NIC stays quiesced after reset")
	}
	// The v1 region is offered without mmap unless asked for.
	info := m.Info()
	if len(info.Regions) <= device.RegionMigration {
		t.Fatal("no v1 region")
	}
	r := info.Regions[device.RegionMigration]
	if r.Type != 3 || r.Subtype != 1 || r.Flags&device.RegionMMap != 0 || r.MMapFile != nil {
		t.Errorf("v1 region %+v: want type 3/1 without mmap", r)
	}
}
