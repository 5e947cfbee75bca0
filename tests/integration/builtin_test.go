//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// TestBuiltinPing proves the harness with QEMU's own e1000e: the guest
// boots, the driver binds, and the guest pings the host side of a TAP in a
// namespace the test created.
func TestBuiltinPing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := netns(t, 0)
	vm := startVM(t, ctx, harness.VMConfig{
		NetNS: ns,
		NIC:   harness.NIC{Kind: harness.BuiltinE1000E, Netdev: "tap,id=n0,ifname=tap0,script=no,downscript=no"},
	})
	g := guest{t: t, ctx: ctx, vm: vm}
	g.upEth0(guestIP + "/24")
	out := g.sh("ping -c 3 -W 5 " + hostIP)
	if !strings.Contains(out, "3 packets received") {
		t.Fatalf("ping: %s", out)
	}
}
