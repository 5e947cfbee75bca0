package device

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"syscall"
	"testing"
)

// nicLayout builds the configuration of an 82574L-like function: the
// layout the e1000e model uses.
func nicLayout(t testing.TB) *ConfigSpace {
	t.Helper()
	cs := NewConfigSpace(Identity{
		VendorID: 0x8086, DeviceID: 0x10D3, SubsysVendor: 0x8086,
		Class: 0x020000, InterruptPin: 1,
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cs.AddBAR(0, BAR{Kind: BARMem32, Size: 128 << 10}))
	must(cs.AddBAR(1, BAR{Kind: BARMem32, Size: 128 << 10}))
	must(cs.AddBAR(2, BAR{Kind: BARIO, Size: 32}))
	must(cs.AddBAR(3, BAR{Kind: BARMem32, Size: 16 << 10}))
	must(cs.AddPM(0xC8, PMOptions{Version: 2, DSI: true}))
	must(cs.AddMSI(0xD0, MSIOptions{Vectors: 1, Addr64: true}))
	must(cs.AddPCIe(0xE0, PCIeOptions{Version: 1, DevCap: 0x8000 | 1}))
	must(cs.AddMSIX(0xA0, 5, 3, 0, 3, 0x2000))
	must(cs.AddAER(0x100))
	must(cs.AddDSN(0x140, 0x5634_12ff_ff00_5452))
	return cs
}

func rd16(t testing.TB, cs *ConfigSpace, off int) uint16 {
	t.Helper()
	var b [2]byte
	if err := cs.Read(uint64(off), b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint16(b[:])
}

func rd32(t testing.TB, cs *ConfigSpace, off int) uint32 {
	t.Helper()
	var b [4]byte
	if err := cs.Read(uint64(off), b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func wr16(t testing.TB, cs *ConfigSpace, off int, v uint16) {
	t.Helper()
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	if err := cs.Write(uint64(off), b[:]); err != nil {
		t.Fatal(err)
	}
}

func wr32(t testing.TB, cs *ConfigSpace, off int, v uint32) {
	t.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := cs.Write(uint64(off), b[:]); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderIdentity(t *testing.T) {
	cs := nicLayout(t)
	checks := []struct {
		name string
		got  uint32
		want uint32
	}{
		{"vendor", uint32(rd16(t, cs, CfgVendorID)), 0x8086},
		{"device", uint32(rd16(t, cs, CfgDeviceID)), 0x10D3},
		{"class+rev", rd32(t, cs, CfgRevision), 0x02000000},
		{"subsystem", rd32(t, cs, CfgSubsysVendor), 0x00008086},
		{"pin", uint32(cs.Uint8(CfgIntPin)), 1},
		{"header type", uint32(cs.Uint8(CfgHeaderType)), 0},
		{"status caplist", uint32(rd16(t, cs, CfgStatus) & StatusCapList), uint32(StatusCapList)},
		{"size", uint32(cs.Size()), ConfigSize},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestOutOfRange(t *testing.T) {
	cs := nicLayout(t)
	legacy := NewConfigSpace(Identity{VendorID: 1})
	cases := []struct {
		cs  *ConfigSpace
		off uint64
		n   int
	}{
		{cs, ConfigSize, 1},
		{cs, ConfigSize - 3, 4},
		{cs, 1<<64 - 1, 2},
		{cs, 1 << 63, 1},
		{legacy, ConfigSizeLegacy, 1},
		{legacy, 0xFE, 4},
	}
	for _, c := range cases {
		p := make([]byte, c.n)
		if err := c.cs.Read(c.off, p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Read(%#x, %d) = %v, want EINVAL", c.off, c.n, err)
		}
		if err := c.cs.Write(c.off, p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Write(%#x, %d) = %v, want EINVAL", c.off, c.n, err)
		}
	}
	// The last bytes and an empty access at the end are fine.
	if err := cs.Read(ConfigSize-4, make([]byte, 4)); err != nil {
		t.Error(err)
	}
	if err := cs.Read(ConfigSize, nil); err != nil {
		t.Error(err)
	}
}

func TestCommandRegister(t *testing.T) {
	cs := nicLayout(t)
	var calls [][2]uint16
	cs.SetCommandHook(func(old, new uint16) { calls = append(calls, [2]uint16{old, new}) })

	wr16(t, cs, CfgCommand, 0xFFFF)
	if got := cs.Command(); got != 0x0407 {
		t.Fatalf("command after all-ones = %#x, want 0x0407", got)
	}
	if !cs.BusMaster() || !cs.INTxDisabled() {
		t.Error("bus master and INTx disable should be set")
	}
	wr16(t, cs, CfgCommand, 0xFFFF) // no change: no call
	wr16(t, cs, CfgCommand, CmdMemory)
	want := [][2]uint16{{0, 0x0407}, {0x0407, CmdMemory}}
	if len(calls) != len(want) || calls[0] != want[0] || calls[1] != want[1] {
		t.Errorf("hook calls %v, want %v", calls, want)
	}
	// A write to the status half only does not call the hook.
	cs.Write(CfgStatus, []byte{0, 0})
	if len(calls) != 2 {
		t.Errorf("status write called the command hook")
	}
	cs.Reset()
	if len(calls) != 3 || calls[2] != [2]uint16{CmdMemory, 0} {
		t.Errorf("reset: hook calls %v", calls)
	}
}

func TestStatusW1C(t *testing.T) {
	cs := nicLayout(t)
	const parity = 1 << 15
	cs.mu.Lock()
	cs.put16(CfgStatus, cs.get16(CfgStatus)|parity|1<<13)
	cs.mu.Unlock()
	wr16(t, cs, CfgStatus, 0) // zeros clear nothing
	if rd16(t, cs, CfgStatus)&(parity|1<<13) != parity|1<<13 {
		t.Fatal("writing 0 cleared error bits")
	}
	wr16(t, cs, CfgStatus, parity|StatusCapList|StatusInterrupt)
	st := rd16(t, cs, CfgStatus)
	if st&parity != 0 || st&(1<<13) == 0 || st&StatusCapList == 0 {
		t.Errorf("status after W1C = %#x", st)
	}
	cs.SetInterruptStatus(true)
	if rd16(t, cs, CfgStatus)&StatusInterrupt == 0 {
		t.Error("interrupt status not set")
	}
	wr16(t, cs, CfgStatus, 0xFFFF)
	if rd16(t, cs, CfgStatus)&StatusInterrupt == 0 {
		t.Error("interrupt status is read-only, but a write cleared it")
	}
}

// A write of many bytes equals the same bytes written one at a time:
// straddling accesses split byte-wise.
func TestWriteSplitsBytewise(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	a, b := nicLayout(t), nicLayout(t)
	for i := 0; i < 2000; i++ {
		n := 1 + rng.Intn(8)
		off := rng.Intn(ConfigSize - n + 1)
		p := make([]byte, n)
		rng.Read(p)
		if err := a.Write(uint64(off), p); err != nil {
			t.Fatal(err)
		}
		for j := range p {
			if err := b.Write(uint64(off+j), p[j:j+1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a.data != b.data {
		for i := range a.data {
			if a.data[i] != b.data[i] {
				t.Fatalf("byte %#x: %#x vs %#x", i, a.data[i], b.data[i])
			}
		}
	}
}

func TestBARSizing(t *testing.T) {
	cs := NewConfigSpace(Identity{VendorID: 1})
	if err := cs.AddBAR(0, BAR{Kind: BARMem64, Size: 1 << 32, Prefetchable: true}); err != nil {
		t.Fatal(err)
	}
	if err := cs.AddBAR(2, BAR{Kind: BARMem32, Size: 128 << 10}); err != nil {
		t.Fatal(err)
	}
	if err := cs.AddBAR(3, BAR{Kind: BARIO, Size: 32}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		wr32(t, cs, CfgBAR0+4*i, 0xFFFFFFFF)
	}
	wr32(t, cs, CfgROM, 0xFFFFFFFF)
	want := []uint32{0x0000000C, 0xFFFFFFFF, 0xFFFE0000, 0xFFFFFFE1, 0, 0}
	for i, w := range want {
		if got := rd32(t, cs, CfgBAR0+4*i); got != w {
			t.Errorf("BAR%d after all-ones = %#08x, want %#08x", i, got, w)
		}
	}
	if got := rd32(t, cs, CfgROM); got != 0 {
		t.Errorf("ROM BAR = %#x, want 0 (absent)", got)
	}
	// An address is kept, low bits stay the type.
	wr32(t, cs, CfgBAR0+8, 0xFEBC0000|0xF)
	if got := rd32(t, cs, CfgBAR0+8); got != 0xFEBC0000 {
		t.Errorf("BAR2 = %#x", got)
	}
	cs.Reset()
	if got := rd32(t, cs, CfgBAR0+8); got != 0 {
		t.Errorf("BAR2 after reset = %#x", got)
	}
}

func TestBARErrors(t *testing.T) {
	cs := NewConfigSpace(Identity{})
	if err := cs.AddBAR(4, BAR{Kind: BARMem64, Size: 4096}); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		i int
		b BAR
	}{
		{5, BAR{Kind: BARMem32, Size: 4096}},    // upper half of BAR4
		{4, BAR{Kind: BARMem32, Size: 4096}},    // taken
		{6, BAR{Kind: BARMem32, Size: 4096}},    // no such BAR
		{-1, BAR{Kind: BARMem32, Size: 4096}},   // no such BAR
		{0, BAR{Kind: BARMem32, Size: 3000}},    // not a power of two
		{0, BAR{Kind: BARMem32, Size: 8}},       // too small
		{0, BAR{Kind: BARIO, Size: 512}},        // I/O too large
		{0, BAR{Kind: BARIO, Size: 2}},          // I/O too small
		{0, BAR{Kind: BARMem32, Size: 1 << 32}}, // 32-bit too large
		{0, BAR{Kind: BARNone, Size: 4096}},
		{0, BAR{Kind: 9, Size: 4096}},
	}
	for _, c := range bad {
		if err := cs.AddBAR(c.i, c.b); err == nil {
			t.Errorf("AddBAR(%d, %+v) succeeded", c.i, c.b)
		}
	}
	cs5 := NewConfigSpace(Identity{})
	if err := cs5.AddBAR(5, BAR{Kind: BARMem64, Size: 4096}); err == nil {
		t.Error("64-bit BAR 5 accepted")
	}
}

func TestIRQMode(t *testing.T) {
	cs := nicLayout(t)
	steps := []struct {
		off  int
		v    uint16
		want IRQMode
	}{
		{CfgCommand, 0, IRQModeINTx},
		{CfgCommand, CmdINTxDisable, IRQModeNone},
		{0xD0 + MSIControl, MSIFlagEnable, IRQModeMSI},
		{0xA0 + MSIXControl, MSIXFlagEnable, IRQModeMSIX},
		{0xD0 + MSIControl, 0, IRQModeMSIX},
		{0xA0 + MSIXControl, 0, IRQModeNone},
		{CfgCommand, 0, IRQModeINTx},
	}
	for i, s := range steps {
		wr16(t, cs, s.off, s.v)
		if got := cs.IRQMode(); got != s.want {
			t.Errorf("step %d: mode %v, want %v", i, got, s.want)
		}
	}
	if IRQModeMSIX.String() != "MSI-X" || IRQModeNone.String() != "none" {
		t.Error("mode names")
	}
}

func TestMasksCopy(t *testing.T) {
	cs := nicLayout(t)
	wm, w1c := cs.Masks(CfgCommand, 4)
	if !bytes.Equal(wm, []byte{0x07, 0x04, 0, 0}) || !bytes.Equal(w1c, []byte{0, 0, 0, 0xF9}) {
		t.Errorf("masks %x %x", wm, w1c)
	}
	if wm, _ := cs.Masks(ConfigSize-1, 2); wm != nil {
		t.Error("out-of-range masks returned")
	}
}
