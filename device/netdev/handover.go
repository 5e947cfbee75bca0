package netdev

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// Handoverable is a backend that a live upgrade can pass to another
// process: it stops delivering frames between two of them (Pause), goes on
// (Resume), and names the descriptor the successor takes over.
//
// Pausing the old server's backend before its device state is saved is
// what keeps every frame: one read before the pause is in the NIC's
// receive FIFO, which the state carries; one not read yet waits in the
// kernel for the successor.
type Handoverable interface {
	Backend
	// Pause returns once no Receive runs and none starts until Resume.
	Pause(ctx context.Context) error
	Resume()
	// HandoverFD is the backend's kind as Parse names it, the interface
	// name for a TAP, and its descriptor, -1 when it has none. The
	// descriptor stays the backend's.
	HandoverFD() (kind, ifname string, fd int)
}

var (
	_ Handoverable = (*TAP)(nil)
	_ Handoverable = (*Dgram)(nil)
	_ Handoverable = None{}
)

// Pause does nothing: None delivers nothing.
func (None) Pause(context.Context) error { return nil }

// Resume does nothing.
func (None) Resume() {}

// HandoverFD says None has no descriptor.
func (None) HandoverFD() (string, string, int) { return "none", "", -1 }

// pauser parks a backend's receive loop between frames. Reads are ended
// by a deadline in the past, which the kernel never acts on: a frame is
// either read whole before it or left in the socket or interface.
type pauser struct {
	pausing atomic.Bool
	parked  chan struct{}
	resume  chan struct{}
}

func (p *pauser) init() {
	if p.parked == nil {
		p.parked, p.resume = make(chan struct{}, 1), make(chan struct{}, 1)
	}
}

// pause asks the loop of life to park, through setDeadline, and waits.
func (p *pauser) pause(ctx context.Context, life *lifecycle, setDeadline func(time.Time) error) error {
	life.mu.Lock()
	started, done := life.started, life.done
	if life.closed {
		life.mu.Unlock()
		return ErrClosed
	}
	p.pausing.Store(true)
	life.mu.Unlock()
	// A pause that timed out may have left a token behind (the loop
	// parked after the wait gave up, and unpause let it go): this pause
	// waits for a park of its own.
	p.drain()
	if !started {
		return nil
	}
	if err := setDeadline(time.Unix(1, 0)); err != nil {
		p.pausing.Store(false)
		return err
	}
	select {
	case <-p.parked:
		return nil
	case <-done:
		return nil // the loop has ended: nothing is delivered
	case <-ctx.Done():
		p.unpause(setDeadline)
		return ctx.Err()
	}
}

// drain empties both channels of tokens a timed-out pause left.
func (p *pauser) drain() {
	for _, ch := range []chan struct{}{p.parked, p.resume} {
		select {
		case <-ch:
		default:
		}
	}
}

// unpause lets the loop read again.
func (p *pauser) unpause(setDeadline func(time.Time) error) {
	if !p.pausing.Swap(false) {
		return
	}
	setDeadline(time.Time{})
	p.release()
}

// release lets a parked loop go on, to find its file closed: a backend
// closed while paused reads nothing more.
func (p *pauser) release() {
	p.pausing.Store(false)
	select {
	case p.resume <- struct{}{}:
	default:
	}
}

// park is the receive loop's side: after a read ended by the pause's
// deadline, it waits for the pause to end and says to read again.
func (p *pauser) park(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if !p.pausing.Load() {
		return true // a pause that ended before the read saw it
	}
	p.parked <- struct{}{}
	<-p.resume
	return true
}

// Pause stops the receive loop after the frame it is delivering, if any.
func (t *TAP) Pause(ctx context.Context) error {
	if err := t.pause.pause(ctx, &t.life, t.file.SetReadDeadline); err != nil {
		return fmt.Errorf("tap %s: pausing: %w", t.name, err)
	}
	return nil
}

// Resume lets the receive loop read again.
func (t *TAP) Resume() { t.pause.unpause(t.file.SetReadDeadline) }

