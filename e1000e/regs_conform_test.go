package e1000e

import "testing"

// The register conformance test: every row of the table, driven through
// the guest's path (ReadReg/WriteReg), behaves as the row says, and the
// rows agree with what is known of the 82574L independently of the table
// (partFacts here, Linux's register self-test in selftest_test.go).

// conformPatterns are written to each register in turn: Linux's register
// test's four, a walking pair and the all-ones and all-zeros ends again.
var conformPatterns = []uint32{0x5A5A5A5A, 0xA5A5A5A5, 0x00000000, 0xFFFFFFFF,
	0x00FF00FF, 0xFF00FF00, 0x80000001, 0}

// stored is the storage behind a register, aliases resolved.
func stored(n *NIC, off uint32) uint32 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.storedReg(off)
}

func store(n *NIC, off, v uint32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mac[regIdx.canon[off>>2]] = v
}

// conformDwords are the dwords of a row the walk visits: the first, the
// second (an odd one of a pair array) and the last.
func conformDwords(r *regRow) []uint32 {
	ds := []uint32{0}
	if r.n > 1 {
		ds = append(ds, 1)
	}
	if r.n > 2 {
		ds = append(ds, r.n-1)
	}
	return ds
}

// rewrites are the registers whose write effect changes the register
// itself after the store: what a write of p leaves, given what the store
// left.
var rewrites = map[string]func(p, stored uint32) uint32{
	// CTRL.RST resets the device; the reset ends a GIO master disable
	// and a PHY reset.
	"CTRL": func(p, v uint32) uint32 {
		if p&CTRL_RST != 0 {
			return v &^ (CTRL_GIO_MASTER_DISABLE | CTRL_PHY_RST)
		}
		return v
	},
}

// TestRegConformance walks the table: each row's reset value, then writes
// of every pattern with read-back of (pattern & mask) | (bits outside the
// mask at reset), write-1-to-clear bits, clear-on-read counters,
// write-only registers, set and clear aliases, and through the legacy
// aliases. Rows whose read is computed or whose write is a function of its
// own have a check of their own (computedChecks); a new one without fails.
func TestRegConformance(t *testing.T) {
	for i := range regTable {
		r := &regTable[i]
		t.Run(r.name, func(t *testing.T) {
			if r.read == readFunc || r.write == writeFunc {
				check, ok := computedChecks[r.name]
				if !ok {
					t.Fatalf("%s is computed or written by a function and has no conformance check", r.name)
				}
				check(t, newTestNIC(t))
				return
			}
			for _, d := range conformDwords(r) {
				conformDword(t, newTestNIC(t), r, d)
			}
		})
	}
}

func conformDword(t *testing.T, n *NIC, r *regRow, d uint32) {
	t.Helper()
	off := r.off + 4*d
	m := r.maskAt(d)
	reset := r.reset
	if r.off == RA && d < 2 {
		// Reset loads RAL0/RAH0 from the NVM's address.
		reset = uint32(n.perm[0]) | uint32(n.perm[1])<<8 | uint32(n.perm[2])<<16 | uint32(n.perm[3])<<24
		if d == 1 {
			reset = uint32(n.perm[4]) | uint32(n.perm[5])<<8 | RAH_AV
		}
	}
	switch r.read {
	case readStored, readClears:
		if got := n.ReadReg(off); got != reset {
			t.Errorf("%s[%d] = %#x after reset, want %#x", r.name, d, got, reset)
		}
	case readZero:
		if got := n.ReadReg(off); got != 0 {
			t.Errorf("write-only %s reads %#x", r.name, got)
		}
	}
	switch r.write {
	case writeStore:
		for _, p := range conformPatterns {
			before := stored(n, off)
			n.WriteReg(off, p)
			want := (before&^m | p&m) &^ (p & r.w1c)
			if fix, ok := rewrites[r.name]; ok {
				want = fix(p, want)
			}
			if r.read == readClears {
				want = 0 // nothing to store: counters are read-only
			}
			if got := n.ReadReg(off); r.read != readZero && got != want {
				t.Errorf("%s[%d]: wrote %#08x over %#08x, read %#08x, want %#08x", r.name, d, p, before, got, want)
			}
		}
		if r.w1c != 0 {
			for _, p := range conformPatterns {
				store(n, off, allBits)
				n.WriteReg(off, p)
				if got, want := n.ReadReg(off), (allBits&^m|p&m)&^(p&r.w1c); got != want {
					t.Errorf("%s: wrote %#08x over all ones, read %#08x, want %#08x (write-1-to-clear %#x)", r.name, p, got, want, r.w1c)
				}
			}
		}
	case writeSet, writeClear:
		tgt := &regTable[regIdx.row[r.target>>2]-1]
		if r.write == writeClear {
			store(n, r.target, tgt.mask)
		}
		for _, p := range conformPatterns {
			before := stored(n, r.target)
			n.WriteReg(off, p)
			got := stored(n, r.target)
			want := before | p&m
			if r.write == writeClear {
				want = before &^ (p & m)
			}
			if got&m != want&m {
				t.Errorf("%s: wrote %#08x, %s holds %#08x, want %#08x in %#08x", r.name, p, tgt.name, got, want&m, m)
			}
			if got&^tgt.mask != tgt.reset&^tgt.mask {
				t.Errorf("%s: wrote %#08x, %s holds %#08x outside its implemented bits %#08x", r.name, p, tgt.name, got, tgt.mask)
			}
		}
	}
	if r.read == readClears {
		store(n, off, 0xDEADBEEF)
		if got := n.ReadReg(off); got != 0xDEADBEEF {
			t.Errorf("%s reads %#x, holds 0xDEADBEEF", r.name, got)
		}
		if got := n.ReadReg(off); got != 0 {
			t.Errorf("%s reads %#x after a read, want 0 (clear on read)", r.name, got)
		}
	}
}

