package e1000e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
)

// capEntry is one standard capability as a driver walking the list sees it.
type capEntry struct {
	off, id byte
}

// capChain walks the standard capability list of n's config space,
// bounded so that a looping list fails instead of hanging.
func capChain(t *testing.T, n *NIC) (chain []capEntry, cfg []byte) {
	t.Helper()
	cfg = make([]byte, device.ConfigSize)
	if err := n.ReadRegion(device.RegionConfig, 0, cfg); err != nil {
		t.Fatal(err)
	}
	if uint16(cfg[device.CfgStatus])&device.StatusCapList == 0 {
		t.Fatal("status has no capability list")
	}
	for p, hops := cfg[device.CfgCapPtr], 0; p != 0; p, hops = cfg[p+1], hops+1 {
		if hops == 48 {
			t.Fatalf("capability list loops: %v", chain)
		}
		chain = append(chain, capEntry{p, cfg[p]})
	}
	return chain, cfg
}

// TestCapsLayouts walks the configuration space in both layouts, with and
// without MSI-X: caps-82574l=true is the 82574L's list PM (0xC8) → MSI
// (0xD0) → PCIe (0xE0) → MSI-X (0xA0) with PM version 2 and DSI; false is
// the first layout, MSI-X first and then by offset, PM version 3. Nothing
// else differs: every other byte, and every writable bit, is the same.
func TestCapsLayouts(t *testing.T) {
	pm, msi, pcie, msix := capEntry{capPM, 0x01}, capEntry{capMSI, 0x05}, capEntry{capPCIe, 0x10}, capEntry{capMSIX, 0x11}
	for _, hide := range []bool{false, true} {
		layouts := map[bool]struct {
			chain []capEntry
			pmc   uint16
		}{
			false: {[]capEntry{msix, pm, msi, pcie}, 3},
			true:  {[]capEntry{pm, msi, pcie, msix}, 2 | 1<<5},
		}
		var cfgs [2][]byte
		var wms [2][]byte
		for i, caps := range []bool{false, true} {
			n, err := New(Config{Caps82574L: caps, HideMSIX: hide})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			chain, cfg := capChain(t, n)
			want := layouts[caps].chain
			if hide {
				want = slicesWithout(want, msix)
			}
			if fmt.Sprint(chain) != fmt.Sprint(want) {
				t.Errorf("caps-82574l=%v hide-msix=%v: chain %x, want %x", caps, hide, chain, want)
			}
			if pmc := uint16(cfg[capPM+2]) | uint16(cfg[capPM+3])<<8; pmc != layouts[caps].pmc {
				t.Errorf("caps-82574l=%v: PMC %#04x, want %#04x", caps, pmc, layouts[caps].pmc)
			}
			// The extended list is the same in both: AER at 0x100, then DSN.
			if h := le32(cfg[capAER:]); h&0xFFFF != 0x0001 || int(h>>20) != capDSN {
				t.Errorf("caps-82574l=%v: AER header %#x", caps, h)
			}
			if h := le32(cfg[capDSN:]); h&0xFFFF != 0x0003 || h>>20 != 0 {
				t.Errorf("caps-82574l=%v: DSN header %#x", caps, h)
			}
			wm, _ := n.pci.fn.Config.Masks(0, device.ConfigSize)
			cfgs[i], wms[i] = cfg, wm
		}
		if !bytes.Equal(wms[0], wms[1]) {
			t.Errorf("hide-msix=%v: the layouts have different writable bits", hide)
		}
		// Blank what may differ: the list pointers and PMC.
		for _, cfg := range cfgs {
			cfg[device.CfgCapPtr] = 0
			for _, c := range []capEntry{pm, msi, pcie, msix} {
				cfg[c.off+1] = 0
			}
			cfg[capPM+2], cfg[capPM+3] = 0, 0
		}
		if !bytes.Equal(cfgs[0], cfgs[1]) {
			t.Errorf("hide-msix=%v: the layouts differ beyond the list pointers and PMC", hide)
		}
	}
}

