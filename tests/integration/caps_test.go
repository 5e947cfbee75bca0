//go:build integration

package integration

import (
	"context"
	"fmt"
	"net"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// lspciCap is one capability as `lspci -vvv` prints it: its header line
// and, optionally, a line of its body.
type lspciCap struct {
	head string // a regular expression for the header, whole
	body string // a substring one body line must contain; "" for none
}

// caps82574L is the capability list of the 82574L as `lspci -vvv -nn`
// prints it for the part (its datasheet's configuration space: PM at C8h
// pointing to MSI at D0h, to PCIe at E0h, to MSI-X at A0h, the last; AER
// at 100h, DSN at 140h), with what QEMU changes for a guest allowed:
//   - the enable bits, which the driver sets (MSI-X or MSI, by IntMode);
//   - the PCIe device type: QEMU's vfio-pci shows an endpoint on the root
//     bus of a q35 machine as a Root Complex Integrated Endpoint;
//   - the interrupt message number's wording, which differs between
//     pciutils versions.
//
// The part's PMC also announces PME from D0, D3hot and D3cold; this model
// has no wake-up and announces none, so the PM flags are compared only up
// to D2.
func caps82574L(dsn string) []lspciCap {
	return []lspciCap{
		{`\[c8\] Power Management version 2`, "PMEClk- DSI+ D1- D2-"},
		{`\[d0\] MSI: Enable[+-] Count=1/1 Maskable- 64bit\+`, ""},
		{`\[e0\] Express \(v1\) (Endpoint|Root Complex Integrated Endpoint), (MSI|IntMsgNum) 0+`, ""},
		{`\[a0\] MSI-X: Enable[+-] Count=5 Masked-`, "Vector table: BAR=3 offset=00000000"},
		{`\[100 v1\] Advanced Error Reporting`, ""},
		{`\[140 v1\] Device Serial Number ` + dsn, ""},
	}
}

// capsFirstLayout is the list of caps-82574l=false, the layout of model
// versions 1 and 2: MSI-X first, then by offset, PM version 3 without DSI.
func capsFirstLayout(dsn string) []lspciCap {
	c := caps82574L(dsn)
	pm := lspciCap{`\[c8\] Power Management version 3`, "PMEClk- DSI- D1- D2-"}
	return []lspciCap{c[3], pm, c[1], c[2], c[4], c[5]}
}

// dsnOf is the device serial number the NIC derives from its MAC, as
// lspci prints it: the MAC's first three bytes, ff-ff, the last three.
func dsnOf(t *testing.T, mac string) string {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%02x-%02x-%02x-ff-ff-%02x-%02x-%02x", hw[0], hw[1], hw[2], hw[3], hw[4], hw[5])
}

// TestVFUCapsLayout: the guest's `lspci -vvv -nn` of our NIC, against the
// 82574L's list. By default (model version 3, caps-82574l=true) the list
// is the part's, PM → MSI → PCIe → MSI-X, PM version 2 with DSI; with
// caps-82574l=false it is the first layout, MSI-X first and PM version 3.
// The driver binds and the NIC carries traffic in both.
//
// Busybox's lspci has no -vvv, so the guest reads its config space (as
// lspci does, from sysfs) and the host's lspci decodes those bytes
// (lspci -F).
func TestVFUCapsLayout(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(string) []lspciCap
	}{
		{"default", nil, caps82574L},
		{"caps-82574l=false", []string{"--param", "caps-82574l=false"}, capsFirstLayout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r := newRig(t, ctx, harness.VFIOUser, rigOpts{serverArgs: tc.args})
			dev := r.g.findPCI("8086", "10d3")
			rp, err := r.vm.Agent.Call(ctx, 10*time.Second, "read", dev+"/config")
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := decodeBytes(rp.Data["bytes"])
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg) < 0x148 {
				t.Fatalf("the guest reads %d bytes of config space, want the extended space", len(cfg))
			}
			out, err := harness.Lspci(ctx, r.dir, path.Base(dev), cfg, "-vvv", "-nn")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("lspci -vvv -nn of the guest's config space:\n%s", out)
			if !strings.Contains(out, "Ethernet controller [0200]: Intel Corporation 82574L Gigabit Network Connection [8086:10d3]") {
				t.Errorf("lspci does not name an 82574L [8086:10d3]")
			}
			heads, bodies := harness.LspciCaps(out)
			want := tc.want(dsnOf(t, harness.ServerMAC))
			if len(heads) != len(want) {
				t.Fatalf("%d capabilities %q, want %d", len(heads), heads, len(want))
			}
			for i, w := range want {
				if !regexp.MustCompile(`^` + w.head + `$`).MatchString(heads[i]) {
					t.Errorf("capability %d: %q, want %q", i, heads[i], w.head)
				}
				if w.body != "" && !strings.Contains(strings.Join(bodies[i], "\n"), w.body) {
					t.Errorf("capability %d (%s): no line with %q in %q", i, heads[i], w.body, bodies[i])
				}
			}
			// The driver works with the layout.
			if drv := r.g.sh("basename $(readlink " + dev + "/driver)"); strings.TrimSpace(drv) != "e1000e" {
				t.Errorf("driver of %s: %q, want e1000e", dev, drv)
			}
			r.ping(3, "")
			if w := driverWarnings(r.g); len(w) > 0 {
				t.Errorf("driver warnings:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}
