package e1000e

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/device/devicetest"
)

// efd is a test's end of an eventfd handed to the NIC: the NIC owns the
// file it is given, the test reads a duplicate.
type efd struct {
	file *os.File
	dup  int
}

func newEfd(t *testing.T) efd {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(dup) })
	return efd{file: os.NewFile(uintptr(fd), "eventfd"), dup: dup}
}

// count reads and resets the counter (0 when nothing was signalled).
func (e efd) count(t *testing.T) uint64 {
	var b [8]byte
	_, err := unix.Read(e.dup, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func newPCINIC(t *testing.T) *NIC {
	t.Helper()
	n, err := New(Config{MAC: []byte{0x02, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE}, RXFilterSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func cfgRead(t *testing.T, n *NIC, off uint64, size int) uint32 {
	t.Helper()
	p := make([]byte, 4)
	if err := n.ReadRegion(device.RegionConfig, off, p[:size]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(p)
}

func cfgWrite(t *testing.T, n *NIC, off uint64, size int, v uint32) {
	t.Helper()
	p := make([]byte, 4)
	binary.LittleEndian.PutUint32(p, v)
	if err := n.WriteRegion(device.RegionConfig, off, p[:size]); err != nil {
		t.Fatal(err)
	}
}

func barRead(t *testing.T, n *NIC, bar int, off uint64) uint32 {
	t.Helper()
	p := make([]byte, 4)
	if err := n.ReadRegion(bar, off, p); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(p)
}

func barWrite(t *testing.T, n *NIC, bar int, off uint64, v uint32) {
	t.Helper()
	p := make([]byte, 4)
	binary.LittleEndian.PutUint32(p, v)
	if err := n.WriteRegion(bar, off, p); err != nil {
		t.Fatal(err)
	}
}

func TestPCIIdentityAndCapabilities(t *testing.T) {
	n := newPCINIC(t)
	if v := cfgRead(t, n, 0, 4); v != 0x10D38086 {
		t.Fatalf("vendor/device %#x", v)
	}
	if v := cfgRead(t, n, 0x08, 4); v != 0x02000000 {
		t.Fatalf("class/revision %#x", v)
	}
	if v := cfgRead(t, n, 0x2C, 4); v != 0x00008086 {
		t.Fatalf("subsystem %#x", v)
	}
	if v := cfgRead(t, n, 0x3D, 1); v != 1 {
		t.Fatalf("interrupt pin %d", v)
	}
	// Walk the standard list: every expected capability at its offset.
	want := map[uint32]uint32{capPM: device.CapIDPM, capMSI: device.CapIDMSI, capPCIe: device.CapIDPCIe, capMSIX: device.CapIDMSIX}
	seen := 0
	for p, i := cfgRead(t, n, 0x34, 1), 0; p != 0 && i < 48; i++ {
		id := cfgRead(t, n, uint64(p), 1)
		if want[p] != id {
			t.Fatalf("capability %#x at %#x", id, p)
		}
		seen++
		p = cfgRead(t, n, uint64(p)+1, 1)
	}
	if seen != len(want) {
		t.Fatalf("found %d capabilities, want %d", seen, len(want))
	}
	if v := cfgRead(t, n, capMSI+2, 2); v&0x80 == 0 || v&0x0E != 0 {
		t.Fatalf("MSI control %#x: want 64-bit, 1 vector", v)
	}
	if v := cfgRead(t, n, capMSIX+2, 2); v&0x7FF != numMSIXVecs-1 {
		t.Fatalf("MSI-X table size %d", v&0x7FF+1)
	}
	if v := cfgRead(t, n, capMSIX+4, 4); v != 3 {
		t.Fatalf("MSI-X table %#x: want BAR3 offset 0", v)
	}
	if v := cfgRead(t, n, capMSIX+8, 4); v != msixPBAOff|3 {
		t.Fatalf("MSI-X PBA %#x", v)
	}
	if v := cfgRead(t, n, capAER, 4); v&0xFFFF != 1 || v>>20 != capDSN {
		t.Fatalf("AER header %#x", v)
	}
	if v := cfgRead(t, n, capDSN, 4); v&0xFFFF != 3 {
		t.Fatalf("DSN header %#x", v)
	}
	lo, hi := cfgRead(t, n, capDSN+4, 4), cfgRead(t, n, capDSN+8, 4)
	if lo != 0xFFCCDDEE || hi != 0x02AABBFF {
		t.Fatalf("DSN serial %08x%08x", hi, lo)
	}
	info := n.Info()
	sizes := []uint64{bar0Size, bar1Size, bar2Size, bar3Size}
	for i, s := range sizes {
		if info.Regions[i].Size != s {
			t.Errorf("BAR%d size %#x, want %#x", i, info.Regions[i].Size, s)
		}
	}
	if info.IRQs[device.IRQMSIX].Count != numMSIXVecs || info.IRQs[device.IRQMSI].Count != 1 || info.IRQs[device.IRQINTx].Count != 1 {
		t.Fatalf("IRQ counts %+v", info.IRQs)
	}
	// BAR2 is an I/O BAR; BAR sizing by all ones.
	if v := cfgRead(t, n, 0x18, 4); v&1 != 1 {
		t.Fatalf("BAR2 %#x is not I/O", v)
	}
	cfgWrite(t, n, 0x10, 4, 0xFFFFFFFF)
	if v := cfgRead(t, n, 0x10, 4); v != ^uint32(bar0Size-1) {
		t.Fatalf("BAR0 sizing reads %#x", v)
	}
}

func TestBARAccess(t *testing.T) {
	n := newPCINIC(t)
	// Indirect access through BAR2.
	barWrite(t, n, 2, ioAddr, RDBAL0)
	barWrite(t, n, 2, ioData, 0x12340)
	if v := barRead(t, n, 0, RDBAL0); v != 0x12340 {
		t.Fatalf("RDBAL0 via IODATA = %#x", v)
	}
	if v := barRead(t, n, 2, ioData); v != 0x12340 {
		t.Fatalf("IODATA read %#x", v)
	}
	if v := barRead(t, n, 2, ioAddr); v != RDBAL0 {
		t.Fatalf("IOADDR read %#x", v)
	}
	barWrite(t, n, 2, ioAddr, 0xFFFFFFF0)
	barWrite(t, n, 2, ioData, 1)
	if barRead(t, n, 2, ioData) != 0 {
		t.Fatal("IODATA beyond BAR0 not zero")
	}
	// Flash window reads zero.
	if barRead(t, n, 1, 0x100) != 0 {
		t.Fatal("flash not zero")
	}
	// Sub-dword accesses.
	p := make([]byte, 2)
	if err := n.ReadRegion(0, STATUS, p); err != nil || p[0]&STATUS_LU == 0 {
		t.Fatalf("2-byte STATUS read %x %v", p, err)
	}
	barWrite(t, n, 0, RDBAH0, 0x11223344)
	if err := n.WriteRegion(0, RDBAH0+1, []byte{0xAB}); err != nil {
		t.Fatal(err)
	}
	if v := barRead(t, n, 0, RDBAH0); v != 0x1122AB44 {
		t.Fatalf("byte write merged to %#x", v)
	}
	// Odd sizes and straddles are refused with EINVAL.
	if err := n.ReadRegion(0, 2, make([]byte, 4)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("misaligned read: %v", err)
	}
	if err := n.ReadRegion(0, bar0Size-4, make([]byte, 8)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read beyond BAR0: %v", err)
	}
	if err := n.WriteRegion(0, 0, make([]byte, 3)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("3-byte write: %v", err)
	}
	// Accesses beyond a register BAR, or wrapping around, are refused.
	for _, c := range []struct {
		bar  int
		off  uint64
		size int
	}{{0, bar0Size, 4}, {0, ^uint64(3), 4}, {2, bar2Size - 2, 4}, {2, bar2Size, 1}} {
		if err := n.ReadRegion(c.bar, c.off, make([]byte, c.size)); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("BAR%d read at %#x size %d: %v", c.bar, c.off, c.size, err)
		}
		if err := n.WriteRegion(c.bar, c.off, make([]byte, c.size)); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("BAR%d write at %#x size %d: %v", c.bar, c.off, c.size, err)
		}
	}
	// The MSI-X table in BAR3 keeps what the guest writes.
	barWrite(t, n, 3, msixTableOff+device.MSIXEntrySize+4, 0xFEE01234)
	if v := barRead(t, n, 3, msixTableOff+device.MSIXEntrySize+4); v != 0xFEE01234 {
		t.Fatalf("MSI-X table entry 1 reads %#x", v)
	}
}

func TestBusMasterGatesDMA(t *testing.T) {
	n := newPCINIC(t)
	n.Connect(nil)
	n.mu.Lock()
	bm := n.busMaster()
	n.mu.Unlock()
	if bm {
		t.Fatal("DMA allowed before Bus Master")
	}
	cfgWrite(t, n, device.CfgCommand, 2, uint32(device.CmdMemory|device.CmdBusMaster))
	n.mu.Lock()
	on := n.busMasterOn
	n.mu.Unlock()
	if !on {
		t.Fatal("Bus Master enable not seen")
	}
	cfgWrite(t, n, device.CfgCommand, 2, uint32(device.CmdMemory))
	n.mu.Lock()
	on = n.busMasterOn
	n.mu.Unlock()
	if on {
		t.Fatal("Bus Master disable not seen")
	}
}

func TestMSIXThroughEventfds(t *testing.T) {
	n := newPCINIC(t)
	fds := make([]efd, numMSIXVecs)
	files := make([]*os.File, numMSIXVecs)
	for i := range fds {
		fds[i] = newEfd(t)
		files[i] = fds[i].file
	}
	err := n.SetIRQs(device.SetIRQs{Index: device.IRQMSIX, Start: 0, Count: numMSIXVecs,
		Action: device.IRQActionTrigger, Data: device.IRQDataEventFD, FDs: files})
	if err != nil {
		t.Fatal(err)
	}
	cfgWrite(t, n, capMSIX+2, 2, 0x8000) // MSI-X enable
	barWrite(t, n, 0, IVAR, 0x800A0908)
	barWrite(t, n, 0, IMS, ICR_RXQ0|ICR_TXQ0|ICR_OTHER|ICR_LSC)
	barWrite(t, n, 0, ICS, ICR_RXQ0)
	if c := fds[0].count(t); c != 1 {
		t.Fatalf("vector 0 signalled %d times", c)
	}
	// LSC goes to the other vector, 2.
	n.SetLink(false)
	if c := fds[2].count(t); c != 1 {
		t.Fatalf("vector 2 signalled %d times", c)
	}
	// With the function masked, the vector becomes pending in the PBA.
	cfgWrite(t, n, capMSIX+2, 2, 0xC000)
	barWrite(t, n, 0, ICS, ICR_TXQ0)
	if c := fds[1].count(t); c != 0 {
		t.Fatal("masked vector signalled")
	}
	if pba := barRead(t, n, 3, msixPBAOff); pba&2 == 0 {
		t.Fatalf("PBA %#x lacks vector 1", pba)
	}
	cfgWrite(t, n, capMSIX+2, 2, 0x8000)
	if c := fds[1].count(t); c != 1 {
		t.Fatalf("unmasked vector signalled %d times", c)
	}
	// PBACLR clears a pending bit without delivering it.
	barWrite(t, n, 0, ICR, 0xFFFFFFFF)
	cfgWrite(t, n, capMSIX+2, 2, 0xC000)
	barWrite(t, n, 0, ICS, ICR_TXQ0)
	if pba := barRead(t, n, 3, msixPBAOff); pba&2 == 0 {
		t.Fatalf("PBA %#x lacks vector 1", pba)
	}
	barWrite(t, n, 0, PBACLR, 2)
	if pba := barRead(t, n, 3, msixPBAOff); pba&2 != 0 {
		t.Fatalf("PBACLR left PBA %#x", pba)
	}
	cfgWrite(t, n, capMSIX+2, 2, 0x8000)
	if c := fds[1].count(t); c != 0 {
		t.Fatalf("cleared vector signalled %d times", c)
	}
}

func TestConformance(t *testing.T) {
	devicetest.Run(t, newPCINIC(t), devicetest.Options{})
}

func TestINTxThroughEventfd(t *testing.T) {
	n := newPCINIC(t)
	fd := newEfd(t)
	err := n.SetIRQs(device.SetIRQs{Index: device.IRQINTx, Start: 0, Count: 1,
		Action: device.IRQActionTrigger, Data: device.IRQDataEventFD, FDs: []*os.File{fd.file}})
	if err != nil {
		t.Fatal(err)
	}
	barWrite(t, n, 0, IMS, ICR_TXDW)
	barWrite(t, n, 0, ICS, ICR_TXDW)
	if c := fd.count(t); c != 1 {
		t.Fatalf("INTx signalled %d times", c)
	}
	if st := cfgRead(t, n, device.CfgStatus, 2); st&uint32(device.StatusInterrupt) == 0 {
		t.Fatal("status interrupt bit not set")
	}
	if barRead(t, n, 0, ICR)&ICR_INT_ASSERTED == 0 {
		t.Fatal("ICR lacks INT_ASSERTED")
	}
	if st := cfgRead(t, n, device.CfgStatus, 2); st&uint32(device.StatusInterrupt) != 0 {
		t.Fatal("status interrupt bit still set after ICR read")
	}
}

// TestINTxDisabledKeepsLevel: in mode None (INTx disabled, no MSI or
// MSI-X) the NIC keeps the line's level as in INTx mode: the status bit
// and INT_ASSERTED show it, the function holds the signal back, and
// enabling INTx again delivers it.
func TestINTxDisabledKeepsLevel(t *testing.T) {
	n := newPCINIC(t)
	fd := newEfd(t)
	err := n.SetIRQs(device.SetIRQs{Index: device.IRQINTx, Start: 0, Count: 1,
		Action: device.IRQActionTrigger, Data: device.IRQDataEventFD, FDs: []*os.File{fd.file}})
	if err != nil {
		t.Fatal(err)
	}
	cfgWrite(t, n, device.CfgCommand, 2, uint32(device.CmdMemory|device.CmdINTxDisable))
	if m := n.pci.fn.IRQMode(); m != device.IRQModeNone {
		t.Fatalf("mode %v with INTx disabled", m)
	}
	barWrite(t, n, 0, IMS, ICR_TXDW)
	barWrite(t, n, 0, ICS, ICR_TXDW)
	if c := fd.count(t); c != 0 {
		t.Fatalf("disabled INTx signalled %d times", c)
	}
	if st := cfgRead(t, n, device.CfgStatus, 2); st&uint32(device.StatusInterrupt) == 0 {
		t.Fatal("status interrupt bit not set with INTx disabled")
	}
	cfgWrite(t, n, device.CfgCommand, 2, uint32(device.CmdMemory))
	if c := fd.count(t); c != 1 {
		t.Fatalf("INTx signalled %d times once enabled", c)
	}
	if barRead(t, n, 0, ICR)&ICR_INT_ASSERTED == 0 {
		t.Fatal("ICR lacks INT_ASSERTED")
	}
}

func TestDeviceReset(t *testing.T) {
	n := newPCINIC(t)
	barWrite(t, n, 0, RDBAL0, 0x1000)
	cfgWrite(t, n, device.CfgCommand, 2, uint32(device.CmdMemory|device.CmdBusMaster))
	if err := n.Reset(); err != nil {
		t.Fatal(err)
	}
	if barRead(t, n, 0, RDBAL0) != 0 {
		t.Fatal("register kept over reset")
	}
	if cfgRead(t, n, device.CfgCommand, 2) != 0 {
		t.Fatal("command register kept over reset")
	}
	n.mu.Lock()
	on := n.busMasterOn
	n.mu.Unlock()
	if on {
		t.Fatal("Bus Master kept over reset")
	}
	if ral := barRead(t, n, 0, RA); ral != 0xCCBBAA02 {
		t.Fatalf("RAL0 %#x after reset", ral)
	}
}

func TestBARAccessAllocs(t *testing.T) {
	n := newPCINIC(t)
	p := make([]byte, 4)
	allocs := testing.AllocsPerRun(1000, func() {
		_ = n.ReadRegion(0, STATUS, p)
		_ = n.WriteRegion(0, RDBAL0, p)
		_ = n.ReadRegion(2, ioData, p)
	})
	if allocs != 0 {
		t.Fatalf("BAR access allocates %.1f times", allocs)
	}
}

// BenchmarkBAR0Read is a register read as the server performs it.
func BenchmarkBAR0Read(b *testing.B) {
	n, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	p := make([]byte, 4)
	b.ReportAllocs()
	for b.Loop() {
		_ = n.ReadRegion(0, STATUS, p)
	}
}

// BenchmarkBAR0Write is a register write as the server performs it.
func BenchmarkBAR0Write(b *testing.B) {
	n, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	p := []byte{0x00, 0x10, 0, 0}
	b.ReportAllocs()
	for b.Loop() {
		_ = n.WriteRegion(0, RDBAL0, p)
	}
}