func slicesWithout(s []capEntry, drop capEntry) []capEntry {
	var out []capEntry
	for _, e := range s {
		if e != drop {
			out = append(out, e)
		}
	}
	return out
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// TestCaps82574LAfterReset: a function-level reset keeps the layout.
func TestCaps82574LAfterReset(t *testing.T) {
	n, err := New(Config{Caps82574L: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	before, _ := capChain(t, n)
	stCfgWrite(t, n, capPM+4, 0x03) // D3hot
	if err := n.Reset(); err != nil {
		t.Fatal(err)
	}
	after, cfg := capChain(t, n)
	if fmt.Sprint(before) != fmt.Sprint(after) || cfg[capPM+2] != 0x22 || cfg[capPM+4]&3 != 0 {
		t.Errorf("after reset: chain %x (was %x), PMC %#x, PMCSR %#x", after, before, cfg[capPM+2], cfg[capPM+4])
	}
}

// TestCaps82574LIsPartOfTheState: the parameter travels in the stream's
// header and config section. A state of one layout loads only into a NIC
// of the same layout; the refusal names caps-82574l, before anything is
// applied. The version-2 sample stream, the old layout, is refused by a
// NIC with the new one, and saved by the old layout it has no trace of
// the parameter.
func TestCaps82574LIsPartOfTheState(t *testing.T) {
	on := func() *NIC { return newStateNICConfig(t, Config{RXFilterSize: -1, Caps82574L: true}) }
	src := on()
	// The guest's configuration, as a driver leaves it: memory decoding,
	// bus master off, MSI enabled with an address, D0.
	stCfgWrite(t, src, device.CfgCommand, 0x02, 0x00)
	stCfgWrite(t, src, capMSI+4, 0x00, 0x10, 0xe0, 0xfe)
	stCfgWrite(t, src, capMSI+2, 0x01)
	b, err := migration.Save(nil, src, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := migration.ParseHeader(b, migration.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(h.Params) != fmt.Sprint([]migration.Param{{Name: "caps-82574l", Value: "true"}, {Name: "rx-filter-size", Value: "16"}}) {
		t.Errorf("the stream's header lists %v", h.Params)
	}
	dst := on()
	if err := migration.Load(b, dst, migration.Limits{}, nil); err != nil {
		t.Fatalf("caps-82574l state into a caps-82574l NIC: %v", err)
	}
	got, wantCfg := make([]byte, device.ConfigSize), make([]byte, device.ConfigSize)
	_ = dst.ReadRegion(device.RegionConfig, 0, got)
	_ = src.ReadRegion(device.RegionConfig, 0, wantCfg)
	if !bytes.Equal(got, wantCfg) {
		t.Error("the destination's config space differs from the source's")
	}
	if again, err := migration.Save(nil, dst, migration.Limits{}); err != nil || !bytes.Equal(again, b) {
		t.Errorf("saved again: %d bytes (was %d), %v", len(again), len(b), err)
	}

	old := newStateNIC(t, -1)
	before := make([]byte, device.ConfigSize)
	_ = old.ReadRegion(device.RegionConfig, 0, before)
	err = migration.Load(b, old, migration.Limits{}, nil)
	if err == nil || !strings.Contains(err.Error(), "caps-82574l=true, this device caps-82574l=false") {
		t.Errorf("caps-82574l state into a NIC of the first layout: %v, want a refusal naming caps-82574l", err)
	}
	after := make([]byte, device.ConfigSize)
	_ = old.ReadRegion(device.RegionConfig, 0, after)
	if !bytes.Equal(before, after) {
		t.Error("a refused load changed the config space")
	}

	v2, err := os.ReadFile(filepath.Join("testdata", "state-e1000e-version2.bin"))
	if err != nil {
		t.Fatal(err)
	}
	err = migration.Load(v2, on(), migration.Limits{}, nil)
	if err == nil || !strings.Contains(err.Error(), "caps-82574l=false, this device caps-82574l=true") {
		t.Errorf("version-2 sample into a caps-82574l NIC: %v, want a refusal naming caps-82574l", err)
	}
	off, err := migration.Save(nil, newStateNIC(t, -1), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(off, []byte("caps-82574l")) {
		t.Error("a stream of the first layout names caps-82574l")
	}
}

// TestCaps82574LConfigSectionChecked: a stream whose header and config
// section disagree about the layout is refused.
func TestCaps82574LConfigSectionChecked(t *testing.T) {
	n := newStateNICConfig(t, Config{RXFilterSize: -1, Caps82574L: true})
	l := &nicLoader{n: n, cfg: configState{RXFilterSize: numRA, MAC: n.perm[:]}}
	if err := l.Validate(); err == nil || !strings.Contains(err.Error(), "caps-82574l false, this NIC true") {
		t.Errorf("config section without caps-82574l into a caps-82574l NIC: %v", err)
	}
}
