//go:build integration

package migration

import (
	"fmt"
	"time"
)

// qmpResult is what query-migrate said of a completed migration.
type qmpResult struct {
	Total, Downtime time.Duration
	RAMBytes        uint64
	DeviceBytes     uint64 // VFIO device state (0 for built-in devices)
}

// migrateQMP migrates the current side to dst over QMP directly, without
// the orchestrator (which needs our server's control socket): the
// benchmark drives QEMU's built-in e1000e and our NIC the same way.
func (r *rig) migrateQMP(dst *side) qmpResult {
	r.t.Helper()
	uri := r.uri(dst)
	if err := dst.vm.QMP.Execute(r.ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		r.t.Fatalf("destination: %v", err)
	}
	if err := r.cur.vm.QMP.Execute(r.ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		r.t.Fatalf("source: %v", err)
	}
	deadline := time.Now().Add(4 * time.Minute)
	var ms struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
		TotalTime int64  `json:"total-time"`
		Downtime  int64  `json:"downtime"`
		RAM       struct {
			Transferred uint64 `json:"transferred"`
		} `json:"ram"`
		VFIO struct {
			Transferred uint64 `json:"transferred"`
		} `json:"vfio"`
	}
	for {
		if err := r.cur.vm.QMP.Execute(r.ctx, "query-migrate", nil, &ms); err != nil {
			r.t.Fatal(err)
		}
		if ms.Status == "completed" {
			break
		}
		if ms.Status == "failed" || ms.Status == "cancelled" || time.Now().After(deadline) {
			r.t.Fatalf("migration %s→%s: %s %s", r.cur.name, dst.name, ms.Status, ms.ErrorDesc)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.waitStatus(dst, "running", 30*time.Second); err != nil {
		r.t.Fatal(err)
	}
	r.adopt(dst)
	return qmpResult{
		Total:       time.Duration(ms.TotalTime) * time.Millisecond,
		Downtime:    time.Duration(ms.Downtime) * time.Millisecond,
		RAMBytes:    ms.RAM.Transferred,
		DeviceBytes: ms.VFIO.Transferred,
	}
}

// waitStatus waits until a side's QEMU is in state want.
func (r *rig) waitStatus(s *side, want string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st, err := status(r.ctx, s.vm)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("QEMU %s is %q, not %q, after %v", s.name, st, want, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
