package vfiouser

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/handover"
	"e1000e-vfu/internal/unixsock"
)

// A live upgrade moves a served client to another process without the
// client's knowledge: the old server stops reading between two messages
// (Pause), its connection's protocol state, guest memory table and
// interrupt eventfds are exported with the descriptors behind them
// (Handoff.Export), and the new server adopts them (Server.Adopt), picks
// the stream up at the byte where the old one stopped and serves it on
// (Server.ServeAdopted). Until the new one runs, the old one keeps every
// descriptor, so it can go on as if nothing happened (Handoff.Resume).

// Handoff is a client connection paused for a live upgrade.
type Handoff struct {
	c    *Conn
	done bool
}

// ErrNotPausable is returned by Pause for a connection that cannot stop
// its reads (it has no wake eventfd, or is not driven by Serve).
var ErrNotPausable = errors.New("vfio-user: the connection cannot be paused")

// acceptGate lets a live upgrade stop Serve's accepts without closing the
// listener: a client that connects meanwhile waits in the socket's
// backlog, for the successor, which shares the socket, or for this server
// once it resumes. Accepting it here would have it served by a process
// about to exit.
type acceptGate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	ln     *net.UnixListener // Serve's, nil while none runs
	held   bool
	parked chan struct{} // closed once Serve waits at the gate
}

func (g *acceptGate) init() {
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
}

// serving records the listener Serve accepts on, nil once it returns.
func (g *acceptGate) serving(ln *net.UnixListener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	g.ln = ln
	if ln == nil && g.parked != nil {
		close(g.parked) // nothing is accepted any more
		g.parked = nil
	}
}

// wait is Serve's side: it returns once no hold is on.
func (g *acceptGate) wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	for g.held {
		if g.parked != nil {
			close(g.parked)
			g.parked = nil
		}
		g.cond.Wait()
	}
}

// HoldAccepts stops Serve between two accepts, ending a blocked accept
// with a deadline in the past; a connection Serve had accepted already is
// taken on first (it is the client Pause then finds). It returns once
// Serve waits, or at once when Serve does not run. Clients that connect
// until ResumeAccepts wait in the listener's backlog.
func (s *Server) HoldAccepts(ctx context.Context) error {
	g := &s.gate
	g.mu.Lock()
	g.init()
	g.held = true
	ln := g.ln
	if ln == nil {
		g.mu.Unlock()
		return nil
	}
	parked := make(chan struct{})
	g.parked = parked
	// Set under the lock, so that no ResumeAccepts clears it after.
	err := ln.SetDeadline(time.Unix(1, 0))
	g.mu.Unlock()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		s.ResumeAccepts()
		return fmt.Errorf("vfio-user: holding accepts: %w", err)
	}
	select {
	case <-parked:
		return nil
	case <-ctx.Done():
		s.ResumeAccepts()
		return fmt.Errorf("vfio-user: holding accepts: %w", ctx.Err())
	}
}

