package harness

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Suite is what every test of one package's run shares: the prepared cache
// (stock QEMU, kernel), an initramfs with a freshly built agent, the server
// binary, and, built on first use, the patched QEMU.
type Suite struct {
	Repo      string
	Cache     *Cache
	Initramfs string
	ServerBin string

	migOnce sync.Once
	mig     *MigQEMU
	migErr  error
}

// RunSuite prepares the suite, runs the package's tests (m) with CPU hogs
// when E1000E_VFU_LOAD asks for them, cleans up and returns the exit code:
// a TestMain is `os.Exit(harness.RunSuite(m, "migration tests", 60*time.Minute, &suite))`.
// what names the tests in the message when not run as root.
func RunSuite(m *testing.M, what string, timeout time.Duration, s *Suite) int {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s need root (network namespaces, TAP, the prepared roots)\n", what)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var err error
	if s.Repo, err = RepoRoot(); err != nil {
		return fail(err)
	}
	start := time.Now()
	if s.Cache, err = Prepare(ctx, s.Repo, os.Stderr); err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "cache %s ready in %v (%s, kernel %s)\n", s.Cache.Dir, time.Since(start).Round(time.Second), s.Cache.QEMUVersion, s.Cache.KernelRelease)
	dir, err := os.MkdirTemp("", "e1000e-vfu-tests-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	if s.Initramfs, err = s.Cache.BuildInitramfs(ctx, s.Repo, dir); err != nil {
		return fail(err)
	}
	if s.ServerBin, err = BuildServer(ctx, s.Repo); err != nil {
		return fail(err)
	}
	load, err := StartLoadFromEnv(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		return fail(err)
	}
	defer load.Stop()
	return m.Run()
}

// MigQEMU builds (or finds cached) the QEMU with the project's patches,
// once per run, when a test first needs it.
func (s *Suite) MigQEMU(t testing.TB) *MigQEMU {
	t.Helper()
	s.migOnce.Do(func() {
		start := time.Now()
		s.mig, s.migErr = BuildMigQEMU(context.Background(), s.Repo, os.Stderr)
		if s.migErr == nil {
			fmt.Fprintf(os.Stderr, "patched QEMU %s in %s, ready in %v\n", s.mig.Version, s.mig.Dir, time.Since(start).Round(time.Second))
		}
	})
	if s.migErr != nil {
		t.Fatal(s.migErr)
	}
	return s.mig
}
