package device

import (
	"testing"
)

// walk follows the standard and extended lists as a driver does, bounded
// by the number of dwords in the space.
func walk(t *testing.T, cs *ConfigSpace) (std, ext [][2]int) {
	t.Helper()
	off := 0
	if rd16(t, cs, CfgStatus)&StatusCapList != 0 {
		off = int(cs.Uint8(CfgCapPtr))
	}
	for n := 0; off != 0 && n < 48; n++ {
		std = append(std, [2]int{int(cs.Uint8(off)), off})
		off = int(cs.Uint8(off + 1))
	}
	if off != 0 {
		t.Fatal("standard list does not end")
	}
	off = extCapBase
	for n := 0; off != 0 && n < 960; n++ {
		h := rd32(t, cs, off)
		if h == 0 {
			break
		}
		if id := int(h & 0xFFFF); id != 0 {
			ext = append(ext, [2]int{id, off})
		}
		off = int(h >> 20)
	}
	return std, ext
}

func TestCapabilityList(t *testing.T) {
	cs := nicLayout(t)
	std, ext := walk(t, cs)
	// The order of the Add calls, as on the 82574L, not of the offsets.
	wantStd := [][2]int{{CapIDPM, 0xC8}, {CapIDMSI, 0xD0}, {CapIDPCIe, 0xE0}, {CapIDMSIX, 0xA0}}
	wantExt := [][2]int{{ExtCapAER, 0x100}, {ExtCapDSN, 0x140}}
	if len(std) != len(wantStd) || len(ext) != len(wantExt) {
		t.Fatalf("lists %v %v, want %v %v", std, ext, wantStd, wantExt)
	}
	for i := range wantStd {
		if std[i] != wantStd[i] {
			t.Errorf("std[%d] = %v, want %v", i, std[i], wantStd[i])
		}
	}
	for i := range wantExt {
		if ext[i] != wantExt[i] {
			t.Errorf("ext[%d] = %v, want %v", i, ext[i], wantExt[i])
		}
	}
	if v := rd32(t, cs, 0x100) >> 16 & 0xF; v != 1 {
		t.Errorf("AER version %d", v)
	}
	if lo, hi := rd32(t, cs, 0x144), rd32(t, cs, 0x148); lo != 0xff005452 || hi != 0x563412ff {
		t.Errorf("DSN %#x %#x", hi, lo)
	}
	if got := rd16(t, cs, 0xC8+PMCap); got != 2|pmDSI {
		t.Errorf("PMC %#x, want version 2 with DSI", got)
	}
	if got := rd16(t, cs, 0xA0+MSIXControl); got != 4 {
		t.Errorf("MSI-X table size field %d, want 4", got)
	}
	if got, want := rd32(t, cs, 0xA0+MSIXPBA), uint32(0x2003); got != want {
		t.Errorf("MSI-X PBA %#x, want %#x", got, want)
	}
	if got := rd16(t, cs, 0xD0+MSIControl); got != 0x80 {
		t.Errorf("MSI control %#x, want 64-bit, 1 vector", got)
	}
	if got := rd16(t, cs, 0xE0+PCIeFlags); got != 1 {
		t.Errorf("PCIe flags %#x, want v1 endpoint", got)
	}
}