// ResumeAccepts lets Serve accept again; on a listener closed meanwhile
// (the handover committed) Serve returns.
func (s *Server) ResumeAccepts() {
	g := &s.gate
	g.mu.Lock()
	g.init()
	g.held = false
	g.parked = nil
	if g.ln != nil {
		g.ln.SetDeadline(time.Time{}) // fails only on a closed listener, which Serve sees
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Pause stops the current client's connection once the message it is
// handling has been answered; nothing more is read from the client until
// Resume or Release. It returns nil, nil when no client is connected. A
// client that leaves meanwhile ends the wait with an error.
func (s *Server) Pause(ctx context.Context) (*Handoff, error) {
	// The wake-up is written under s.mu: a connection that ends leaves
	// s.active (release) before it closes its wake eventfd, so the
	// descriptor written to is still the connection's.
	s.mu.Lock()
	c := s.active
	if c == nil {
		s.mu.Unlock()
		return nil, nil
	}
	if c.wake < 0 || !c.serving.Load() {
		s.mu.Unlock()
		return nil, ErrNotPausable
	}
	_, err := unix.Write(c.wake, eventfdOne[:])
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("vfio-user: pausing: %w", err)
	}
	select {
	case <-c.parked:
		return &Handoff{c: c}, nil
	case <-c.done:
		return nil, errors.New("vfio-user: the client left while the connection was pausing")
	case <-ctx.Done():
		// The pause may still land: whoever parks is let go again.
		go func() {
			select {
			case <-c.parked:
				c.endPause(false)
			case <-c.done:
			}
		}()
		return nil, fmt.Errorf("vfio-user: pausing: %w", ctx.Err())
	}
}

var eventfdOne = [8]byte{1}

// endPause clears the wake signal and lets Serve go on or end.
func (c *Conn) endPause(release bool) {
	var b [8]byte
	unix.Read(c.wake, b[:]) // non-blocking: clears the counter
	if release {
		c.shared.Store(true)
	}
	c.unpark <- release
}

// Resume lets the connection read and serve again, as if never paused.
func (h *Handoff) Resume() {
	if h.done {
		return
	}
	h.done = true
	h.c.endPause(false)
}

// Release ends this process's part in the connection: the successor
// serves it now. Nothing is shut down or sent; the device is disconnected
// and this process's descriptors and mappings are let go. Release returns
// once that is done.
func (h *Handoff) Release() {
	if h.done {
		return
	}
	h.done = true
	h.c.endPause(true)
	<-h.c.done
}

// ConnExport is a paused connection as a live upgrade carries it. Every
// descriptor in it is borrowed from the connection: valid until Resume or
// Release, passed on (the kernel duplicates them), never closed by the
// caller.
type ConnExport struct {
	FD    int
	Proto handover.Proto
	Maps  []handover.Map
	// Files are the descriptors behind Maps, indexed by Map.File.
	Files []int
	IRQs  []IRQFD
	// Unmask is the INTx unmask eventfd, -1 for none.
	Unmask int
	// Buffered are the descriptors that came with messages in
	// Proto.Buffered, at the offsets of those messages' headers.
	Buffered []BufferedFD
}

// IRQFD is an interrupt eventfd by index and vector.
type IRQFD struct {
	Index, Vector uint32
	FD            int
}

// BufferedFD is a descriptor of a message not yet handled.
type BufferedFD struct {
	Offset uint32
	FD     int
}

// Export describes the paused connection: its protocol state, the bytes
// read and not handled, the guest memory table and the trigger eventfds.
// It refuses a connection in the middle of what cannot be carried: dirty
// logging (a migration under way).
func (h *Handoff) Export() (*ConnExport, error) {
	c := h.c
	if c.dma.logging.Load() {
		return nil, errors.New("vfio-user: dirty page logging is on (a migration is under way)")
	}
	rd := c.rd
	buffered := rd.buf[rd.r:rd.w]
	if len(buffered) > handover.MaxBuffered {
		return nil, fmt.Errorf("vfio-user: %d bytes read ahead, more than a handover carries", len(buffered))
	}
	x := &ConnExport{FD: c.fd, Unmask: -1, Proto: handover.Proto{
		Negotiated: c.negotiated,
		Minor:      versionMinor,
		MaxXfer:    c.maxXfer,
		NextID:     uint16(c.nextID.Load()),
		Buffered:   buffered,
	}}
	if !c.negotiated {
		x.Proto.MaxXfer = 0
	}
	for _, p := range rd.pend {
		off := p.pos - rd.r
		if off < 0 || off >= len(buffered) {
			// Descriptors for a position already passed are closed by
			// the reader when it gets there; none is left here.
			continue
		}
		for _, fd := range p.fds {
			x.Buffered = append(x.Buffered, BufferedFD{Offset: uint32(off), FD: fd})
		}
	}

	c.dma.mu.RLock()
	ids := make(map[*dmaFile]int32)
	for _, r := range c.dma.maps {
		m := handover.Map{IOVA: r.iova, Size: r.size, Flags: r.flags, File: -1}
		if r.file != nil {
			id, ok := ids[r.file]
			if !ok {
				id = int32(len(x.Files))
				ids[r.file] = id
				x.Files = append(x.Files, r.file.fd)
			}
			m.File, m.Offset = id, r.offset
		}
		x.Maps = append(x.Maps, m)
	}
	c.dma.mu.RUnlock()

	c.irqMu.Lock()
	for k, fd := range c.irqDups {
		x.IRQs = append(x.IRQs, IRQFD{Index: k[0], Vector: k[1], FD: fd})
	}
	if c.unmaskDup >= 0 {
		x.Unmask = c.unmaskDup
	}
	c.irqMu.Unlock()
	sort.Slice(x.IRQs, func(i, j int) bool {
		a, b := x.IRQs[i], x.IRQs[j]
		return a.Index < b.Index || a.Index == b.Index && a.Vector < b.Vector
	})
	return x, nil
}

// Adopted is what a successor hands Adopt: a connection as a handover
// carried it. Adopt owns every descriptor in it from the call on.
type Adopted struct {
	FD       int
	Proto    handover.Proto
	Maps     []handover.Map
	Files    map[uint32]int // by file id
	IRQs     []IRQFD
	Buffered []BufferedFD
	// Unmask is the INTx unmask eventfd, -1 for none; INTxMasked is the
	// line's mask.
	Unmask     int
	INTxMasked bool
}

func (a *Adopted) closeFDs() {
	unixsock.CloseFDs([]int{a.FD, a.Unmask})
	for _, fd := range a.Files {
		unix.Close(fd)
	}
	for _, q := range a.IRQs {
		unix.Close(q.FD)
	}
	for _, b := range a.Buffered {
		unix.Close(b.FD)
	}
}

// Adopt builds a connection from a handover with the checks the client's
// own messages would meet: the negotiated transfer size within this
// server's, every map through DMATable.Map (alignment, overlap, limits,
// file type and size), every interrupt eventfd checked to be one and
// within the device's vectors. The device is connected and its eventfds
// set, but nothing is read from the client and the socket stays the
// predecessor's too until ServeAdopted. On error everything is closed and
// the device disconnected; the socket is not shut down.
func (s *Server) Adopt(a Adopted) (_ *Conn, err error) {
	if a.FD < 0 {
		a.closeFDs()
		return nil, errors.New("vfio-user: adopt: no connection")
	}
	if err := checkConnected(a.FD); err != nil {
		a.closeFDs()
		return nil, fmt.Errorf("vfio-user: adopt: the connection: %w", err)
	}
	p := a.Proto
	if p.Negotiated && (p.MaxXfer < 8 || p.MaxXfer > s.opts.MaxDataXferSize) {
		a.closeFDs()
		return nil, fmt.Errorf("vfio-user: adopt: max_data_xfer_size %d, this server allows 8 to %d", p.MaxXfer, s.opts.MaxDataXferSize)
	}
	s.mu.Lock()
	if s.active != nil {
		s.mu.Unlock()
		a.closeFDs()
		return nil, ErrBusy
	}
	c := newConn(s, a.FD)
	c.shared.Store(true)
	s.active = c
	s.mu.Unlock()
	s.dev.Connect(c.dma)
	a.FD = -1 // the connection's from here
	defer func() {
		if err != nil {
			a.closeFDs()
			c.Close()
		}
	}()

	if p.Negotiated {
		c.negotiated = true
		c.maxXfer = p.MaxXfer
		c.maxMsg = HeaderSize + maxMsgOverhead + max(c.maxXfer, 64<<10)
		c.rd.max = int(c.maxMsg)
	}
	c.nextID.Store(uint32(p.NextID))
	if err := c.rd.preload(p.Buffered, a.Buffered); err != nil {
		return nil, err
	}
	for i := range a.Buffered {
		a.Buffered[i].FD = -1 // the reader's now
	}

	if !p.Negotiated && len(a.Maps) > 0 {
		return nil, errors.New("vfio-user: adopt: guest memory before VERSION")
	}
	for i, m := range a.Maps {
		fd := -1
		if m.File >= 0 {
			f, ok := a.Files[uint32(m.File)]
			if !ok {
				return nil, fmt.Errorf("vfio-user: adopt: map %d: no file %d", i, m.File)
			}
			fd = f
		}
		if err := c.dma.Map(DMAMap{Addr: m.IOVA, Size: m.Size, Offset: m.Offset, Flags: m.Flags}, fd); err != nil {
			return nil, fmt.Errorf("vfio-user: adopt: map %d: %w", i, err)
		}
	}
	// The table keeps its own descriptor of each file.
	for id, fd := range a.Files {
		unix.Close(fd)
		delete(a.Files, id)
	}

	for i, q := range a.IRQs {
		if uint64(q.Index) >= uint64(len(c.info.IRQs)) || q.Vector >= c.info.IRQs[q.Index].Count {
			return nil, fmt.Errorf("vfio-user: adopt: interrupt %d/%d: %w", q.Index, q.Vector, syscall.EINVAL)
		}
		if !isEventFD(q.FD) {
			return nil, fmt.Errorf("vfio-user: adopt: interrupt %d/%d is not an eventfd: %w", q.Index, q.Vector, syscall.EINVAL)
		}
		dups, err := dupFDs([]int{q.FD})
		if err != nil {
			return nil, fmt.Errorf("vfio-user: adopt: %w", err)
		}
		a.IRQs[i].FD = -1 // the device's, even on error
		req := device.SetIRQs{Index: q.Index, Start: q.Vector, Count: 1, Action: device.IRQActionTrigger,
			Data: device.IRQDataEventFD, FDs: []*os.File{os.NewFile(uintptr(q.FD), "eventfd")}}
		if err := c.dev.SetIRQs(req); err != nil {
			unixsock.CloseFDs(dups)
			return nil, fmt.Errorf("vfio-user: adopt: interrupt %d/%d: %w", q.Index, q.Vector, err)
		}
		c.trackIRQs(q.Index, q.Vector, 1, dups)
	}
	if a.Unmask >= 0 {
		fd := a.Unmask
		a.Unmask = -1
		if !isEventFD(fd) {
			unix.Close(fd)
			return nil, fmt.Errorf("vfio-user: adopt: the INTx unmask descriptor is not an eventfd: %w", syscall.EINVAL)
		}
		dups, err := dupFDs([]int{fd})
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("vfio-user: adopt: %w", err)
		}
		// The file owns fd from here on (the device closes it).
		req := device.SetIRQs{Index: device.IRQINTx, Count: 1, Action: device.IRQActionUnmask,
			Data: device.IRQDataEventFD, FDs: []*os.File{os.NewFile(uintptr(fd), "eventfd")}}
		if err := c.dev.SetIRQs(req); err != nil {
			unixsock.CloseFDs(dups)
			return nil, fmt.Errorf("vfio-user: adopt: INTx unmask eventfd: %w", err)
		}
		c.trackUnmask(dups[0])
	}
	if a.INTxMasked {
		req := device.SetIRQs{Index: device.IRQINTx, Count: 1, Action: device.IRQActionMask, Data: device.IRQDataNone}
		if err := c.dev.SetIRQs(req); err != nil {
			return nil, fmt.Errorf("vfio-user: adopt: INTx mask: %w", err)
		}
	}
	return c, nil
}

