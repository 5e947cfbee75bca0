//go:build integration

package migration

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A version-2 source (rx-filter-size 16) is refused by a destination that
// knows only version 1, before QEMU's migration starts: the orchestrator
// exits 1 naming rx-filter-size, the source runs on untouched and the
// destination QEMU still waits.
func TestMigrateRefusesV1OnlyDestination(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{})
	dst := r.dest([]string{"--version", "1"})
	v1only := filepath.Join(suite.Repo, "cmd", "e1000e-vfu", "testdata", "v1-only.json")
	res := r.migrate(dst, "--dest-describe", v1only)
	if res.code != 1 || !strings.Contains(res.out, "rx-filter-size") {
		t.Fatalf("migrate to a version-1-only destination: exit %d, want 1 naming rx-filter-size:\n%s", res.code, res.out)
	}
	if strings.Contains(res.out, "migrate: started") {
		t.Errorf("the migration started before the refusal:\n%s", res.out)
	}
	t.Logf("refused: %s", strings.TrimSpace(res.out))
	// The destination server's own configuration is refused the same way.
	res = r.migrate(dst, "--dst-control", dst.srv.Control)
	if res.code != 1 || !strings.Contains(res.out, "rx-filter-size") {
		t.Fatalf("migrate to a server started as version 1: exit %d, want 1 naming rx-filter-size:\n%s", res.code, res.out)
	}
	for _, s := range []*side{r.cur, dst} {
		st, err := status(ctx, s.vm)
		if err != nil {
			t.Fatal(err)
		}
		want := map[*side]string{r.cur: "running", dst: "inmigrate"}[s]
		if st != want {
			t.Errorf("QEMU %s is %q, want %q", s.name, st, want)
		}
	}
	var raw json.RawMessage
	if err := r.cur.vm.QMP.Execute(ctx, "query-migrate", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), `"status"`) {
		t.Errorf("the source QEMU has a migration status: %s", raw)
	}
	r.ping(3)
	r.checkDevice()
}

// A version-2-capable server started as version 1 migrates to a server
// started as version 1 (checked by the orchestrator on its control socket)
// and back, with traffic running.
func TestMigrateVersion1(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{serverArgs: []string{"--version", "1"}})
	for _, leg := range []string{"there", "back"} {
		dst := r.dest([]string{"--version", "1"})
		tcp, udp := r.startFlows()
		res := r.mustMigrate(dst, "--dst-control", dst.srv.Control)
		if !strings.Contains(res.out, "rx-filter-size=0") && !strings.Contains(res.out, "no parameters") {
			t.Errorf("%s: the orchestrator did not check a version-1 configuration:\n%s", leg, res.out)
		}
		if res.summary.DeviceBytes == 0 {
			t.Errorf("%s: no device state moved", leg)
		}
		r.finishFlows(leg, tcp, udp, 4*time.Second)
		r.checkDevice()
		r.checkDriver()
		if t.Failed() {
			t.FailNow()
		}
	}
}
