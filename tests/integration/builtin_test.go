//go:build integration

package integration

import (
	"context"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// These scenarios run QEMU's own in-process e1000e. They prove the harness
// (and the peers, relay and checks it uses) independently of our server, and
// give the reference the vfio-user scenarios are compared with.

// TestBuiltinPing: the guest boots, the driver binds, and the guest pings
// the host side of a TAP in a namespace the test created.
func TestBuiltinPing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.BuiltinE1000E, rigOpts{})
	r.ping(3, "")
}

// TestBuiltinTCP: 64 MiB each way over TAP, checksummed end to end.
func TestBuiltinTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.BuiltinE1000E, rigOpts{})
	r.tcpBothWays(64 << 20)
	r.udp(100, 1400)
}

// TestBuiltinStream: the same guest over QEMU's stream socket backend,
// joined to the namespace by our relay.
func TestBuiltinStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.BuiltinE1000E, rigOpts{backend: backendStream})
	r.ping(3, "")
	r.tcpBothWays(8 << 20)
}
