package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// regs is a BAR handler backed by bytes that records the accesses it saw.
type regs struct {
	mem  []byte
	seen []string
}

func (r *regs) ReadRegion(off uint64, p []byte) error {
	r.seen = append(r.seen, fmt.Sprintf("r%#x/%d", off, len(p)))
	copy(p, r.mem[off:])
	return nil
}

func (r *regs) WriteRegion(off uint64, p []byte) error {
	r.seen = append(r.seen, fmt.Sprintf("w%#x/%d", off, len(p)))
	copy(r.mem[off:], p)
	return nil
}

func nicFunction(t testing.TB) (*Function, *regs) {
	t.Helper()
	f := NewFunction(nicLayout(t))
	r := &regs{mem: make([]byte, 128<<10)}
	if err := f.SetBARHandler(0, r); err != nil {
		t.Fatal(err)
	}
	return f, r
}

func TestFunctionInfo(t *testing.T) {
	f, _ := nicFunction(t)
	info := f.Info()
	if !info.PCI || !info.Resettable {
		t.Error("flags")
	}
	if len(info.Regions) != RegionVGA+1 {
		t.Fatalf("%d regions", len(info.Regions))
	}
	sizes := []uint64{128 << 10, 128 << 10, 32, 16 << 10, 0, 0, 0, ConfigSize, 0}
	for i, s := range sizes {
		if info.Regions[i].Size != s {
			t.Errorf("region %d size %#x, want %#x", i, info.Regions[i].Size, s)
		}
		if s != 0 && info.Regions[i].Flags != RegionRead|RegionWrite {
			t.Errorf("region %d flags %#x", i, info.Regions[i].Flags)
		}
	}
	want := []IRQInfo{
		{1, IRQEventFD | IRQMaskable | IRQAutomasked},
		{1, IRQEventFD | IRQNoResize},
		{5, IRQEventFD | IRQNoResize},
		{1, IRQEventFD},
		{1, IRQEventFD},
	}
	if len(info.IRQs) != NumIRQIndexes {
		t.Fatalf("%d IRQ indexes", len(info.IRQs))
	}
	for i, w := range want {
		if info.IRQs[i] != w {
			t.Errorf("IRQ %d = %+v, want %+v", i, info.IRQs[i], w)
		}
	}
	if err := f.AddRegion(RegionMigration, RegionInfo{Size: 4096, Flags: RegionRead}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.AddRegion(RegionMigration, RegionInfo{Size: 1}, nil); err == nil {
		t.Error("region added twice")
	}
	if err := f.AddRegion(RegionConfig, RegionInfo{Size: 1}, nil); err == nil {
		t.Error("standard region index accepted as device-specific")
	}
	if got := f.Info().Regions; len(got) != RegionMigration+1 || got[RegionMigration].Size != 4096 {
		t.Errorf("regions with migration: %+v", got)
	}
}

func TestFunctionRegionDispatch(t *testing.T) {
	f, r := nicFunction(t)
	for _, n := range []int{1, 2, 3, 4, 8} {
		p := make([]byte, n)
		if err := f.WriteRegion(RegionBAR0, 0x100, p); err != nil {
			t.Fatal(err)
		}
		if err := f.ReadRegion(RegionBAR0, 128<<10-uint64(n), p); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.seen) != 10 || r.seen[0] != "w0x100/1" || r.seen[9] != fmt.Sprintf("r%#x/8", 128<<10-8) {
		t.Errorf("handler saw %v", r.seen)
	}
	bad := []struct {
		idx int
		off uint64
		n   int
	}{
		{RegionBAR0, 128 << 10, 1},
		{RegionBAR0, 128<<10 - 2, 4},
		{RegionBAR0, 1<<64 - 1, 2},
		{RegionBAR4, 0, 4},
		{RegionROM, 0, 4},
		{RegionVGA, 0, 1},
		{RegionConfig, ConfigSize, 1},
		{-1, 0, 1},
		{1000, 0, 1},
	}
	for _, b := range bad {
		p := make([]byte, b.n)
		if err := f.ReadRegion(b.idx, b.off, p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("read %d@%#x/%d: %v", b.idx, b.off, b.n, err)
		}
		if err := f.WriteRegion(b.idx, b.off, p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("write %d@%#x/%d: %v", b.idx, b.off, b.n, err)
		}
	}
	if len(r.seen) != 10 {
		t.Errorf("refused accesses reached the handler: %v", r.seen[10:])
	}
	// A BAR without a handler reads zeros and drops writes.
	p := []byte{1, 2, 3, 4}
	if err := f.WriteRegion(RegionBAR1, 0, p); err != nil {
		t.Fatal(err)
	}
	if err := f.ReadRegion(RegionBAR1, 0, p); err != nil || binary.LittleEndian.Uint32(p) != 0 {
		t.Errorf("handlerless BAR read %x, %v", p, err)
	}
	if err := f.SetBARHandler(4, r); err == nil {
		t.Error("handler for an undeclared BAR accepted")
	}
}

func TestFunctionMSIXTableAndPBA(t *testing.T) {
	f, _ := nicFunction(t)
	var b [4]byte
	// Vector control of every entry reads masked after reset.
	for v := 0; v < 5; v++ {
		if err := f.ReadRegion(RegionBAR3, uint64(v*16+12), b[:]); err != nil {
			t.Fatal(err)
		}
		if binary.LittleEndian.Uint32(b[:]) != 1 {
			t.Errorf("vector %d control %x", v, b)
		}
	}
	binary.LittleEndian.PutUint32(b[:], 0xFEE00000)
	if err := f.WriteRegion(RegionBAR3, 16, b[:]); err != nil {
		t.Fatal(err)
	}
	clear(b[:])
	f.ReadRegion(RegionBAR3, 16, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0xFEE00000 {
		t.Errorf("table entry read back %x", b)
	}
	// The PBA shows pending vectors; enable MSI-X through config space.
	wr16(t, f.Config, 0xA0+MSIXControl, MSIXFlagEnable|MSIXFlagMaskAll)
	f.IRQs.MSIX(3)
	var pba [8]byte
	if err := f.ReadRegion(RegionBAR3, 0x2000, pba[:]); err != nil {
		t.Fatal(err)
	}
	if pba[0] != 1<<3 {
		t.Errorf("PBA %x", pba)
	}
	f.WriteRegion(RegionBAR3, 0x2000, []byte{0})
	f.ReadRegion(RegionBAR3, 0x2000, pba[:1])
	if pba[0] != 1<<3 {
		t.Error("PBA writable")
	}
	f.Reset()
	f.ReadRegion(RegionBAR3, 16, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0 || f.IRQs.Pending(IRQMSIX, 3) {
		t.Error("reset kept the table or pending bits")
	}
}

// Config writes reach the IRQ table: MSI-X enable, function mask, MSI
// enable and INTx disable.
func TestFunctionConfigDrivesIRQs(t *testing.T) {
	f, _ := nicFunction(t)
	defer f.Disconnect()
	x, m, i := newEventfd(t), newEventfd(t), newEventfd(t)
	assign(t, f.IRQs, IRQMSIX, 0, x)
	assign(t, f.IRQs, IRQMSI, 0, m)
	assign(t, f.IRQs, IRQINTx, 0, i)

	f.SetINTx(true)
	if i.count(t) != 1 || rd16(t, f.Config, CfgStatus)&StatusInterrupt == 0 {
		t.Fatal("INTx not signalled or status bit clear")
	}
	f.SetINTx(false)
	action(t, f.IRQs, IRQINTx, 0, 1, IRQActionUnmask)
	wr16(t, f.Config, CfgCommand, CmdINTxDisable)
	f.SetINTx(true)
	if i.count(t) != 0 {
		t.Fatal("INTx signalled while disabled in config")
	}
	if f.IRQMode() != IRQModeNone {
		t.Errorf("mode %v", f.IRQMode())
	}
	f.SetINTx(false)

	wr16(t, f.Config, 0xD0+MSIControl, MSIFlagEnable)
	if !f.IRQs.MSI(0) || m.count(t) != 1 {
		t.Fatal("MSI after config enable")
	}
	wr16(t, f.Config, 0xA0+MSIXControl, MSIXFlagEnable|MSIXFlagMaskAll)
	f.IRQs.MSIX(0)
	if x.count(t) != 0 {
		t.Fatal("function-masked MSI-X signalled")
	}
	wr16(t, f.Config, 0xA0+MSIXControl, MSIXFlagEnable)
	if x.count(t) != 1 {
		t.Fatal("clearing the function mask in config did not fire")
	}
	if f.IRQMode() != IRQModeMSIX {
		t.Errorf("mode %v", f.IRQMode())
	}
	// Reset disables MSI-X again.
	f.Reset()
	if f.IRQs.MSIX(0) || x.count(t) != 0 {
		t.Fatal("MSI-X delivered after reset")
	}
	if f.IRQMode() != IRQModeINTx {
		t.Errorf("mode after reset %v", f.IRQMode())
	}
	f.Disconnect()
	if !x.closed() || !m.closed() || !i.closed() {
		t.Error("Disconnect left eventfds open")
	}
}

func TestFunctionResetRestoresConfig(t *testing.T) {
	f, _ := nicFunction(t)
	var before [ConfigSize]byte
	f.ReadRegion(RegionConfig, 0, before[:])
	ones := make([]byte, ConfigSize)
	for i := range ones {
		ones[i] = 0xFF
	}
	f.WriteRegion(RegionConfig, 0, ones)
	var mid [ConfigSize]byte
	f.ReadRegion(RegionConfig, 0, mid[:])
	if mid == before {
		t.Fatal("all-ones write changed nothing")
	}
	f.Reset()
	var after [ConfigSize]byte
	f.ReadRegion(RegionConfig, 0, after[:])
	if after != before {
		t.Error("reset did not restore config space")
	}
}

func BenchmarkConfigRead(b *testing.B) {
	f, _ := nicFunction(b)
	var p [4]byte
	b.ReportAllocs()
	for b.Loop() {
		f.ReadRegion(RegionConfig, 0xA0, p[:])
	}
}

func BenchmarkConfigWrite(b *testing.B) {
	f, _ := nicFunction(b)
	p := []byte{0x06, 0x04}
	b.ReportAllocs()
	for b.Loop() {
		f.WriteRegion(RegionConfig, CfgCommand, p)
	}
}

func TestConfigAccessNoAllocs(t *testing.T) {
	f, _ := nicFunction(t)
	var p [4]byte
	if n := testing.AllocsPerRun(100, func() { f.ReadRegion(RegionConfig, 0xA0, p[:]) }); n != 0 {
		t.Errorf("config read allocates %v times", n)
	}
	w := []byte{0x06, 0x04}
	if n := testing.AllocsPerRun(100, func() { f.WriteRegion(RegionConfig, CfgCommand, w) }); n != 0 {
		t.Errorf("config write allocates %v times", n)
	}
	pm := []byte{0x03, 0x00}
	if n := testing.AllocsPerRun(100, func() { f.WriteRegion(RegionConfig, 0xC8+PMCtrl, pm) }); n != 0 {
		t.Errorf("config write with a fixup allocates %v times", n)
	}
}
