//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// selfTestNames are the five tests of the e1000e driver's offline
// self-test, in the order it reports them.
var selfTestNames = []string{
	"Register test  (offline)",
	"Eeprom test    (offline)",
	"Interrupt test (offline)",
	"Loopback test  (offline)",
	"Link test   (on/offline)",
}

// TestVFUSelfTest: the driver's own offline self-test (ethtool -t eth0
// offline) passes all five tests in MSI-X, MSI and INTx modes, and the NIC
// carries traffic afterwards. The driver runs its interrupt test on INTx
// when it uses MSI-X, and on its MSI vector in MSI mode. The server runs
// the default model version, whose capability list is the 82574L's
// (caps-82574l=true), as the test checks first.
func TestVFUSelfTest(t *testing.T) {
	for _, mode := range []int{2, 1, 0} {
		t.Run(fmt.Sprintf("IntMode=%d", mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			r := newRig(t, ctx, harness.VFIOUser, rigOpts{kernelArgs: fmt.Sprintf("e1000e_opts=IntMode=%d", mode)})
			r.ping(2, "")
			checkCapChain82574L(t, r)
			rp, err := r.vm.Agent.Call(ctx, 2*time.Minute, "selftest", "eth0")
			if err != nil {
				t.Fatalf("selftest: %v\n%s", err, r.g.sh("dmesg | tail -n 30"))
			}
			names, _ := rp.Data["names"].([]any)
			results, _ := rp.Data["results"].([]any)
			if len(names) != len(selfTestNames) || len(results) != len(selfTestNames) {
				t.Fatalf("self-test reports %v %v, want five tests", rp.Data["names"], rp.Data["results"])
			}
			for i, want := range selfTestNames {
				name, _ := names[i].(string)
				res, _ := results[i].(float64)
				t.Logf("%-26s %v", name, res)
				if name != want {
					t.Errorf("test %d is %q, want %q", i, name, want)
				}
				if res != 0 {
					t.Errorf("%s fails with %v", strings.TrimSpace(name), res)
				}
			}
			if rp.Data["failed"] != false {
				t.Errorf("self-test flags FAILED: %v\n%s", rp.Data, r.g.sh("dmesg | grep -i e1000e | tail -n 20"))
			}
			// The driver reopens the interface; the link comes back and
			// the NIC carries traffic.
			if _, err := r.vm.Agent.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
				t.Fatalf("link after the self-test: %v", err)
			}
			r.ping(3, "")
			r.tcpBothWays(4 << 20)
			if w := driverWarnings(r.g); len(w) > 0 {
				t.Errorf("driver warnings:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}

// checkCapChain82574L checks that the guest's NIC chains its standard
// capabilities as the 82574L does: PM → MSI → PCIe → MSI-X.
func checkCapChain82574L(t *testing.T, r *rig) {
	t.Helper()
	dev := r.g.findPCI("8086", "10d3")
	rp, err := r.vm.Agent.Call(r.ctx, 10*time.Second, "read", dev+"/config")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeBytes(rp.Data["bytes"])
	if err != nil {
		t.Fatal(err)
	}
	list, err := harness.PCICapList(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []harness.PCICap{{Off: 0xc8, ID: 0x01}, {Off: 0xd0, ID: 0x05}, {Off: 0xe0, ID: 0x10}, {Off: 0xa0, ID: 0x11}}
	if fmt.Sprint(list) != fmt.Sprint(want) {
		t.Errorf("capability chain %v, want the 82574L's %v", list, want)
	}
}
