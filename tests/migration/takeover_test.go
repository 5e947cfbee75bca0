//go:build integration

package migration

import (
	"context"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/tests/harness"
)

// TestMigrateTakeoverRefused: a live upgrade asked for while a live
// migration is in pre-copy is refused with a clear message before
// anything moves; the successor exits 1, and the migration goes on and
// completes, the NIC working on the destination.
func TestMigrateTakeoverRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{})
	src := r.cur
	dst := r.dest(nil)
	// The limit keeps the migration in pre-copy long enough to ask.
	finish := r.slowMigration(ctx, dst, "a refused takeover")
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := src.srv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(st.Migration, "PRE_COPY") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source server never reached pre-copy (migration state %q)", st.Migration)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd := r.hosts.Host[src.host].Command(ctx, suite.ServerBin, "serve", "--takeover", src.srv.Control,
		"--netdev", "tap,ifname="+src.tap, "--mac", harness.ServerMAC)
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	if code != 1 || !strings.Contains(string(out), "a migration is under way (state PRE_COPY") {
		t.Fatalf("takeover during pre-copy: exit %d (%v), want 1 and the reason:\n%s", code, err, out)
	}
	t.Logf("takeover during pre-copy refused: %s", strings.TrimSpace(string(out)))
	panictest.CheckLog(t, "the refused successor", string(out))
	finish()
	if n := strings.Count(src.srv.Log(), "takeover refused"); n != 1 {
		t.Errorf("the source logged %d refusals, want 1", n)
	}
}
