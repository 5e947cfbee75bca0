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

// Shared by every test of the run: the prepared cache, the initramfs with a
// freshly built agent, and the server binary.
var (
	repo      string
	cache     *harness.Cache
	initramfs string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (network namespaces, TAP, the prepared root)")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	var err error
	if repo, err = harness.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	if cache, err = harness.Prepare(ctx, repo, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cache %s ready in %v (%s, kernel %s)\n", cache.Dir, time.Since(start).Round(time.Second), cache.QEMUVersion, cache.KernelRelease)
	dir, err := os.MkdirTemp("", "e1000e-vfu-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if initramfs, err = cache.BuildInitramfs(ctx, repo, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	load, err := harness.StartLoadFromEnv(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer load.Stop()
	return m.Run()
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
	cfg.Cache = cache
	cfg.Initramfs = initramfs
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
