package vfiouser

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
)

// Conn is the server side of one client connection.
//
// One goroutine reads messages in order: replies to the server's own
// DMA_READ/DMA_WRITE go to the goroutine that waits for them, commands are
// dispatched right there, so a register access costs no goroutine hop.
// Replies and server-initiated messages are written under one mutex, each
// with one system call when the socket takes it whole.
type Conn struct {
	srv  *Server
	dev  device.Device
	mig  device.Migratable // nil when the device does not migrate
	info device.Info
	log  *slog.Logger
	fd   int
	rd   *reader
	cur  message // the message being handled; a field so it is not allocated per message
	dma  *DMATable

	negotiated bool
	fatal      bool // the reply being sent is the last one
	maxXfer    uint32
	maxMsg     uint32

	warnedDMAFile bool // a map refused for its file type was logged

	wmu      sync.Mutex
	wbuf     []byte // the reply under construction: header, then payload
	replyFDs []int

	// Server-initiated DMA (msgdma.go).
	nextID  atomic.Uint32
	pmu     sync.Mutex
	pending map[uint16]*dmaWaiter
	// dmaHeld, while Serve is paused for a handover, keeps device
	// goroutines from sending DMA messages: the successor may use the
	// message ids from the exported NextID on, and reads the replies. It
	// is closed when the pause ends; dmaGone says the connection was
	// released to the successor. Both under pmu.
	dmaHeld     chan struct{}
	dmaGone     bool
	dmaTimeouts atomic.Uint64

	// Duplicates of the client's interrupt (trigger) eventfds by index and
	// vector, to release a device write stuck on one (releaseIRQs).
	irqMu   sync.Mutex
	irqDups map[[2]uint32]int
	irqGone bool // torn down: track nothing more
	// unmaskDup duplicates the INTx unmask eventfd (-1: none), only to
	// pass it on in a live upgrade.
	unmaskDup int
	// irqReleased says a full counter was emptied (logged at warn once).
	irqReleased bool
	irqPoll     []unix.PollFd // releaseIRQs' poll set, reused

	// Live upgrade (handover.go). wake interrupts the reader's wait;
	// parked receives once Serve has stopped between messages, and unpark
	// tells it to go on (false) or to end without touching the socket
	// (true). shared says the socket is another process's too, so ending
	// this connection must not shut it down.
	wake   int
	parked chan struct{}
	unpark chan bool
	shared atomic.Bool

	closeOnce    sync.Once
	teardownOnce sync.Once
	closed       chan struct{}
	done         chan struct{} // closed when teardown is complete
	serving      atomic.Bool
}

func newConn(s *Server, fd int) *Conn {
	c := &Conn{
		srv:       s,
		dev:       s.dev,
		info:      s.dev.Info(),
		log:       s.log,
		fd:        fd,
		dma:       NewDMATable(s.opts.DMALimits),
		maxXfer:   min(s.opts.MaxDataXferSize, DefaultMaxDataXferSize),
		maxMsg:    HeaderSize + versionFixedSize + maxVersionJSON,
		wbuf:      make([]byte, HeaderSize, readBufInitial),
		pending:   make(map[uint16]*dmaWaiter),
		unmaskDup: -1,
		closed:    make(chan struct{}),
		done:      make(chan struct{}),
	}
	c.mig, _ = s.dev.(device.Migratable)
	c.rd = newReader(fd, readBufInitial, int(c.maxMsg))
	c.parked, c.unpark = make(chan struct{}, 1), make(chan bool, 1)
	// Without its eventfd the connection serves as well; it only cannot
	// be paused for a handover (Server.Pause says so).
	c.wake = -1
	if w, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err == nil {
		c.wake = w
		c.rd.wake = w
	}
	c.dma.setMessenger(c)
	return c
}

// DMA is the guest memory table of this connection.
func (c *Conn) DMA() *DMATable { return c.dma }

// Serve handles messages until the client goes or the stream breaks, then
// tears the connection down (the device is disconnected). A client that
// simply closes its socket yields nil.
func (c *Conn) Serve() error {
	c.serving.Store(true)
	defer c.teardown()
	go c.watchIRQs()
	for {
		if err := c.Step(); err != nil {
			if errors.Is(err, errPaused) {
				c.holdDMA()
				c.parked <- struct{}{}
				release := <-c.unpark
				c.releaseDMA(release)
				if release {
					return nil
				}
				continue
			}
			if errors.Is(err, io.EOF) || c.isClosed() {
				return nil
			}
			c.log.Warn("vfio-user: dropping client", "err", err)
			return err
		}
	}
}

// Close ends the connection. When Serve runs, it returns and tears down;
// otherwise Close tears down itself, so a caller that steps the connection
// must not call Close while a Step is under way.
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.shutdown()
		if c.serving.Load() {
			// A handler stuck in an interrupt write would never see the
			// socket close: release it, also if it gets stuck only now.
			go c.releaseUntil(c.done, releaseBound)
		}
	})
	if !c.serving.Load() {
		c.teardown()
	}
}

