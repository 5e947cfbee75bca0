package e1000e

import (
	"fmt"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
)

// The register and interrupt tests of Linux's e1000e self-test
// (ethtool -t, drivers/net/ethernet/intel/e1000e/ethtool.c), replayed on the
// model as the driver runs them for an 82574L (mac type e1000_82574: not
// FLAG_IS_ICH, 16 receive addresses checked with mask 0x8003FFFF).

// selfTestPatterns are the values reg_pattern_test writes in turn.
var selfTestPatterns = [...]uint32{0x5A5A5A5A, 0xA5A5A5A5, 0x00000000, 0xFFFFFFFF}

// patternReg is one REG_PATTERN_TEST: the driver writes pattern&write and
// expects pattern&write&mask back.
type patternReg struct {
	name        string
	off         uint32
	mask, write uint32
}

// linuxPatternRegs lists the pattern tests in the driver's order, RA and
// MTA arrays expanded.
func linuxPatternRegs() []patternReg {
	regs := []patternReg{
		{"FCAL", FCAL, 0xFFFFFFFF, 0xFFFFFFFF},
		{"FCAH", FCAH, 0x0000FFFF, 0xFFFFFFFF},
		{"FCT", FCT, 0x0000FFFF, 0xFFFFFFFF},
		{"VET", VET, 0x0000FFFF, 0xFFFFFFFF},
		{"RDTR", RDTR, 0x0000FFFF, 0xFFFFFFFF},
		{"RDBAH0", RDBAH0, 0xFFFFFFFF, 0xFFFFFFFF},
		{"RDLEN0", RDLEN0, 0x000FFF80, 0x000FFFFF},
		{"RDH0", RDH0, 0x0000FFFF, 0x0000FFFF},
		{"RDT0", RDT0, 0x0000FFFF, 0x0000FFFF},
		{"FCRTH", FCRTH, 0x0000FFF8, 0x0000FFF8},
		{"FCTTV", FCTTV, 0x0000FFFF, 0x0000FFFF},
		{"TIPG", TIPG, 0x3FFFFFFF, 0x3FFFFFFF},
		{"TDBAH0", TDBAH0, 0xFFFFFFFF, 0xFFFFFFFF},
		{"TDLEN0", TDLEN0, 0x000FFF80, 0x000FFFFF},
		{"RDBAL0", RDBAL0, 0xFFFFFFF0, 0xFFFFFFFF},
		{"TXCW", TXCW, 0xC000FFFF, 0x0000FFFF},
		{"TDBAL0", TDBAL0, 0xFFFFFFF0, 0xFFFFFFFF},
		{"TIDV", TIDV, 0x0000FFFF, 0x0000FFFF},
	}
	for i := uint32(0); i < numRA; i++ {
		regs = append(regs, patternReg{fmt.Sprintf("RAH%d", i), RA + 8*i + 4, 0x8003FFFF, 0xFFFFFFFF})
	}
	for i := uint32(0); i < 128; i++ {
		regs = append(regs, patternReg{fmt.Sprintf("MTA%d", i), MTA + 4*i, 0xFFFFFFFF, 0xFFFFFFFF})
	}
	return regs
}

// TestLinuxRegisterTest runs e1000_reg_test against the model.
func TestLinuxRegisterTest(t *testing.T) {
	n := newTestNIC(t)

	// STATUS is read-only: writing the toggle bits changes none of them.
	const toggle = 0x7FFFF033
	before := n.ReadReg(STATUS) & toggle
	n.WriteReg(STATUS, toggle)
	if after := n.ReadReg(STATUS) & toggle; after != before {
		t.Errorf("STATUS test: got %#08x, want %#08x", after, before)
	}

	pattern := func(r patternReg) {
		t.Helper()
		for _, p := range selfTestPatterns {
			n.WriteReg(r.off, p&r.write)
			if got, want := n.ReadReg(r.off), p&r.write&r.mask; got != want {
				t.Errorf("pattern test %s (%#05x): wrote %#08x, got %#08x, want %#08x", r.name, r.off, p&r.write, got, want)
			}
		}
	}
	setCheck := func(name string, off, mask, write uint32) {
		t.Helper()
		n.WriteReg(off, write&mask)
		if got := n.ReadReg(off); got&mask != write&mask {
			t.Errorf("set/check %s: got %#08x, want %#08x", name, got&mask, write&mask)
		}
	}
	regs := linuxPatternRegs()
	for _, r := range regs[:14] { // up to TDLEN
		pattern(r)
	}
	const rctlMask = 0x06DFB3FE // not FLAG_IS_ICH
	setCheck("RCTL", RCTL, 0xFFFFFFFF, 0)
	setCheck("RCTL", RCTL, rctlMask, 0x003FFFFB)
	setCheck("TCTL", TCTL, 0xFFFFFFFF, 0)
	setCheck("RCTL", RCTL, rctlMask, 0xFFFFFFFF)
	for _, r := range regs[14:] {
		pattern(r)
	}
}

