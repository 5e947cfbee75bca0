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

// TestRegTableWalk checks the table's shape: sorted, no overlaps, aliases
// point into rows, every row within BAR0.
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

// TestResetValues reads each register after reset through the guest path
// (except those with read side effects) and compares with the table.
func TestResetValues(t *testing.T) {
	n := newTestNIC(t)
	for _, r := range regTable {
		if r.rd != rdPlain || r.rc || r.off == RA {
			continue
		}
		for d := uint32(0); d < r.n; d++ {
			if got := n.ReadReg(r.off + 4*d); got != r.reset {
				t.Errorf("%s[%d] = %#x after reset, want %#x", r.name, d, got, r.reset)
			}
		}
	}
}

// TestReadOnlyBitsHold writes all ones and all zeros to every plain
// register and checks that bits outside the write mask keep their value.
func TestReadOnlyBitsHold(t *testing.T) {
	n := newTestNIC(t)
	for _, r := range regTable {
		if r.wr != wrPlain && r.wr != wrReadOnly {
			continue
		}
		if r.rd != rdPlain || r.rc {
			continue
		}
		for _, v := range []uint32{0xFFFFFFFF, 0} {
			off := r.off
			before := n.ReadReg(off)
			n.WriteReg(off, v)
			got := n.ReadReg(off)
			want := before&^r.wmask | v&r.wmask
			want &^= v & r.w1c
			if got != want {
				t.Errorf("%s: wrote %#x over %#x, read %#x, want %#x", r.name, v, before, got, want)
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
		n.WriteReg(IMC, ICR_RXT0)
		_ = n.ReadReg(GPRC)
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
