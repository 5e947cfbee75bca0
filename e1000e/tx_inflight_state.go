package e1000e

import "fmt"

// The tx-inflight section: a packet partly in the transmit ring.

// txInflightState describes a packet whose descriptors the NIC has seen
// but not sent. The NIC consumes a packet's descriptors only once its EOP
// descriptor is in the ring, so the packet is exactly the Count
// descriptors from Head, which lie in guest memory at Descs (one span, or
// two when they wrap around the ring): the destination re-reads them and
// sends the packet once the rest arrives. Discard says the NIC is dropping
// the rest of an oversized packet up to its EOP.
type txInflightState struct {
	Head    uint32     `msgpack:"head"`
	Count   uint32     `msgpack:"count"`
	Descs   []descSpan `msgpack:"descs"`
	Discard bool       `msgpack:"discard,omitempty"`
}

// descSpan is a run of descriptors in guest memory.
type descSpan struct {
	Addr uint64 `msgpack:"addr"`
	Len  uint32 `msgpack:"len"`
}

// saveTXInflight reports the packet the NIC holds between TDH and TDT, if
// any. Called with n.mu held.
func (n *NIC) saveTXInflight() (txInflightState, bool) {
	var r ringView
	txQueue(0).view(n, &r)
	// A step under way without n.mu has committed nothing: ctx and
	// discard are still as they stand at TDH.
	s := txInflightState{Head: r.head, Count: r.avail(), Discard: n.tx.discard}
	s.Descs = r.spans(s.Count)
	return s, s.Count > 0 || s.Discard
}

// Validate implements migration.Validator.
func (s *txInflightState) Validate() error {
	if s.Count > ringIdxMask || len(s.Descs) > 2 {
		return fmt.Errorf("%d descriptors in %d spans in flight", s.Count, len(s.Descs))
	}
	return nil
}

// checkRing refuses a packet the loaded transmit ring does not hold: it
// must start at the ring's head, run up to its tail, and lie where the
// ring's descriptors lie, so the destination reads exactly the source's.
func (s *txInflightState) checkRing(r ringView) error {
	if s.Head != r.head {
		return fmt.Errorf("head %d, the ring's is %d", s.Head, r.head)
	}
	if s.Count != r.avail() {
		return fmt.Errorf("%d descriptors, the ring holds %d from its head", s.Count, r.avail())
	}
	want := r.spans(s.Count)
	if len(want) != len(s.Descs) {
		return fmt.Errorf("%d descriptor spans, the ring gives %d", len(s.Descs), len(want))
	}
	for i, sp := range want {
		if s.Descs[i] != sp {
			return fmt.Errorf("descriptors at %#x+%d, the ring has them at %#x+%d",
				s.Descs[i].Addr, s.Descs[i].Len, sp.Addr, sp.Len)
		}
	}
	return nil
}

// restoreTXInflight applies a checked section, or none (nil): the packet
// itself is in the ring the tx-ring section restored, and is sent again
// from its first descriptor. Called with n.mu held.
func (n *NIC) restoreTXInflight(s *txInflightState) {
	n.tx.discard = s != nil && s.Discard
}