// TestSelfTestRegisterMasks walks the registers of the self-test with the
// four patterns and checks that each keeps exactly the bits the 82574L
// implements, whatever the driver's write mask: a value with every bit set
// reads back as the implemented mask.
func TestSelfTestRegisterMasks(t *testing.T) {
	n := newTestNIC(t)
	implemented := map[string]uint32{"RDTR": 0xFFFF, "RDLEN0": dlenMask, "TIPG": tipgMask, "TXCW": txcwMask}
	for _, r := range linuxPatternRegs() {
		mask := r.mask
		if m, ok := implemented[r.name]; ok {
			mask = m
		}
		for _, p := range selfTestPatterns {
			n.WriteReg(r.off, p)
			if got := n.ReadReg(r.off); got != p&mask {
				t.Errorf("%s: wrote %#08x, read %#08x, want %#08x", r.name, p, got, p&mask)
			}
		}
	}
	// RAL keeps every bit, through the legacy alias as well.
	for _, p := range selfTestPatterns {
		n.WriteReg(RA+8, p)
		n.WriteReg(0x40+12, p) // legacy RAH1
		if got := n.ReadReg(RA + 8); got != p {
			t.Errorf("RAL1: wrote %#08x, read %#08x", p, got)
		}
		if got := n.ReadReg(RA + 12); got != p&rahMask {
			t.Errorf("RAH1 via alias: wrote %#08x, read %#08x, want %#08x", p, got, p&rahMask)
		}
	}
}

// selfTestHandler plays e1000_test_intr: when the device posted an
// interrupt (INTx raised or an MSI sent since the last call), it reads ICR
// and accumulates it, as the driver's handler does.
type selfTestHandler struct {
	n       *NIC
	irq     *fakeIRQ
	msiSeen int
	icr     uint32
}

func (h *selfTestHandler) poll() {
	s := h.irq.snapshot()
	posted := s.intx || s.msi != h.msiSeen
	h.msiSeen = s.msi
	if posted {
		h.icr |= h.n.ReadReg(ICR)
	}
}

// runLinuxIntrTest is e1000_intr_test's loop in the unshared case, the
// handler run after each forcing write (the driver sleeps 10 ms there).
// It returns the driver's result code: 0 pass, 3 a masked cause posted,
// 4 an enabled cause did not, 5 other causes posted.
func runLinuxIntrTest(n *NIC, irq *fakeIRQ) (code int, bit int) {
	h := &selfTestHandler{n: n, irq: irq}
	h.msiSeen = irq.snapshot().msi
	force := func(mask, cause uint32) uint32 {
		h.icr = 0
		n.WriteReg(mask, cause)
		n.WriteReg(ICS, cause)
		h.poll()
		return h.icr
	}
	n.WriteReg(IMC, 0xFFFFFFFF)
	h.poll()
	for i := 0; i < 10; i++ {
		m := uint32(1) << i
		if force(IMC, m)&m != 0 {
			return 3, i
		}
		if force(IMS, m)&m == 0 {
			return 4, i
		}
		if force(IMC, ^m&0x7FFF) != 0 {
			return 5, i
		}
	}
	n.WriteReg(IMC, 0xFFFFFFFF)
	return 0, -1
}

// TestLinuxInterruptTest runs e1000_intr_test in the modes it meets: INTx
// (the driver's legacy mode, and the one it switches to from MSI-X) and MSI.
func TestLinuxInterruptTest(t *testing.T) {
	for _, mode := range []device.IRQMode{device.IRQModeINTx, device.IRQModeMSI} {
		t.Run(mode.String(), func(t *testing.T) {
			n, irq := newNICWith(t, mode, Config{})
			if code, bit := runLinuxIntrTest(n, irq); code != 0 {
				t.Fatalf("interrupt test fails with code %d at bit %d", code, bit)
			}
			if s := irq.snapshot(); s.intx {
				t.Error("INTx still asserted after the test")
			}
		})
	}
	// With ITR programmed (the driver leaves it set from the open), a
	// held-back assertion still comes once the interval ends.
	t.Run("ITR", func(t *testing.T) {
		n, irq := newNICWith(t, device.IRQModeINTx, Config{})
		n.WriteReg(ITR, 1) // 256 ns: over before the handler polls
		n.WriteReg(IMS, 1<<5)
		n.WriteReg(ICS, 1<<5)
		if !irq.snapshot().intx {
			t.Fatal("no INTx for an enabled cause")
		}
	})
}

