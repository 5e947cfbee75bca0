package e1000e

import "fmt"

// The rx-ring and tx-ring sections: each queue's ring registers.

// ringState is one queue's ring registers: base, length in bytes, head and
// tail.
type ringState struct {
	Base uint64 `msgpack:"base,omitempty"`
	Len  uint32 `msgpack:"len,omitempty"`
	Head uint32 `msgpack:"head,omitempty"`
	Tail uint32 `msgpack:"tail,omitempty"`
}

// ringsState is a ring section: every queue of one direction.
type ringsState struct {
	Queues []ringState `msgpack:"queues"`
}

// save reads the ring's registers. Called with n.mu held.
func (r *ring) save(n *NIC) ringState {
	var v ringView
	r.view(n, &v)
	return ringState{Base: v.base, Len: n.reg(r.len), Head: v.head, Tail: v.tail}
}

// restore writes the ring's registers from a checked ringState. Called
// with n.mu held.
func (r *ring) restore(n *NIC, s ringState) {
	n.setReg(r.bal, uint32(s.Base))
	n.setReg(r.bah, uint32(s.Base>>32))
	n.setReg(r.len, s.Len)
	n.setReg(r.head, s.Head)
	n.setReg(r.tail, s.Tail)
}

// loaded is the ring as the registers saved in s describe it.
func (r *ring) loaded(s ringState) ringView {
	return ringView{base: s.Base, size: s.Len >> r.slotShift, head: s.Head, tail: s.Tail, slotShift: r.slotShift}
}

// check refuses values no guest write could have left in the registers.
// A head or tail beyond the ring's length is one a guest can write (the
// engines leave such a ring idle, as the part does until the guest fixes
// it), so it loads as it was: refusing it would let a guest stop its own
// migration, and a live upgrade of its server.
func (r *ring) check(s ringState) error {
	if s.Base&0xF != 0 {
		return fmt.Errorf("base %#x not 16-byte aligned", s.Base)
	}
	if s.Len&^dlenMask != 0 {
		return fmt.Errorf("length %d is not a multiple of 128 up to %d", s.Len, dlenMask)
	}
	if s.Head > ringIdxMask || s.Tail > ringIdxMask {
		return fmt.Errorf("head %d or tail %d beyond %d", s.Head, s.Tail, ringIdxMask)
	}
	return nil
}

// saveRings saves every queue of one direction. Called with n.mu held.
func (n *NIC) saveRings(d ringDir) *ringsState {
	s := &ringsState{Queues: make([]ringState, numQueues)}
	for q := range s.Queues {
		s.Queues[q] = d.queue(q).save(n)
	}
	return s
}

// check validates every queue of a ring section.
func (s *ringsState) check(d ringDir) error {
	if len(s.Queues) != numQueues {
		return fmt.Errorf("%d queues, want %d", len(s.Queues), numQueues)
	}
	for q, r := range s.Queues {
		if err := d.queue(q).check(r); err != nil {
			return fmt.Errorf("queue %d: %w", q, err)
		}
	}
	return nil
}

// restoreRings writes every queue of one direction from a checked
// section. Called with n.mu held.
func (n *NIC) restoreRings(d ringDir, s *ringsState) {
	for q, r := range s.Queues {
		d.queue(q).restore(n, r)
	}
}