// Writing all ones over every capability leaves every bit outside the
// write masks as it was (write-1-to-clear bits may only clear), and the
// list intact.
func TestCapabilityReadOnlyBits(t *testing.T) {
	cs := nicLayout(t)
	// Set every W1C bit so clearing is visible.
	cs.mu.Lock()
	for i := range cs.data {
		cs.data[i] |= cs.w1c[i]
	}
	cs.mu.Unlock()
	for _, cp := range cs.Capabilities() {
		before := make([]byte, cp.Size)
		cs.Read(uint64(cp.Offset), before)
		ones := make([]byte, cp.Size)
		for i := range ones {
			ones[i] = 0xFF
		}
		if err := cs.Write(uint64(cp.Offset), ones); err != nil {
			t.Fatal(err)
		}
		after := make([]byte, cp.Size)
		cs.Read(uint64(cp.Offset), after)
		wm, w1c := cs.Masks(cp.Offset, cp.Size)
		for i := range after {
			ro := ^(wm[i] | w1c[i])
			if (after[i]^before[i])&ro != 0 {
				t.Errorf("cap %#x: byte %#x changed %#02x -> %#02x (read-only %#02x)", cp.ID, cp.Offset+i, before[i], after[i], ro)
			}
			if after[i]&w1c[i] != 0 {
				t.Errorf("cap %#x: byte %#x W1C bits %#02x not cleared", cp.ID, cp.Offset+i, after[i]&w1c[i])
			}
		}
	}
	std, ext := walk(t, cs)
	if len(std) != 4 || len(ext) != 2 {
		t.Errorf("list damaged: %v %v", std, ext)
	}
	// What became of the writable fields.
	if got := rd16(t, cs, 0xA0+MSIXControl); got != 0xC004 {
		t.Errorf("MSI-X control %#x, want enable|mask|4", got)
	}
	if got := rd16(t, cs, 0xD0+MSIControl); got != 0x81 {
		t.Errorf("MSI control %#x: MME must clamp to 1 vector", got)
	}
	if got := rd16(t, cs, 0xC8+PMCtrl); got != 0x000B {
		t.Errorf("PMCSR %#x, want D3hot|NoSoftReset", got)
	}
	if got := rd32(t, cs, 0xD0+MSIAddrLo); got != 0xFFFFFFFC {
		t.Errorf("MSI address %#x", got)
	}
	if got := rd16(t, cs, 0xE0+PCIeDevCtl); got != pcieDevCtlW {
		t.Errorf("device control %#x, want %#x", got, pcieDevCtlW)
	}
}

func TestPMStates(t *testing.T) {
	cs := nicLayout(t)
	ctl := 0xC8 + PMCtrl
	for _, c := range []struct{ write, want uint16 }{
		{3, 3}, {1, 3}, {2, 3}, {0, 0}, {2, 0}, {3, 3},
	} {
		wr16(t, cs, ctl, c.write)
		if got := rd16(t, cs, ctl) & PMStateMask; got != c.want {
			t.Errorf("write D%d: state D%d, want D%d", c.write, got, c.want)
		}
	}
	if cs.PowerState() != 3 {
		t.Error("PowerState")
	}
	if rd16(t, cs, ctl)&pmNoSoftReset == 0 {
		t.Error("No_Soft_Reset lost")
	}
}

func TestMSIVariants(t *testing.T) {
	cs := NewConfigSpace(Identity{})
	if err := cs.AddMSI(0x50, MSIOptions{Vectors: 4, PerVectorMask: true}); err != nil {
		t.Fatal(err)
	}
	// 32-bit with masking: data at 8, mask at 0xC, pending at 0x10.
	if got := cs.Capabilities()[0].Size; got != 0x14 {
		t.Errorf("size %#x", got)
	}
	wr16(t, cs, 0x50+MSIControl, 0x7<<4|1)
	if got := rd16(t, cs, 0x50+MSIControl); got != 0x2<<4|0x2<<1|1|msiFlagMaskable {
		t.Errorf("control %#x", got)
	}
	wr32(t, cs, 0x50+0xC, 0xFFFFFFFF)
	if got := cs.MSIMaskBits(); got != 0xF {
		t.Errorf("mask bits %#x", got)
	}
	wr32(t, cs, 0x50+0x10, 0xFFFFFFFF)
	if got := rd32(t, cs, 0x50+0x10); got != 0 {
		t.Errorf("pending bits writable: %#x", got)
	}
	for _, o := range []MSIOptions{{Vectors: 0}, {Vectors: 3}, {Vectors: 64}} {
		if err := NewConfigSpace(Identity{}).AddMSI(0x50, o); err == nil {
			t.Errorf("AddMSI(%+v) accepted", o)
		}
	}
}

