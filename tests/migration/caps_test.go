//go:build integration

package migration

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// TestMigrateCapsLayout: the capability layout is part of the model, since
// QEMU compares the read-only config bytes it migrates with the
// destination device's. A source started as version 2 (caps-82574l=false:
// MSI-X first) is refused by a destination server started with the
// defaults (version 3, the 82574L's list) before anything starts, the
// refusal naming caps-82574l; a destination started with the source's
// configuration takes it, with traffic running, and the guest sees the
// same list after the migration as before.
func TestMigrateCapsLayout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{serverArgs: []string{"--version", "2"}})
	first := []harness.PCICap{{Off: 0xa0, ID: 0x11}, {Off: 0xc8, ID: 0x01}, {Off: 0xd0, ID: 0x05}, {Off: 0xe0, ID: 0x10}}
	r.checkCapChain(first)

	dst := r.dest([]string{})
	res := r.migrate(dst, "--dst-control", dst.srv.Control)
	if res.code != 1 || !strings.Contains(res.out, "source runs caps-82574l=false, destination caps-82574l=true") {
		t.Fatalf("migrate to a server of the 82574L's layout: exit %d, want 1 naming caps-82574l:\n%s", res.code, res.out)
	}
	if strings.Contains(res.out, "migrate: started") {
		t.Errorf("the migration started before the refusal:\n%s", res.out)
	}
	t.Logf("refused: %s", strings.TrimSpace(res.out))
	if st, err := status(ctx, r.cur.vm); err != nil || st != "running" {
		t.Fatalf("the source QEMU is %q (%v), want running", st, err)
	}
	dst.vm.Kill()
	dst.srv.Kill()

	dst = r.dest(nil)
	tcp, udp := r.startFlows()
	res = r.mustMigrate(dst)
	if res.summary.DeviceBytes == 0 {
		t.Error("no device state moved")
	}
	r.finishFlows("first layout", tcp, udp, 4*time.Second)
	r.checkDevice()
	r.checkDriver()
	r.checkCapChain(first)
}

// checkCapChain reads the NIC's config space in the current side's guest
// and compares its standard capability chain with want.
func (r *rig) checkCapChain(want []harness.PCICap) {
	r.t.Helper()
	dev := strings.TrimSpace(r.sh(`for d in /sys/bus/pci/devices/*; do [ "$(cat $d/device)" = 0x10d3 ] && echo $d; done; true`))
	if dev == "" || strings.Contains(dev, "\n") {
		r.t.Fatalf("the NIC in the guest on %s: %q", r.cur.name, dev)
	}
	rp, err := r.cur.vm.Agent.Call(r.ctx, 10*time.Second, "read", dev+"/config")
	if err != nil {
		r.t.Fatal(err)
	}
	s, _ := rp.Data["bytes"].(string)
	cfg, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		r.t.Fatalf("config space from the agent: %v", err)
	}
	list, err := harness.PCICapList(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if fmt.Sprint(list) != fmt.Sprint(want) {
		r.t.Errorf("guest on %s: capability chain %v, want %v", r.cur.name, list, want)
	} else {
		r.t.Logf("guest on %s: capability chain %v", r.cur.name, list)
	}
}
