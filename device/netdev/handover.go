package netdev

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	_ Handoverable = None{}
)

// Pause does nothing: None delivers nothing.
func (None) Pause(context.Context) error { return nil }

// Resume does nothing.
func (None) Resume() {}

// HandoverFD says None has no descriptor.
func (None) HandoverFD() (string, string, int) { return "none", "", -1 }

// pauser parks a receive loop between frames.
type pauser struct {
	parked chan struct{}
	resume chan struct{}
}

func (p *pauser) init() {
	if p.parked == nil {
		p.parked, p.resume = make(chan struct{}, 1), make(chan struct{}, 1)
	}
}

// Pause stops the receive loop after the frame it is delivering, if any.
// Reads are ended by a deadline in the past, which the kernel never acts
// on: a frame is either read whole before it or left in the interface.
func (t *TAP) Pause(ctx context.Context) error {
	t.life.mu.Lock()
	started, done := t.life.started, t.life.done
	if t.life.closed {
		t.life.mu.Unlock()
		return ErrClosed
	}
	t.pausing.Store(true)
	t.life.mu.Unlock()
	if !started {
		return nil
	}
	if err := t.file.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.pausing.Store(false)
		return fmt.Errorf("tap %s: pausing: %w", t.name, err)
	}
	select {
	case <-t.pause.parked:
		return nil
	case <-done:
		return nil // the loop has ended: nothing is delivered
	case <-ctx.Done():
		t.Resume()
		return fmt.Errorf("tap %s: pausing: %w", t.name, ctx.Err())
	}
}

// Resume lets the receive loop read again.
func (t *TAP) Resume() {
	if !t.pausing.Swap(false) {
		return
	}
	t.file.SetReadDeadline(time.Time{})
	select {
	case t.pause.resume <- struct{}{}:
	default:
	}
}

// parkIfPaused is the receive loop's side: after a read ended by the
// pause's deadline, it waits for Resume (or Close) and says to read again.
func (t *TAP) parkIfPaused(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if !t.pausing.Load() {
		return true // a pause that ended before the read saw it
	}
	t.pause.parked <- struct{}{}
	<-t.pause.resume
	return true
}

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