// preload puts bytes read by a predecessor at the start of the reader,
// with the descriptors that came with their messages, in the messages'
// order. Everything is checked before any descriptor is the reader's: on
// error the caller still owns every one of them (and closes them once).
func (rd *reader) preload(b []byte, fds []BufferedFD) error {
	if len(b) > handover.MaxBuffered {
		return fmt.Errorf("vfio-user: adopt: %d buffered bytes", len(b))
	}
	sets, inSet := 0, 0
	for i, f := range fds {
		if int(f.Offset) >= len(b) {
			return fmt.Errorf("vfio-user: adopt: descriptor for offset %d of %d buffered bytes", f.Offset, len(b))
		}
		switch {
		case i > 0 && f.Offset < fds[i-1].Offset:
			return fmt.Errorf("vfio-user: adopt: descriptor for offset %d after one for %d", f.Offset, fds[i-1].Offset)
		case i == 0 || f.Offset > fds[i-1].Offset:
			sets, inSet = sets+1, 0
		}
		inSet++
		if sets > maxPendingFDSets {
			return fmt.Errorf("vfio-user: adopt: more than %d buffered descriptor sets", maxPendingFDSets)
		}
		if inSet > maxRecvFDs {
			return fmt.Errorf("vfio-user: adopt: more than %d descriptors for one message", maxRecvFDs)
		}
	}
	if len(b) > len(rd.buf) {
		rd.buf = make([]byte, len(b))
	}
	copy(rd.buf, b)
	rd.r, rd.w = 0, len(b)
	for i, f := range fds {
		if i == 0 || f.Offset != fds[i-1].Offset {
			rd.pend = append(rd.pend, pendingFDs{pos: int(f.Offset)})
		}
		last := &rd.pend[len(rd.pend)-1]
		last.fds = append(last.fds, f.FD)
	}
	return nil
}

