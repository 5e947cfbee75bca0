package netdev

import (
	"errors"
	"sync"
)

// MaxFrameSize bounds every frame a backend sends or delivers. It matches
// QEMU's network buffer (64 KiB plus 4 KiB of slack), so frames QEMU's own
// backends carry fit, and a hostile length prefix cannot make us allocate more.
const MaxFrameSize = 65536 + 4096

// ErrClosed is returned by Send and Start once a backend is closed.
var ErrClosed = errors.New("netdev: backend closed")

// ErrFrameTooLarge is returned by Send for a frame above MaxFrameSize.
var ErrFrameTooLarge = errors.New("netdev: frame larger than MaxFrameSize")

// errStarted is returned by a second Start.
var errStarted = errors.New("netdev: backend already started")

// lifecycle runs a backend's single receive goroutine and makes Close wait
// for it, which is what guarantees no Receive once Close has returned.
type lifecycle struct {
	mu      sync.Mutex
	started bool
	closed  bool
	done    chan struct{}
}

// start runs fn on a new goroutine unless the backend is closed or started.
func (l *lifecycle) start(fn func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.started {
		return errStarted
	}
	l.started = true
	l.done = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		fn()
	}(l.done)
	return nil
}

// isClosed reports whether close has begun.
func (l *lifecycle) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// close marks the backend closed, calls stop (which must make the receive
// goroutine return, typically by closing its file), then waits for that
// goroutine. A second close does nothing. It must not be called from within
// Receive, since it waits for Receive to return.
func (l *lifecycle) close(stop func() error) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	done := l.done
	l.mu.Unlock()
	err := stop()
	if done != nil {
		<-done
	}
	return err
}

// checkFrame validates a frame handed to Send.
func checkFrame(frame []byte) error {
	if len(frame) > MaxFrameSize {
		return ErrFrameTooLarge
	}
	return nil
}
