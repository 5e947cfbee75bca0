//go:build integration

package migration

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// Shared by every test of the run: the stock QEMU's prepared root, the
// patched QEMU, the initramfs with a freshly built agent, and the server.
var (
	repo      string
	cache     *harness.Cache
	initramfs string
	serverBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "migration tests need root (network namespaces, TAP, the prepared roots)")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var err error
	if repo, err = harness.RepoRoot(); err != nil {
		return fail(err)
	}
	start := time.Now()
	if cache, err = harness.Prepare(ctx, repo, os.Stderr); err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "stock QEMU %s in %s, ready in %v\n", cache.QEMUVersion, cache.Dir, time.Since(start).Round(time.Second))
	dir, err := os.MkdirTemp("", "e1000e-vfu-mig-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	if initramfs, err = cache.BuildInitramfs(ctx, repo, dir); err != nil {
		return fail(err)
	}
	if serverBin, err = harness.BuildServer(ctx, repo); err != nil {
		return fail(err)
	}
	load, err := harness.StartLoadFromEnv(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer load.Stop()
	return m.Run()
}

var (
	migOnce sync.Once
	migQEMU *harness.MigQEMU
	migErr  error
)

// patchedQEMU builds (or finds cached) the QEMU with vfio-user migration,
// once per run, when a test first needs it.
func patchedQEMU(t testing.TB) *harness.MigQEMU {
	t.Helper()
	migOnce.Do(func() {
		start := time.Now()
		migQEMU, migErr = harness.BuildMigQEMU(context.Background(), repo, os.Stderr)
		if migErr == nil {
			fmt.Fprintf(os.Stderr, "patched QEMU %s in %s, ready in %v\n", migQEMU.Version, migQEMU.Dir, time.Since(start).Round(time.Second))
		}
	})
	if migErr != nil {
		t.Fatal(migErr)
	}
	return migQEMU
}
