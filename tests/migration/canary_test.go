//go:build integration

package migration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// The stock QEMU of the prepared root (11.1.x) cannot migrate a vfio-user
// device: the migration "completes", no device state moves, the
// destination's device comes up unconfigured under a guest that still uses
// it, and the guest's traffic stops. This test asserts exactly that loss;
// the day upstream QEMU migrates vfio-user devices, it fails and says so.
func TestMigrateStockQEMULosesDevice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{stock: true})
	r.checkDevice()
	dst := r.dest(nil)
	res := r.migrate(dst, "--dst-control", dst.srv.Control)
	changed := fmt.Sprintf("stock QEMU %s now behaves differently: update this test, tests/migration/README.md and the harness's notes", suite.Cache.QEMUVersion)
	if res.code != 0 {
		t.Fatalf("%s: the migration no longer \"completes\" (exit %d):\n%s", changed, res.code, res.out)
	}
	if res.summary.DeviceBytes != 0 {
		t.Errorf("%s: %d bytes of device state moved", changed, res.summary.DeviceBytes)
	}
	r.adopt(dst)

	dev, err := harness.QueryPCIDevice(ctx, r.cur.vm.QMP, "nic0")
	if err != nil {
		t.Fatal(err)
	}
	if dev.MemoryBARsMapped() {
		t.Errorf("%s: the destination's NIC has its memory BARs mapped: %+v", changed, dev.Regions)
	}
	cmd := r.guestCommand()
	t.Logf("lost on the destination: memory BARs %+v; the guest reads command register %#04x", dev.Regions, cmd)
	out, err := r.cur.vm.Agent.Sh(ctx, time.Minute, "ping -c 3 -i 0.2 -W 2 "+hostIP)
	if err == nil && strings.Contains(out, " 0% packet loss") {
		t.Errorf("%s: the guest still reaches the host through the NIC:\n%s", changed, out)
	}
	t.Logf("lost: the guest's traffic (%s)", lastLine(strings.ReplaceAll(out, "\n\n", "\n")))
}
