package e1000e

import (
	"sort"
	"testing"
)

func newTestNIC(t testing.TB) *NIC {
	t.Helper()
	n, err := New(Config{RXFilterSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// knownHomes are the places a row's value can travel: a section of the
// state, or nowhere ("").
var knownHomes = map[string]bool{"": true, secRegisters: true, secInterrupts: true,
	secLink: true, secStats: true, secRXRing: true, secTXRing: true, secFilters: true}

// TestRegTableWalk checks the table's shape: sorted, no overlaps, aliases
// point into rows, every row within BAR0, and each row complete for its
// kinds: a computed read or a whole-write has its function, a set or
// clear its target, and a value a guest can change travels somewhere.
func TestRegTableWalk(t *testing.T) {
	rows := buildRegTable()
	if !sort.SliceIsSorted(rows, func(i, j int) bool { return rows[i].off < rows[j].off }) {
		for i := 1; i < len(rows); i++ {
			if rows[i].off < rows[i-1].off {
				t.Errorf("row %s (%#x) after %s (%#x)", rows[i].name, rows[i].off, rows[i-1].name, rows[i-1].off)
			}
		}
	}
	names := map[string]bool{}
	for i, r := range rows {
		if r.n == 0 || r.off%4 != 0 || r.off+4*r.n > bar0Size {
			t.Errorf("row %s: bad extent off=%#x n=%d", r.name, r.off, r.n)
		}
		if names[r.name] {
			t.Errorf("duplicate name %s", r.name)
		}
		names[r.name] = true
		if i > 0 {
			p := rows[i-1]
			if p.off+4*p.n > r.off {
				t.Errorf("row %s (%#x+%d) overlaps %s (%#x)", p.name, p.off, p.n, r.name, r.off)
			}
		}
		if (r.read == readFunc) != (r.readFn != nil) {
			t.Errorf("row %s: read kind %d with readFn %v", r.name, r.read, r.readFn != nil)
		}
		if r.write == writeFunc && r.effect == nil {
			t.Errorf("row %s: whole-write without an effect", r.name)
		}
		if r.write == writeSet || r.write == writeClear {
			if regIdx.row[r.target/4] == 0 || r.mask == 0 {
				t.Errorf("row %s: set or clear of %#x with mask %#x", r.name, r.target, r.mask)
			}
		} else if r.target != 0 {
			t.Errorf("row %s: a target without a set or clear", r.name)
		}
		if !knownHomes[r.home] {
			t.Errorf("row %s: unknown home %q", r.name, r.home)
		}
		holds := r.write == writeStore && (r.mask|r.maskOdd|r.w1c) != 0 || r.write == writeFunc || r.read == readClears
		if holds && r.home == "" && r.read != readFunc {
			t.Errorf("row %s: a value the guest changes, carried by no section", r.name)
		}
		if r.home == secRegisters && !holds && r.read != readFunc {
			t.Errorf("row %s: a constant in the registers section", r.name)
		}
		if r.legacy&r.mask != 0 && r.maskOdd == 0 {
			t.Errorf("row %s: legacy bits %#x inside the mask", r.name, r.legacy)
		}
	}
	for _, a := range buildRegAliases() {
		for i := uint32(0); i < a.n; i++ {
			d := a.off/4 + i
			for _, r := range rows {
				if d >= r.off/4 && d < r.off/4+r.n {
					t.Errorf("alias %#x collides with row %s", a.off+4*i, r.name)
				}
			}
			if regIdx.row[(a.to/4)+i] == 0 {
				t.Errorf("alias %#x points at no register", a.off+4*i)
			}
		}
	}
}

func TestUnknownOffsetsReadZero(t *testing.T) {
	n := newTestNIC(t)
	for _, off := range []uint32{0x0C, 0x3C, 0x1FFFC, 0x7000, 0xFFF0} {
		n.WriteReg(off, 0xDEADBEEF)
		if got := n.ReadReg(off); got != 0 {
			t.Errorf("unknown %#x reads %#x", off, got)
		}
	}
}

func TestAliases(t *testing.T) {
	n := newTestNIC(t)
	n.WriteReg(0x110, 0x12345670) // legacy RDBAL
	if got := n.ReadReg(RDBAL0); got != 0x12345670 {
		t.Errorf("RDBAL0 = %#x via alias", got)
	}
	n.WriteReg(TDLEN0, 0x1000)
	if got := n.ReadReg(0x428); got != 0x1000 {
		t.Errorf("legacy TDLEN = %#x", got)
	}
	n.WriteReg(VFTA+4*5, 0xAA)
	if got := n.ReadReg(0x600 + 4*5); got != 0xAA {
		t.Errorf("legacy VFTA[5] = %#x", got)
	}
}

func TestRegisterAccessAllocs(t *testing.T) {
	n := newTestNIC(t)
	allocs := testing.AllocsPerRun(1000, func() {
		n.WriteReg(RDBAL0, 0x1000)
		_ = n.ReadReg(STATUS)
		_ = n.ReadReg(ICR)
		n.WriteReg(IMS, ICR_RXT0)
		n.WriteReg(ICS, ICR_RXT0)
		n.WriteReg(IMC, ICR_RXT0)
		_ = n.ReadReg(GPRC)
		_ = n.ReadReg(GORCH)
		_ = n.ReadReg(SWSM)
		n.WriteReg(CTRL, ctrlReset)
	})
	if allocs != 0 {
		t.Errorf("register access allocates %.1f times", allocs)
	}
}

func BenchmarkRegRead(b *testing.B) {
	n := newTestNIC(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = n.ReadReg(RDBAL0)
	}
}

func BenchmarkRegWrite(b *testing.B) {
	n := newTestNIC(b)
	b.ReportAllocs()
	for b.Loop() {
		n.WriteReg(RDBAL0, 0x1000)
	}
}