// HandoverFD is the TAP's descriptor, without switching it to blocking
// mode as os.File.Fd would: the successor reads it through Go's poller.
func (t *TAP) HandoverFD() (string, string, int) {
	fd := -1
	if raw, err := t.file.SyscallConn(); err == nil {
		raw.Control(func(f uintptr) { fd = int(f) })
	}
	return "tap", t.name, fd
}

// TAPFromFD serves a TAP descriptor a predecessor handed over. It must be
// attached to a TAP interface without packet information (as OpenTAP
// makes it) named ifname; on success the TAP owns fd, on error fd is
// closed. Closing it does not remove an interface the predecessor made
// while another process still holds it.
func TAPFromFD(fd int, ifname string, log *slog.Logger) (*TAP, error) {
	if log == nil {
		log = slog.Default()
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: handed-over descriptor is not a TAP: %w", err)
	}
	if flags := ifr.Uint16(); flags&(unix.IFF_TAP|unix.IFF_TUN|unix.IFF_NO_PI) != unix.IFF_TAP|unix.IFF_NO_PI {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: handed-over descriptor has flags %#x, want a TAP without packet information", flags)
	}
	if name := ifr.Name(); name != ifname {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: handed-over descriptor is attached to %q, not %q", name, ifname)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: %w", err)
	}
	return &TAP{file: os.NewFile(uintptr(fd), "tap:"+ifname), name: ifname, log: log, buf: make([]byte, MaxFrameSize)}, nil
}

var _ Handoverable = (*Pcap)(nil)

// HandoverKind is what HandoverFD says of b, or an empty kind when b
// cannot be handed over (a pcap tee over a stream, say).
func HandoverKind(b Backend) (kind, ifname string, fd int) {
	h, ok := b.(Handoverable)
	if !ok {
		return "", "", -1
	}
	return h.HandoverFD()
}

// Pause pauses the wrapped backend, then writes out the records buffered
// so far: the successor appends to the same file, at the offset the two
// processes share.
func (p *Pcap) Pause(ctx context.Context) error {
	h, ok := p.inner.(Handoverable)
	if !ok {
		return errors.New("pcap: the wrapped backend cannot be handed over")
	}
	if err := h.Pause(ctx); err != nil {
		return err
	}
	if err := p.Flush(); err != nil {
		h.Resume()
		return err
	}
	return nil
}

// Resume resumes the wrapped backend.
func (p *Pcap) Resume() {
	if h, ok := p.inner.(Handoverable); ok {
		h.Resume()
	}
}

// HandoverFD is the wrapped backend's.
func (p *Pcap) HandoverFD() (string, string, int) {
	if h, ok := p.inner.(Handoverable); ok {
		return h.HandoverFD()
	}
	return "", "", -1
}

// SetUnlinkOnClose is the wrapped backend's, if it has one.
func (p *Pcap) SetUnlinkOnClose(unlink bool) {
	if u, ok := p.inner.(interface{ SetUnlinkOnClose(bool) }); ok {
		u.SetUnlinkOnClose(unlink)
	}
}

// FileFD is the capture file's descriptor, which stays the Pcap's.
func (p *Pcap) FileFD() int { return int(p.file.Fd()) }

// PcapFromFD goes on with the capture a predecessor handed over: records
// are appended to the file behind fd, which must be a regular file open
// for writing that already holds a pcap header. On success the Pcap owns
// fd, on error fd is closed; b stays the caller's on error.
func PcapFromFD(b Backend, fd int, log *slog.Logger) (*Pcap, error) {
	if log == nil {
		log = slog.Default()
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size < 24 {
		unix.Close(fd)
		return nil, errors.New("pcap: the handed-over descriptor is not a capture file")
	}
	// A pcap file starts with its magic, microsecond or nanosecond, in
	// either byte order. The descriptor is open for writing only, so the
	// magic is read through a descriptor of our own on the same file.
	if !hasPcapMagic(fd) {
		unix.Close(fd)
		return nil, errors.New("pcap: the handed-over file has no pcap header")
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE == unix.O_RDONLY {
		unix.Close(fd)
		return nil, errors.New("pcap: the handed-over capture file is not open for writing")
	}
	f := os.NewFile(uintptr(fd), "pcap")
	p := &Pcap{inner: b, log: log, file: f, bw: bufio.NewWriterSize(f, 256<<10)}
	// The header is in the file already: records follow it.
	p.w = pcapgo.NewWriter(p.bw)
	return p, nil
}

// Pause stops the receive loop after the datagram it is delivering.
func (d *Dgram) Pause(ctx context.Context) error {
	if err := d.pause.pause(ctx, &d.life, d.conn.SetReadDeadline); err != nil {
		return fmt.Errorf("dgram: pausing: %w", err)
	}
	return nil
}

// Resume lets the receive loop read again.
func (d *Dgram) Resume() { d.pause.unpause(d.conn.SetReadDeadline) }

// HandoverFD is the socket's descriptor, left in non-blocking mode.
func (d *Dgram) HandoverFD() (string, string, int) {
	fd := -1
	if sc, ok := d.conn.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(f uintptr) { fd = int(f) })
		}
	}
	return "dgram", "", fd
}