// TestRegAliasesConform: a write through each legacy alias reaches the
// canonical register, and a read through it sees the same value.
func TestRegAliasesConform(t *testing.T) {
	n := newTestNIC(t)
	const p = 0x5A5A5A50 // no reset, no flush, no GIO master disable
	for _, a := range buildRegAliases() {
		for _, i := range []uint32{0, a.n - 1} {
			r := &regTable[regIdx.row[a.to/4+i]-1]
			n.WriteReg(a.off+4*i, p)
			want := p&r.maskAt(a.to/4+i-r.off/4) | r.reset&^r.maskAt(a.to/4+i-r.off/4)
			if got := n.ReadReg(a.to + 4*i); got != want {
				t.Errorf("alias %#x of %s: wrote %#x, %s reads %#x, want %#x", a.off+4*i, r.name, p, r.name, got, want)
			}
			if got := n.ReadReg(a.off + 4*i); got != want {
				t.Errorf("alias %#x reads %#x, want %#x", a.off+4*i, got, want)
			}
		}
	}
}

// TestReservedRegistersReadZero: every dword no row or alias covers reads
// as zero, whatever was written to it, as the part's reserved space does.
func TestReservedRegistersReadZero(t *testing.T) {
	n := newTestNIC(t)
	for d := uint32(0); d < bar0Size/4; d++ {
		if regIdx.row[d] != 0 {
			continue
		}
		n.WriteReg(4*d, allBits)
		if got := n.ReadReg(4 * d); got != 0 {
			t.Fatalf("reserved %#05x reads %#x", 4*d, got)
		}
	}
}

// partFacts are the implemented bits of registers the drivers rely on, as
// the 82574L datasheet and the drivers give them, kept apart from the
// table so that a row drifting from the part fails here. (The registers of
// Linux's ethtool register test are checked by TestSelfTestRegisterMasks.)
var partFacts = []struct {
	name string
	mask uint32
}{
	// Interrupt causes: bits 0-9 (Linux's interrupt test forces each,
	// 3, 5 and 8 included), TXD_LOW, SRPD, ACK, MNG, the four queue
	// causes and OTHER. ICR adds INT_ASSERTED.
	{"ICS", 0x01F783FF}, {"IMS", 0x01F783FF}, {"IMC", 0x01F783FF}, {"ICR", 0x81F783FF},
	{"EIAC", 0x01F00000},   // the five MSI-X causes
	{"IVAR", 0x800FFFFF},   // five 4-bit fields and INT_ALL_WB
	{"ITR", 0x0000FFFF},    // interval in 256 ns units
	{"EITR", 0x0000FFFF},   // the same per vector
	{"PBACLR", 0x0000001F}, // one bit per MSI-X vector
	{"RADV", 0x0000FFFF}, {"TADV", 0x0000FFFF}, {"RAID", 0x0000FFFF},
	{"RDTR", 0x0000FFFF}, {"TIDV", 0x0000FFFF}, // FPD (bit 31) self-clears
	{"RA", 0xFFFFFFFF},            // RAL; RAH is 0x8003FFFF
	{"CTRL", allBits &^ CTRL_RST}, // RST self-clears
	{"CTRL_EXT", allBits &^ (CTRL_EXT_ASDCHK | CTRL_EXT_EE_RST)},
}