// ServeAdopted starts serving an adopted connection: from now on this
// process alone answers the client.
func (s *Server) ServeAdopted(c *Conn) {
	c.shared.Store(false)
	s.log.Info("vfio-user: client taken over")
	go func() {
		err := c.Serve()
		s.log.Info("vfio-user: client gone", "err", err)
	}()
}

// Discard drops an adopted connection that will not be served: the device
// is disconnected and every descriptor closed, the socket left as it is
// for the process that still serves it.
func (c *Conn) Discard() {
	c.shared.Store(true)
	c.Close()
}

// DupFD returns a duplicate of the listening socket's descriptor, for a
// handover; the caller closes it. It goes around os.File, whose Fd would
// switch the socket (the description the duplicate shares) to blocking
// mode: an accept then blocks a thread that closing the listener does not
// wake, and a server that resumes after a failed handover could not stop.
func (l *Listener) DupFD() (int, error) { return DupSocketFD(l.ln) }

// DupSocketFD duplicates c's descriptor without changing its mode (see
// Listener.DupFD).
func DupSocketFD(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := raw.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return nfd, nil
}

// SetUnlinkOnClose says whether Close removes the socket file (it does by
// default); a server that hands the socket over must leave it.
func (l *Listener) SetUnlinkOnClose(v bool) { l.ln.SetUnlinkOnClose(v) }