// TestICSLatchesLowCauses checks that ICS latches each of bits 0-9 into
// ICR (read back through ICS and ICR), masked or not, and that IMS keeps
// each of them.
func TestICSLatchesLowCauses(t *testing.T) {
	for i := 0; i < 10; i++ {
		m := uint32(1) << i
		n, irq := newNICWith(t, device.IRQModeINTx, Config{})
		n.WriteReg(ICS, m)
		if got := n.ReadReg(ICS); got != m|ICR_INT_ASSERTED {
			t.Errorf("bit %d: ICS reads %#x", i, got)
		}
		if irq.snapshot().intx {
			t.Errorf("bit %d: INTx raised while masked", i)
		}
		n.WriteReg(IMS, m)
		if got := n.ReadReg(IMS); got != m {
			t.Errorf("bit %d: IMS reads %#x", i, got)
		}
		if !irq.snapshot().intx {
			t.Errorf("bit %d: no INTx once enabled", i)
		}
		if got := n.ReadReg(ICR); got != m|ICR_INT_ASSERTED {
			t.Errorf("bit %d: ICR reads %#x", i, got)
		}
		if got := n.ReadReg(ICR); got != 0 || irq.snapshot().intx {
			t.Errorf("bit %d: ICR %#x after read, INTx %v", i, got, irq.snapshot().intx)
		}
	}
}

// TestLoadDropsUnimplementedBits: a stream from an older server, which kept
// every bit of RAH, TIPG and TXCW, loads, and the bits the part does not
// implement read back as the part returns them.
func TestLoadDropsUnimplementedBits(t *testing.T) {
	for _, filters := range []int{0, -1} {
		src := newStateNIC(t, filters)
		src.mu.Lock()
		src.mac[RA>>2+1] |= 0x7FFC0000 // RAH0: reserved bits 18-30
		src.mac[RA>>2+5] = 0xFFFFFFFF  // RAH2
		src.mac[TIPG>>2] |= 0xC0000000
		src.mac[TXCW>>2] = 0xFFFFFFFF
		src.mu.Unlock()
		b, err := migration.Save(nil, src, migration.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		dst := newStateNIC(t, filters)
		if err := migration.Load(b, dst, migration.Limits{}, nil); err != nil {
			t.Fatalf("filters %d: stream with unimplemented bits refused: %v", filters, err)
		}
		if got := dst.ReadReg(TIPG); got != 0x00602008 {
			t.Errorf("filters %d: TIPG %#x", filters, got)
		}
		if got := dst.ReadReg(TXCW); got != txcwMask {
			t.Errorf("filters %d: TXCW %#x", filters, got)
		}
		if filters == 0 {
			continue // no filters section: RA is not carried
		}
		if got := dst.ReadReg(RA + 4); got&^rahMask != 0 || got&RAH_AV == 0 {
			t.Errorf("RAH0 %#x", got)
		}
		if got := dst.ReadReg(RA + 20); got != rahMask {
			t.Errorf("RAH2 %#x, want %#x", got, rahMask)
		}
	}
}

// TestLoadDropsNarrowedBits: a stream from a server that kept every bit of
// the control registers now narrowed to the part's (what it stored before,
// written here) loads, and each register reads back as the part returns
// it: the implemented bits as written, the reserved ones as after reset.
func TestLoadDropsNarrowedBits(t *testing.T) {
	before := map[string]uint32{
		"CTRL": allBits &^ CTRL_RST, "RCTL": 0x7FFFFFFE, "TCTL": allBits,
		"TXDCTL": allBits, "TXDCTL1": allBits, "RXDCTL": 0x3F3F3F3F, "RXDCTL1": 0x3F3F3F3F,
		"RFCTL": allBits, "MRQC": allBits, "LEDCTL": allBits,
		"TSYNCTXCTL": allBits, "TSYNCRXCTL": allBits, "WUC": allBits, "WUFC": allBits,
	}
	src := newStateNIC(t, -1)
	src.mu.Lock()
	for name, v := range before {
		r, _ := rowByName(name)
		src.mac[r.off>>2] = v
	}
	src.mu.Unlock()
	b, err := migration.Save(nil, src, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newStateNIC(t, -1)
	if err := migration.Load(b, dst, migration.Limits{}, nil); err != nil {
		t.Fatalf("stream with the bits an older server kept refused: %v", err)
	}
	for name, v := range before {
		r, _ := rowByName(name)
		if got, want := dst.ReadReg(r.off), v&r.mask|r.reset&^r.mask; got != want {
			t.Errorf("%s: loaded %#08x, reads %#08x, want %#08x", name, v, got, want)
		}
	}
}