func TestRegPartFacts(t *testing.T) {
	for _, f := range partFacts {
		r, ok := rowByName(f.name)
		if !ok {
			t.Errorf("no row %s", f.name)
			continue
		}
		if r.mask != f.mask {
			t.Errorf("%s implements %#08x, the part %#08x", f.name, r.mask, f.mask)
		}
	}
	if r, _ := rowByName("RA"); r.maskOdd != rahMask || rahMask != 0x8003FFFF {
		t.Errorf("RAH implements %#08x, the part 0x8003FFFF", r.maskOdd)
	}
}

// computedChecks check the rows whose read is computed or whose write is
// the row's own function, each as the part behaves.
var computedChecks = map[string]func(t *testing.T, n *NIC){
	"STATUS": func(t *testing.T, n *NIC) {
		// Linux's register test: writing the toggle bits changes none
		// of them.
		const toggle = 0x7FFFF033
		before := n.ReadReg(STATUS)
		n.WriteReg(STATUS, toggle)
		if got := n.ReadReg(STATUS); got&toggle != before&toggle {
			t.Errorf("STATUS %#x after writing %#x, was %#x", got, toggle, before)
		}
		if before != statusReset|STATUS_FD|STATUS_SPEED_1000|STATUS_GIO_MASTER_ENABLE {
			t.Errorf("STATUS reads %#x after reset", before)
		}
		// PHYRA: set by a PHY reset, cleared by writing 0.
		n.WriteReg(CTRL, ctrlReset|CTRL_PHY_RST)
		if n.ReadReg(STATUS)&STATUS_PHYRA == 0 {
			t.Error("no PHYRA after a PHY reset")
		}
		n.WriteReg(STATUS, STATUS_PHYRA)
		if n.ReadReg(STATUS)&STATUS_PHYRA == 0 {
			t.Error("PHYRA cleared by writing 1")
		}
		n.WriteReg(STATUS, 0)
		if n.ReadReg(STATUS)&STATUS_PHYRA != 0 {
			t.Error("PHYRA not cleared by writing 0")
		}
	},
	"ICR": func(t *testing.T, n *NIC) {
		n.WriteReg(ICS, allBits)
		if got := n.ReadReg(ICR); got != imsValid|ICR_INT_ASSERTED {
			t.Errorf("ICR reads %#x after ICS all ones, want the latched causes %#x", got, imsValid|ICR_INT_ASSERTED)
		}
		if got := n.ReadReg(ICR); got != 0 {
			t.Errorf("ICR reads %#x after a read", got)
		}
		n.WriteReg(IMS, ICR_RXT0)
		n.WriteReg(ICS, ICR_RXT0|ICR_TXDW)
		n.WriteReg(ICR, ICR_TXDW) // write 1 to clear
		if got := n.ReadReg(ICS); got != ICR_RXT0|ICR_INT_ASSERTED {
			t.Errorf("ICR %#x after clearing TXDW", got)
		}
	},
	"ICS": func(t *testing.T, n *NIC) {
		for _, p := range conformPatterns {
			n.WriteReg(ICS, p)
			want := p & imsValid
			if want != 0 {
				want |= ICR_INT_ASSERTED
			}
			if got := n.ReadReg(ICS); got != want {
				t.Errorf("ICS: wrote %#x, reads %#x, want %#x", p, got, want)
			}
			if got := n.ReadReg(ICS); got != want {
				t.Errorf("ICS read cleared ICR: %#x", got)
			}
			n.ReadReg(ICR)
		}
	},
	"SWSM": func(t *testing.T, n *NIC) {
		if got := n.ReadReg(SWSM); got != 0 {
			t.Errorf("SWSM reads %#x after reset", got)
		}
		if got := n.ReadReg(SWSM); got != SWSM_SMBI {
			t.Errorf("SWSM reads %#x: the first read took SMBI", got)
		}
		n.WriteReg(SWSM, allBits)
		if got := n.ReadReg(SWSM); got != 0x3 {
			t.Errorf("SWSM reads %#x after writing all ones, want 0x3", got)
		}
		n.WriteReg(SWSM, 0)
		if got := n.ReadReg(SWSM); got != 0 {
			t.Errorf("SWSM reads %#x after release", got)
		}
	},
	"EECD": func(t *testing.T, n *NIC) {
		if got := n.ReadReg(EECD); got != eecdReset {
			t.Errorf("EECD reads %#x after reset", got)
		}
		n.WriteReg(EECD, EECD_REQ)
		if got := n.ReadReg(EECD); got != eecdReset|EECD_REQ|EECD_GNT {
			t.Errorf("EECD %#x after a request", got)
		}
		n.WriteReg(EECD, allBits&^EECD_REQ)
		if got := n.ReadReg(EECD); got&(eecdReset|EECD_GNT|eecdFlash|eecdSizeEx) != eecdReset {
			t.Errorf("EECD %#x: presence, size or grant bits written", got)
		}
	},
	"EERD": func(t *testing.T, n *NIC) {
		if got := n.ReadReg(EERD); got != EERD_DONE {
			t.Errorf("EERD reads %#x after reset", got)
		}
		n.WriteReg(EERD, EERD_START) // word 0: MAC bytes 0-1
		want := EERD_DONE | uint32(n.perm[0])<<16 | uint32(n.perm[1])<<24
		if got := n.ReadReg(EERD); got != want {
			t.Errorf("EERD %#x, want %#x", got, want)
		}
	},
	"EEWR": func(t *testing.T, n *NIC) {
		n.WriteReg(EEWR, 0xBEEF<<16|0x30<<eerdAddrShift|EERD_START)
		n.WriteReg(EERD, 0x30<<eerdAddrShift|EERD_START)
		if got := n.ReadReg(EERD) >> 16; got != 0xBEEF {
			t.Errorf("NVM word 0x30 reads %#x after EEWR", got)
		}
		if got := n.ReadReg(EEWR); got&EERD_DONE == 0 {
			t.Errorf("EEWR %#x without DONE", got)
		}
	},
	"GORC": stat64Check("GORC"), "GOTC": stat64Check("GOTC"),
	"TOR": stat64Check("TOR"), "TOT": stat64Check("TOT"),
	"MDIC": func(t *testing.T, n *NIC) {
		if got := n.ReadReg(MDIC); got != MDIC_READY {
			t.Errorf("MDIC reads %#x after reset", got)
		}
		n.WriteReg(MDIC, MDIC_OP_READ|phyAddr<<mdicPHYShift|phyID1<<mdicRegShift)
		if got := n.ReadReg(MDIC); got&(MDIC_READY|MDIC_ERROR|MDIC_DATA_MASK) != MDIC_READY|bmeID1 {
			t.Errorf("MDIC %#x reading the PHY id", got)
		}
		n.WriteReg(MDIC, MDIC_OP_READ|2<<mdicPHYShift)
		if got := n.ReadReg(MDIC); got&MDIC_ERROR == 0 {
			t.Errorf("MDIC %#x: PHY address 2 answered", got)
		}
	},
}

