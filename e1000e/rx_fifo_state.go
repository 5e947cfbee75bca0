package e1000e

import "fmt"

// The rx-fifo section (optional): frames the NIC accepted but could not
// yet write to the ring, the 82574's receive packet buffer. A destination
// that drops it loses those frames, as a link would.

// rxFIFOMaxBytes bounds the frames the rx-fifo section carries; beyond it
// frames are left behind, as a full packet buffer drops them.
const rxFIFOMaxBytes = 2 << 20

// rxFIFOState is the backlog's frames, oldest first.
type rxFIFOState struct {
	Frames [][]byte `msgpack:"frames"`
}

// saveRXFIFO fills an rxFIFOState. Called with n.mu held.
func (n *NIC) saveRXFIFO() rxFIFOState {
	var s rxFIFOState
	total := 0
	for k := 0; k < n.rx.blN; k++ {
		f := n.rx.backlog[(n.rx.blHead+k)%rxBacklogMax]
		if total+len(f) > rxFIFOMaxBytes {
			n.log.Warn("e1000e: receive FIFO too large to migrate whole; later frames stay behind", "frames", n.rx.blN-k)
			break
		}
		total += len(f)
		s.Frames = append(s.Frames, f)
	}
	return s
}

// Validate implements migration.Validator.
func (s *rxFIFOState) Validate() error {
	if len(s.Frames) > rxBacklogMax {
		return fmt.Errorf("%d frames, at most %d", len(s.Frames), rxBacklogMax)
	}
	for i, f := range s.Frames {
		if len(f) == 0 || len(f) > rxMaxFrame {
			return fmt.Errorf("frame %d of %d bytes", i, len(f))
		}
	}
	return nil
}

// restoreRXFIFO applies a validated section: the frames wait in the
// backlog, oldest first. Called with n.mu held.
func (n *NIC) restoreRXFIFO(s *rxFIFOState) {
	n.rx.blHead, n.rx.blN = 0, 0
	for _, f := range s.Frames {
		slot := &n.rx.backlog[n.rx.blN]
		*slot = append((*slot)[:0], f...)
		n.rx.blN++
	}
}
