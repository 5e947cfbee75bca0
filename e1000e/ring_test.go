package e1000e

import (
	"math/rand/v2"
	"testing"
)

// The descriptors from head lie where spans says: in order, inside the
// ring, one run unless they wrap, and as many as asked.
func TestRingSpans(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 10000; i++ {
		size := rng.Uint32N(512) + 1
		v := ringView{base: 0x10000, size: size, head: rng.Uint32N(size), tail: rng.Uint32N(size), slotShift: txDescShift}
		count := v.avail()
		spans := v.spans(count)
		var total uint32
		next := v.addr(v.head)
		for k, s := range spans {
			if s.Addr != next || s.Addr < v.base || s.Addr+uint64(s.Len) > v.addr(v.size) {
				t.Fatalf("ring %+v: span %d %+v", v, k, s)
			}
			total += s.Len
			next = v.base
		}
		if total != count*txDescSize || len(spans) > 2 || (len(spans) == 2) != (v.head+count > size) {
			t.Fatalf("ring %+v: %d descriptors in %+v", v, count, spans)
		}
	}
}

// A ring whose registers disagree is not walked.
func TestRingUsable(t *testing.T) {
	for _, c := range []struct {
		v    ringView
		want bool
	}{
		{ringView{size: 0}, false},
		{ringView{size: 8, head: 8}, false},
		{ringView{size: 8, tail: 9}, false},
		{ringView{size: 8, head: 7, tail: 0}, true},
	} {
		if got := c.v.usable(); got != c.want || (!got && c.v.avail() != 0) {
			t.Errorf("%+v: usable %v, avail %d", c.v, got, c.v.avail())
		}
	}
}

// Each queue's registers are where the 82574L has them.
func TestRingRegisters(t *testing.T) {
	for _, c := range []struct {
		r    *ring
		want [5]uint32
	}{
		{rxQueue(0), [5]uint32{RDBAL0, RDBAH0, RDLEN0, RDH0, RDT0}},
		{rxQueue(1), [5]uint32{RDBAL1, RDBAH1, RDLEN1, RDH1, RDT1}},
		{txQueue(0), [5]uint32{TDBAL0, TDBAH0, TDLEN0, TDH0, TDT0}},
		{txQueue(1), [5]uint32{TDBAL1, TDBAH1, TDLEN1, TDH1, TDT1}},
	} {
		if got := [5]uint32{c.r.bal, c.r.bah, c.r.len, c.r.head, c.r.tail}; got != c.want {
			t.Errorf("ring registers %#x, want %#x", got, c.want)
		}
	}
}
