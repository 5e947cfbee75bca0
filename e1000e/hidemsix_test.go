package e1000e

import (
	"bytes"
	"strings"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
)

// TestHideMSIXLeavesTheCapabilityOut: with hide-msix the capability list is
// PM, MSI, PCIe and no MSI-X, the function offers no MSI-X vectors, and a
// write to MSI-X's enable bit's place changes nothing.
func TestHideMSIXLeavesTheCapabilityOut(t *testing.T) {
	for _, hide := range []bool{false, true} {
		n, err := New(Config{HideMSIX: hide})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		var cfg [256]byte
		if err := n.ReadRegion(device.RegionConfig, 0, cfg[:]); err != nil {
			t.Fatal(err)
		}
		var ids []byte
		for p, hops := cfg[device.CfgCapPtr], 0; p != 0 && hops < 48; p, hops = cfg[p+1], hops+1 {
			ids = append(ids, cfg[p])
		}
		hasMSIX := bytes.IndexByte(ids, 0x11) >= 0
		if hasMSIX == hide {
			t.Errorf("hide-msix=%v: capability IDs %x", hide, ids)
		}
		if bytes.IndexByte(ids, 0x05) < 0 {
			t.Errorf("hide-msix=%v: no MSI capability in %x", hide, ids)
		}
		var msix uint32
		if irqs := n.Info().IRQs; len(irqs) > int(device.IRQMSIX) {
			msix = irqs[device.IRQMSIX].Count
		}
		if want := map[bool]uint32{false: numMSIXVecs, true: 0}[hide]; msix != want {
			t.Errorf("hide-msix=%v: %d MSI-X vectors offered, want %d", hide, msix, want)
		}
	}
}

// TestHideMSIXIsPartOfTheState: the parameter travels in the stream's
// header and config section; a NIC with MSI-X refuses the state of one
// without, and the other way round, and a state with MSI-X entries is
// refused by a NIC that has none.
func TestHideMSIXIsPartOfTheState(t *testing.T) {
	hidden := func() *NIC {
		n, err := New(Config{RXFilterSize: -1, HideMSIX: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		n.Quiesce()
		return n
	}
	b, err := migration.Save(nil, hidden(), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := migration.Load(b, hidden(), migration.Limits{}, nil); err != nil {
		t.Fatalf("hide-msix state into a hide-msix NIC: %v", err)
	}
	if err := migration.Load(b, newStateNIC(t, -1), migration.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "hide-msix") {
		t.Errorf("hide-msix state into a NIC with MSI-X: %v, want a refusal naming hide-msix", err)
	}
	withMSIX, err := migration.Save(nil, busyNIC(t, -1), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := migration.Load(withMSIX, hidden(), migration.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "hide-msix") {
		t.Errorf("state with MSI-X into a hide-msix NIC: %v, want a refusal naming hide-msix", err)
	}
}
