package e1000e

// A descriptor ring is its registers: a base address (BAL, BAH), a length
// in bytes (LEN), a head (H) and a tail (T), head and tail counting slots
// of a fixed size. ring names those five registers, so that the engines,
// the state save, the half-sent packet and the load all read a ring the
// same way instead of each rebuilding it from register offsets.
type ring struct {
	bal, bah, len, head, tail uint32 // BAR0 offsets of the registers
	// slotShift is log2 of the bytes of one head or tail step: a shift,
	// not a division, on the engines' path.
	slotShift uint32
}

// A queue's registers sit at fixed offsets from its base-low register, and
// queue 1's registers 0x100 above queue 0's, for receive and transmit alike.
const (
	ringBAH   = 0x04
	ringLEN   = 0x08
	ringHead  = 0x10
	ringTail  = 0x18
	queueGap  = 0x100
	numQueues = 2
)

// ringDir is the queues of one direction: where queue 0's registers
// start and the slot size they all count in.
type ringDir struct{ bal0, slotShift uint32 }

// rxRings are the receive queues; RDH and RDT count 16-byte slots, even
// for packet split, whose descriptors take two.
func rxRings() ringDir { return ringDir{RDBAL0, rxRingSlotShift} }

// txRings are the transmit queues.
func txRings() ringDir { return ringDir{TDBAL0, txDescShift} }

// queue is queue q's ring. A pointer, built where it is used (queue is
// inlined, the ring does not escape): a ring copied whole would be read
// back with wider loads than it was stored with, which stalls the CPU on
// the engines' path.
func (d ringDir) queue(q int) *ring {
	b := d.bal0 + uint32(q)*queueGap
	return &ring{bal: b, bah: b + ringBAH, len: b + ringLEN, head: b + ringHead, tail: b + ringTail, slotShift: d.slotShift}
}

// rxQueue is receive queue q.
func rxQueue(q int) *ring { return rxRings().queue(q) }

// txQueue is transmit queue q.
func txQueue(q int) *ring { return txRings().queue(q) }

// view reads the ring's registers into v. Called with n.mu held. It
// fills v in place, field by field, and is small enough to inline: a
// ringView built and then copied whole is read back, on the engines' hot
// path, with wider loads than it was stored with, which stalls the CPU.
func (r *ring) view(n *NIC, v *ringView) {
	const m = bar0Size/4 - 1
	v.base = uint64(n.mac[r.bah>>2&m])<<32 | uint64(n.mac[r.bal>>2&m])
	v.size = n.mac[r.len>>2&m] >> r.slotShift
	v.head = n.mac[r.head>>2&m]
	v.tail = n.mac[r.tail>>2&m]
	v.slotShift = r.slotShift
}

// setHead moves the ring's head register: the engines' commit.
func (r *ring) setHead(n *NIC, h uint32) { n.setReg(r.head, h) }

// ringView is a ring as its registers stood when read: the engines work on
// a copy, moving head as they consume, and commit it with setHead.
type ringView struct {
	base             uint64
	size, head, tail uint32 // in slots
	slotShift        uint32 // log2 of a slot's bytes
}

// usable reports whether the registers describe a ring the NIC can walk:
// a non-empty one with head and tail inside it. A guest may write any
// value to them; the engines do nothing until they agree.
func (v *ringView) usable() bool {
	return v.size > 0 && v.head < v.size && v.tail < v.size
}

// avail is how many slots lie from head up to tail: on a transmit ring
// the descriptors the guest has handed over and the NIC not yet consumed,
// on a receive ring the buffers the NIC may fill. 0 for a ring that is not
// usable.
func (v *ringView) avail() uint32 {
	if !v.usable() {
		return 0
	}
	return (v.tail + v.size - v.head) % v.size
}

// addr is the guest address of slot i.
func (v *ringView) addr(i uint32) uint64 { return v.base + uint64(i)<<v.slotShift }

// spans is where count slots from head lie in guest memory: one run, or
// two when they wrap around the end of the ring.
func (v *ringView) spans(count uint32) []descSpan {
	if count == 0 {
		return []descSpan{}
	}
	first := min(count, v.size-v.head)
	s := []descSpan{{Addr: v.addr(v.head), Len: first << v.slotShift}}
	if rest := count - first; rest > 0 {
		s = append(s, descSpan{Addr: v.base, Len: rest << v.slotShift})
	}
	return s
}
