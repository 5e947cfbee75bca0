package netdev

import (
	"sync"
	"sync/atomic"
)

// pairDepth is how many frames may wait for a pair end's receiver before
// further frames are dropped, as a real link drops when nobody keeps up.
const pairDepth = 256

// PairEnd is one end of an in-memory link made by NewPair: frames sent on
// one end are received by the other. Delivery runs on the receiving end's
// own goroutine, so two NICs joined by a pair never call into each other
// while holding their own locks. Frames sent to an end that has not been
// started yet wait (up to a queue depth); frames beyond it are dropped.
type PairEnd struct {
	peer   *PairEnd
	life   lifecycle
	queue  chan *[]byte // frames waiting for this end's receiver
	freeMu sync.Mutex
	// free holds the buffers frames are copied into. It is a stack, so the
	// most recently used (already grown, cache-warm) buffer is reused first.
	free    []*[]byte
	closing chan struct{}
	dropped atomic.Uint64
}

var _ Backend = (*PairEnd)(nil)

// NewPair returns the two ends of an in-memory link, for tests.
func NewPair() (*PairEnd, *PairEnd) {
	a, b := newPairEnd(), newPairEnd()
	a.peer, b.peer = b, a
	return a, b
}

func newPairEnd() *PairEnd {
	e := &PairEnd{
		queue:   make(chan *[]byte, pairDepth),
		free:    make([]*[]byte, 0, pairDepth),
		closing: make(chan struct{}),
	}
	for range pairDepth {
		// Buffers grow to the largest frame they carry, then are reused.
		e.free = append(e.free, new([]byte))
	}
	return e
}

// getBuf takes a free buffer, or nil when all are queued.
func (e *PairEnd) getBuf() *[]byte {
	e.freeMu.Lock()
	defer e.freeMu.Unlock()
	n := len(e.free)
	if n == 0 {
		return nil
	}
	b := e.free[n-1]
	e.free = e.free[:n-1]
	return b
}

func (e *PairEnd) putBuf(b *[]byte) {
	e.freeMu.Lock()
	e.free = append(e.free, b)
	e.freeMu.Unlock()
}

// Send copies frame to the other end's queue. A frame the other end has no
// room for, or that is sent after it closed, is dropped and counted there.
func (e *PairEnd) Send(frame []byte) error {
	if err := checkFrame(frame); err != nil {
		return err
	}
	if e.life.isClosed() {
		return ErrClosed
	}
	p := e.peer
	if p.life.isClosed() {
		p.dropped.Add(1)
		return nil
	}
	buf := p.getBuf()
	if buf == nil {
		p.dropped.Add(1)
		return nil
	}
	*buf = append((*buf)[:0], frame...)
	p.queue <- buf // never blocks: at most pairDepth buffers exist
	return nil
}

// Dropped is how many frames meant for this end were dropped.
func (e *PairEnd) Dropped() uint64 { return e.dropped.Load() }

// Start delivers the frames sent by the other end to rx until Close.
func (e *PairEnd) Start(rx Receiver) error {
	return e.life.start(func() {
		for {
			select {
			case <-e.closing:
				return
			case buf := <-e.queue:
				// Checked again so a Close racing with a ready frame wins.
				select {
				case <-e.closing:
					return
				default:
				}
				rx.Receive(*buf)
				e.putBuf(buf)
			}
		}
	})
}

// Close stops delivery; frames still queued are discarded.
func (e *PairEnd) Close() error {
	return e.life.close(func() error {
		close(e.closing)
		return nil
	})
}