func TestPCIeV2(t *testing.T) {
	cs := NewConfigSpace(Identity{})
	if err := cs.AddPCIe(0x40, PCIeOptions{Version: 2, LinkCap: 2 | 4<<4}); err != nil {
		t.Fatal(err)
	}
	if got := rd16(t, cs, 0x40+PCIeLinkSta); got != 2|4<<4 {
		t.Errorf("link status %#x", got)
	}
	if got := rd32(t, cs, 0x40+PCIeLinkCap2); got != 0x6 {
		t.Errorf("link cap 2 %#x", got)
	}
	wr16(t, cs, 0x40+PCIeDevCtl2, 0xFFFF)
	if got := rd16(t, cs, 0x40+PCIeDevCtl2); got != 0x10 {
		t.Errorf("device control 2 %#x", got)
	}
	if err := cs.AddPCIe(0x80, PCIeOptions{Version: 2}); err == nil {
		t.Error("second PCIe capability accepted")
	}
	if err := NewConfigSpace(Identity{}).AddPCIe(0xE0, PCIeOptions{Version: 2}); err == nil {
		t.Error("v2 at 0xE0 runs past 0x100 but was accepted")
	}
	if err := NewConfigSpace(Identity{}).AddPCIe(0x40, PCIeOptions{Version: 3}); err == nil {
		t.Error("version 3 accepted")
	}
}