// shutdown ends the socket for both ends, unless another process holds
// it too (a live upgrade): then only this process's descriptor goes, when
// teardown closes it.
func (c *Conn) shutdown() {
	if !c.shared.Load() {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// teardown disconnects the device (it stops using guest memory and drops
// the client's eventfds), then unmaps guest memory and closes the socket.
func (c *Conn) teardown() {
	c.teardownOnce.Do(func() {
		c.closeOnce.Do(func() { close(c.closed) })
		// A device goroutine blocked sending a DMA message to a client
		// that stopped reading gets an error now, and waiters are woken:
		// Disconnect waits for the device's accesses to end.
		c.shutdown()
		c.failPending()
		// Another goroutine of the device may be stuck writing to an
		// eventfd with the device's locks held, which Disconnect takes.
		disconnected := make(chan struct{})
		go c.releaseUntil(disconnected, releaseBound)
		c.dev.Disconnect()
		close(disconnected)
		c.dropIRQs()
		c.dma.setMessenger(nil)
		c.dma.UnmapAll()
		c.rd.close()
		unix.Close(c.fd)
		// Released first: Pause writes to the wake eventfd of the active
		// connection only.
		c.srv.release(c)
		if c.wake >= 0 {
			unix.Close(c.wake)
		}
		close(c.done)
	})
}

// Step reads and handles one command (and any DMA replies that come before
// it). It returns io.EOF when the client closed the socket at a message
// boundary, and another error when the stream cannot be parsed further; in
// both cases the connection is done.
//
// A panic while handling the message is a bug, never the client's error: it
// is logged with its stack at error level, counted in Server.Panics, and
// ends the connection (the error is one IsPanic recognises) rather than
// being answered like a bad request.
func (c *Conn) Step() (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.srv.panics.Add(1)
			c.log.Error("vfio-user: panic while handling a message; closing the connection",
				"cmd", c.cur.hdr.Command, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %w: %v", errStream, errPanic, r)
		}
	}()
	// Each pass consumes one message from the socket.
	m := &c.cur
	m.hdr = Header{} // so a panic while reading names no earlier command
	for {
		*m, err = c.rd.next(c.maxMsg)
		if err != nil {
			return err
		}
		if m.hdr.IsReply() {
			c.routeReply(m)
			m.closeFDs()
			continue
		}
		return c.dispatch(m)
	}
}

type handler func(c *Conn, m *message) error

// handlers maps each command a client may send to its handler.
var handlers = [numCommands]handler{
	CmdVersion:          handleVersion,
	CmdDMAMap:           handleDMAMap,
	CmdDMAUnmap:         handleDMAUnmap,
	CmdDeviceGetInfo:    handleGetInfo,
	CmdGetRegionInfo:    handleGetRegionInfo,
	CmdGetRegionIOFDs:   handleGetRegionIOFDs,
	CmdGetIRQInfo:       handleGetIRQInfo,
	CmdSetIRQs:          handleSetIRQs,
	CmdRegionRead:       handleRegionRead,
	CmdRegionWrite:      handleRegionWrite,
	CmdDeviceReset:      handleReset,
	CmdDirtyPages:       handleDirtyPages,
	CmdRegionWriteMulti: handleWriteMulti,
	CmdDeviceFeature:    handleDeviceFeature,
	CmdMigDataRead:      handleMigDataRead,
	CmdMigDataWrite:     handleMigDataWrite,
}

// dispatch runs the handler of m and sends its reply. Whatever fds the
// handler did not take are closed here.
func (c *Conn) dispatch(m *message) error {
	defer m.closeFDs()
	c.wbuf = c.wbuf[:HeaderSize]
	c.replyFDs = c.replyFDs[:0]
	err := c.call(m)
	if m.hdr.Flags&FlagNoReply != 0 {
		if err != nil {
			c.log.Warn("vfio-user: posted command failed", "cmd", m.hdr.Command, "err", err)
		}
		if c.fatal {
			return fmt.Errorf("%w: %s refused: %v", errStream, m.hdr.Command, err)
		}
		return nil
	}
	h := Header{MsgID: m.hdr.MsgID, Command: m.hdr.Command, Flags: FlagTypeReply}
	if err != nil {
		c.log.Debug("vfio-user: command failed", "cmd", m.hdr.Command, "err", err)
		h.Flags |= FlagError
		h.Error = uint32(errnoOf(err))
		c.wbuf = c.wbuf[:HeaderSize]
		c.replyFDs = c.replyFDs[:0]
	}
	h.Size = uint32(len(c.wbuf))
	h.Encode(c.wbuf)
	c.wmu.Lock()
	werr := writeMsg(c.fd, c.wbuf, c.replyFDs)
	c.wmu.Unlock()
	if werr != nil {
		return fmt.Errorf("%w: sending %s reply: %v", errStream, m.hdr.Command, werr)
	}
	if c.fatal {
		return fmt.Errorf("%w: %s refused: %v", errStream, m.hdr.Command, err)
	}
	return nil
}

func (c *Conn) call(m *message) error {
	cmd := m.hdr.Command
	if int(cmd) >= len(handlers) || handlers[cmd] == nil {
		return fmt.Errorf("unknown command %d: %w", uint16(cmd), syscall.ENOSYS)
	}
	if !c.negotiated && cmd != CmdVersion {
		return fmt.Errorf("%s before VERSION: %w", cmd, syscall.EINVAL)
	}
	if len(m.fds) > MaxMsgFDs {
		return fmt.Errorf("%s with %d fds, at most %d: %w", cmd, len(m.fds), MaxMsgFDs, syscall.EINVAL)
	}
	return handlers[cmd](c, m)
}

// extend grows the reply by n bytes and returns them, zeroed only when the
// buffer had to grow (handlers write every byte they add).
func (c *Conn) extend(n int) []byte {
	l := len(c.wbuf)
	if cap(c.wbuf)-l < n {
		nb := make([]byte, l, max(2*cap(c.wbuf), l+n))
		copy(nb, c.wbuf)
		c.wbuf = nb
	}
	c.wbuf = c.wbuf[:l+n]
	return c.wbuf[l : l+n]
}

// noFDs refuses descriptors on commands that take none.
func noFDs(m *message) error {
	if len(m.fds) != 0 {
		return fmt.Errorf("%s carries %d unexpected fds: %w", m.hdr.Command, len(m.fds), syscall.EINVAL)
	}
	return nil
}