// stat64Check checks a 64-bit counter: its low half reads without
// clearing, its high half clears both.
func stat64Check(name string) func(t *testing.T, n *NIC) {
	return func(t *testing.T, n *NIC) {
		r, _ := rowByName(name)
		if got := n.ReadReg(r.off) | n.ReadReg(r.off+4); got != 0 {
			t.Errorf("%s reads %#x after reset", name, got)
		}
		store(n, r.off, 0x11111111)
		store(n, r.off+4, 0x22)
		n.WriteReg(r.off, 0)
		n.WriteReg(r.off+4, 0) // read-only
		if got := n.ReadReg(r.off); got != 0x11111111 {
			t.Errorf("%sL reads %#x", name, got)
		}
		if got := n.ReadReg(r.off + 4); got != 0x22 {
			t.Errorf("%sH reads %#x", name, got)
		}
		if lo, hi := n.ReadReg(r.off), n.ReadReg(r.off+4); lo|hi != 0 {
			t.Errorf("%s = %#x:%#x after reading its high half", name, hi, lo)
		}
	}
}

// TestRegStateConformance: every value a guest write leaves in a register
// the registers section carries passes the load check and comes back
// after a save and restore, and each register a guest can change travels
// in some section (TestRegTableWalk) — so the row's home and check never
// refuse a state the part could be in.
func TestRegStateConformance(t *testing.T) {
	for i := range regTable {
		r := &regTable[i]
		if r.home != secRegisters {
			continue
		}
		src := newTestNIC(t)
		for _, d := range conformDwords(r) {
			for _, p := range conformPatterns {
				src.WriteReg(r.off+4*d, p)
				src.mu.Lock()
				s := src.saveRegisters()
				src.mu.Unlock()
				if err := s.Validate(); err != nil {
					t.Errorf("%s[%d] after writing %#08x: its state is refused: %v", r.name, d, p, err)
					continue
				}
				dst := newTestNIC(t)
				dst.mu.Lock()
				dst.restoreRegisters(&s)
				dst.mu.Unlock()
				if got, want := stored(dst, r.off+4*d), stored(src, r.off+4*d); got != want {
					t.Errorf("%s[%d] after writing %#08x: restored %#08x, saved %#08x", r.name, d, p, got, want)
				}
			}
		}
	}
}