// DgramFromFD serves a datagram socket a predecessor handed over, with
// cfg (the successor's own --netdev, which must name the same local
// address the socket is bound to). On success the Dgram owns fd, on error
// fd is closed. A unixgram socket's file stays on Close until
// SetUnlinkOnClose says otherwise: until the predecessor commits, the file
// is its own, and a successor that gives up must leave it in place.
func DgramFromFD(fd int, cfg DgramConfig, log *slog.Logger) (*Dgram, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	f := os.NewFile(uintptr(fd), "dgram")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("dgram: handed-over descriptor: %w", err)
	}
	d := &Dgram{cfg: cfg, log: log, conn: c, buf: make([]byte, MaxFrameSize+1)}
	fail := func(format string, args ...any) (*Dgram, error) {
		c.Close()
		return nil, fmt.Errorf("dgram: handed-over socket: "+format, args...)
	}
	switch cfg.Network {
	case "udp":
		u, ok := c.(*net.UDPConn)
		if !ok {
			return fail("not a UDP socket")
		}
		local, err := net.ResolveUDPAddr("udp", cfg.Local)
		if err != nil {
			return fail("local address %q: %v", cfg.Local, err)
		}
		if got := u.LocalAddr().(*net.UDPAddr); got.Port != local.Port || (local.IP != nil && !local.IP.IsUnspecified() && !local.IP.Equal(got.IP)) {
			return fail("bound to %s, --netdev says %s", got, cfg.Local)
		}
		remote, err := net.ResolveUDPAddr("udp", cfg.Remote)
		if err != nil {
			return fail("remote address %q: %v", cfg.Remote, err)
		}
		d.udp = u
		d.udpRemote = netip.AddrPortFrom(remote.AddrPort().Addr().Unmap(), remote.AddrPort().Port())
	case "unixgram":
		// net.FileConn gives a UnixConn for a stream socket too.
		u, ok := c.(*net.UnixConn)
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); !ok || err != nil || typ != unix.SOCK_DGRAM {
			return fail("not a UNIX datagram socket")
		}
		if got := u.LocalAddr().String(); got != cfg.Local {
			return fail("bound to %s, --netdev says %s", got, cfg.Local)
		}
		d.unix = u
		d.unixRemote = &net.UnixAddr{Name: cfg.Remote, Net: "unixgram"}
	default:
		return fail("network %q is neither udp nor unixgram", cfg.Network)
	}
	return d, nil
}

// SetUnlinkOnClose says whether Close removes a unixgram socket's file, as
// net.UnixListener's does: a successor takes the file over once the
// predecessor has committed, not before. It does nothing for UDP.
func (d *Dgram) SetUnlinkOnClose(unlink bool) {
	d.life.mu.Lock()
	defer d.life.mu.Unlock()
	d.removeLocal = ""
	if unlink && d.unix != nil {
		d.removeLocal = d.cfg.Local
	}
}

// hasPcapMagic says whether the file behind fd starts with a pcap magic.
func hasPcapMagic(fd int) bool {
	f, err := os.Open("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return false
	}
	switch binary.LittleEndian.Uint32(b[:]) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		return true
	}
	return false
}
