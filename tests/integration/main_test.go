//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// suite is what every test of the run shares: the prepared cache, the
// initramfs with a freshly built agent, the server binary and the patched
// QEMU (built on first use).
var suite harness.Suite

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "integration tests", 40*time.Minute, &suite))
}

// netns creates a namespace named after the test with tap0 at 10.0.2.2/24.
func netns(t *testing.T, mtu int) *harness.NetNS {
	t.Helper()
	name := fmt.Sprintf("evfu-%d", os.Getpid()%100000)
	ns, err := harness.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("removing netns: %v", err)
		}
	})
	if err := ns.AddTAP("tap0", hostIP+"/24", mtu); err != nil {
		t.Fatal(err)
	}
	return ns
}

const (
	hostIP  = "10.0.2.2"
	guestIP = "10.0.2.15"
)

// startVM boots a guest and arranges for it to be stopped, dumping its
// console and QEMU's stderr if the test failed.
func startVM(t *testing.T, ctx context.Context, cfg harness.VMConfig) *harness.VM {
	t.Helper()
	cfg.Cache = suite.Cache
	cfg.Initramfs = suite.Initramfs
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(harness.TestDir(t), "vm")
	}
	start := time.Now()
	vm, err := harness.StartVM(ctx, cfg)
	if err != nil {
		t.Fatalf("starting the guest: %v", err)
	}
	t.Logf("guest ready in %v", time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("failure dump:\n%s", vm.Dump())
		}
		vm.Stop()
	})
	return vm
}