// Detach stops accepting without removing the socket file.
func (l *Listener) Detach() error {
	l.SetUnlinkOnClose(false)
	return l.ln.Close()
}

// ListenerFromFD serves the listening socket a predecessor handed over.
// It must be a listening UNIX stream socket bound to path; on success the
// Listener owns fd, on error fd is closed. Closing the Listener removes
// the socket file, as for one made by Listen.
func ListenerFromFD(fd int, path string) (*Listener, error) {
	f := os.NewFile(uintptr(fd), "vfio-user listener")
	defer f.Close()
	if err := CheckListening(fd, path); err != nil {
		return nil, fmt.Errorf("vfio-user: handed-over listener: %w", err)
	}
	// FileListener switches the shared description to blocking mode and
	// back at once (its Fd, then its own duplicate's SetNonblock): an
	// accept of the predecessor's in that instant would block, which only
	// a client connecting at that very moment could cause.
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("vfio-user: handed-over listener: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New("vfio-user: handed-over listener is not a UNIX socket")
	}
	ul.SetUnlinkOnClose(true)
	return &Listener{ln: ul, path: path}, nil
}

// CheckListening says whether fd is a listening UNIX stream socket bound
// to path (any path when path is empty).
func CheckListening(fd int, path string) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return fmt.Errorf("not a stream socket (%v)", err)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || acc != 1 {
		return errors.New("not listening")
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	ua, ok := sa.(*unix.SockaddrUnix)
	if !ok {
		return errors.New("not a UNIX socket")
	}
	if path == "" || ua.Name == path {
		return nil
	}
	// The predecessor may have named it relative to another directory.
	a, err1 := os.Stat(ua.Name)
	b, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return fmt.Errorf("bound to %q, not %q", ua.Name, path)
	}
	return nil
}

// checkConnected says whether fd is a connected UNIX stream socket, as a
// client's connection is.
func checkConnected(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return fmt.Errorf("not a stream socket (%v): %w", err, syscall.EINVAL)
	}
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return fmt.Errorf("no peer: %w", err)
	}
	if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return fmt.Errorf("not a UNIX socket: %w", syscall.EINVAL)
	}
	return nil
}