// TestCapabilityListFollowsAddOrder: the standard chain is the order of
// the Add calls whatever the offsets, so one set of capabilities can be
// linked ascending or in a part's own order; extended capabilities always
// ascend from 0x100. The capability bodies do not depend on the order.
func TestCapabilityListFollowsAddOrder(t *testing.T) {
	build := func(order []int) *ConfigSpace {
		cs := NewConfigSpace(Identity{})
		if err := cs.AddBAR(3, BAR{Kind: BARMem32, Size: 16 << 10}); err != nil {
			t.Fatal(err)
		}
		adds := map[int]func() error{
			CapIDPM:   func() error { return cs.AddPM(0xC8, PMOptions{Version: 3}) },
			CapIDMSI:  func() error { return cs.AddMSI(0xD0, MSIOptions{Vectors: 1, Addr64: true}) },
			CapIDPCIe: func() error { return cs.AddPCIe(0xE0, PCIeOptions{Version: 1}) },
			CapIDMSIX: func() error { return cs.AddMSIX(0xA0, 5, 3, 0, 3, 0x2000) },
		}
		// The extended ones are added out of order on purpose.
		if err := cs.AddDSN(0x140, 1); err != nil {
			t.Fatal(err)
		}
		for _, id := range order {
			if err := adds[id](); err != nil {
				t.Fatal(err)
			}
		}
		if err := cs.AddAER(0x100); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	offs := map[int]int{CapIDPM: 0xC8, CapIDMSI: 0xD0, CapIDPCIe: 0xE0, CapIDMSIX: 0xA0}
	var bodies [][]byte
	for _, order := range [][]int{
		{CapIDMSIX, CapIDPM, CapIDMSI, CapIDPCIe},
		{CapIDPM, CapIDMSI, CapIDPCIe, CapIDMSIX},
		{CapIDPCIe, CapIDMSIX, CapIDMSI, CapIDPM},
	} {
		cs := build(order)
		std, ext := walk(t, cs)
		if len(std) != len(order) {
			t.Fatalf("order %v: chain %v", order, std)
		}
		for i, id := range order {
			if std[i] != [2]int{id, offs[id]} {
				t.Errorf("order %v: entry %d is %v, want %v", order, i, std[i], [2]int{id, offs[id]})
			}
		}
		if len(ext) != 2 || ext[0] != [2]int{ExtCapAER, 0x100} || ext[1] != [2]int{ExtCapDSN, 0x140} {
			t.Errorf("order %v: extended chain %v", order, ext)
		}
		if got := cs.Capabilities(); got[0].Offset != offs[order[0]] || got[len(got)-1].Offset != 0x140 {
			t.Errorf("order %v: Capabilities() %v", order, got)
		}
		// Everything but the list pointers is the same in every order.
		b := make([]byte, ConfigSize)
		if err := cs.Read(0, b); err != nil {
			t.Fatal(err)
		}
		b[CfgCapPtr] = 0
		for _, off := range offs {
			b[off+1] = 0
		}
		bodies = append(bodies, b)
	}
	for i := 1; i < len(bodies); i++ {
		if string(bodies[i]) != string(bodies[0]) {
			t.Errorf("order %d changes more than the list pointers", i)
		}
	}
}

func TestCapabilityPlacementErrors(t *testing.T) {
	cs := nicLayout(t)
	cases := []struct {
		name string
		err  error
	}{
		{"overlap", cs.AddPM(0xCC, PMOptions{Version: 3})},
		{"misaligned", NewConfigSpace(Identity{}).AddPM(0x42, PMOptions{Version: 3})},
		{"in header", NewConfigSpace(Identity{}).AddPM(0x3C, PMOptions{Version: 3})},
		{"past 0x100", NewConfigSpace(Identity{}).AddPM(0xFC, PMOptions{Version: 3})},
		{"PM version 0", NewConfigSpace(Identity{}).AddPM(0x40, PMOptions{})},
		{"PM version 8", NewConfigSpace(Identity{}).AddPM(0x40, PMOptions{Version: 8})},
		{"ext in legacy", NewConfigSpace(Identity{}).AddDSN(0x80, 1)},
		{"ext past end", NewConfigSpace(Identity{}).AddDSN(0xFF8, 1)},
		{"second MSI", cs.AddMSI(0x40, MSIOptions{Vectors: 1})},
		{"second MSI-X", cs.AddMSIX(0x40, 1, 3, 0x1000, 3, 0x3000)},
		{"MSI-X no BAR", NewConfigSpace(Identity{}).AddMSIX(0x40, 1, 0, 0, 0, 0x800)},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	m := NewConfigSpace(Identity{})
	if err := m.AddBAR(0, BAR{Kind: BARMem32, Size: 4096}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddBAR(1, BAR{Kind: BARIO, Size: 16}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		n, tb int
		to    uint32
		pb    int
		po    uint32
	}{
		{300, 0, 0, 0, 0x800},  // table overruns the PBA
		{8, 0, 0, 0, 4096 - 4}, // PBA beyond the BAR
		{8, 0, 4, 0, 0x800},    // misaligned table
		{8, 1, 0, 0, 0x800},    // I/O BAR
		{8, 0, 0, 7, 0x800},    // no such BAR
		{0, 0, 0, 0, 0x800},    // no vectors
		{4096, 0, 0, 0, 0x800}, // too many vectors
		{8, 0, 0x40, 0, 0x40},  // same place
	} {
		if err := m.AddMSIX(0x40, c.n, c.tb, c.to, c.pb, c.po); err == nil {
			t.Errorf("AddMSIX(%+v) accepted", c)
		}
	}
}

// Extended capabilities not starting at 0x100 still form a list a driver
// can walk: an empty header at 0x100 leads to them.
func TestExtendedListWithoutAER(t *testing.T) {
	cs := NewConfigSpace(Identity{})
	if err := cs.AddDSN(0x140, 42); err != nil {
		t.Fatal(err)
	}
	_, ext := walk(t, cs)
	if len(ext) != 1 || ext[0] != [2]int{ExtCapDSN, 0x140} {
		t.Errorf("ext list %v", ext)
	}
	if err := cs.AddAER(0x100); err != nil {
		t.Fatal(err)
	}
	_, ext = walk(t, cs)
	if len(ext) != 2 || ext[0][1] != 0x100 || ext[1][1] != 0x140 {
		t.Errorf("ext list %v", ext)
	}
}

func TestAERRegisters(t *testing.T) {
	cs := nicLayout(t)
	if got := rd32(t, cs, 0x100+AERUncorSev); got != aerUncorSevDefault {
		t.Errorf("severity %#x", got)
	}
	wr32(t, cs, 0x100+AERUncorMask, 0xFFFFFFFF)
	if got := rd32(t, cs, 0x100+AERUncorMask); got != aerUncorSupported {
		t.Errorf("uncorrectable mask %#x", got)
	}
	wr32(t, cs, 0x100+AERHeaderLog, 0xFFFFFFFF)
	if got := rd32(t, cs, 0x100+AERHeaderLog); got != 0 {
		t.Errorf("header log writable: %#x", got)
	}
	cs.Reset()
	if got := rd32(t, cs, 0x100+AERUncorMask); got != 0 {
		t.Errorf("mask after reset %#x", got)
	}
	if got := rd32(t, cs, 0x100+AERCorMask); got != aerCorMaskDef {
		t.Errorf("correctable mask after reset %#x", got)
	}
}
