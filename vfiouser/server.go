package vfiouser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/unixsock"
)

// Protocol limits the server announces.
const (
	DefaultMaxDataXferSize = 1 << 20 // what QEMU offers; at most 64 MiB is accepted by QEMU
	MaxMsgFDs              = 16      // QEMU refuses more
	DefaultMaxBitmapSize   = 8 << 20 // bytes of one dirty bitmap: 256 GiB at 4 KiB pages
	DefaultDMATimeout      = 5 * time.Second
	maxMsgOverhead         = 64       // fixed parts around max_data_xfer_size bytes
	readBufInitial         = 64 << 10 // grows to the negotiated message size when needed
)

// Options tune a Server; zero values take the defaults above.
type Options struct {
	Logger          *slog.Logger
	MaxDataXferSize uint32
	MaxBitmapSize   uint64
	DMALimits       DMALimits
	// DMATimeout bounds the wait for the client's reply to a DMA_READ or
	// DMA_WRITE the server sent for a range mapped without fd.
	DMATimeout time.Duration
	// HandoverWait is how long a new client waits for the previous one's
	// teardown before it is refused: when QEMU is killed and restarted,
	// the new connection can arrive before the old one's EOF is read.
	HandoverWait time.Duration

	// vmMaxMapCount stands for the kernel's vm.max_map_count in tests;
	// 0 reads it from /proc (see mapCountCap).
	vmMaxMapCount int
}

// The kernel's limit on the mappings of a process, and what is assumed
// when it cannot be read (its default).
const (
	maxMapCountPath    = "/proc/sys/vm/max_map_count"
	defaultMaxMapCount = 65530
)

// mapCountCap is the most DMA mappings a client may hold when the process
// may have at most maxMapCount mappings: a quarter of them.
//
// Each fd-backed DMA map is a mapping of its own, and the Go runtime needs
// mappings too (heap arenas, goroutine stacks, its other mmaps). When the
// count runs out, the runtime's next heap growth fails with "fatal error:
// runtime: out of memory", which no recover catches: the process dies. So
// the table is capped well below the limit, leaving three quarters of it to
// the rest of the process. With the kernel's default of 65530 that is 16382
// maps, far more than the few dozen QEMU makes (one per section of guest
// memory).
func mapCountCap(maxMapCount int) int {
	return max(maxMapCount/4, 1)
}

// readMaxMapCount reads vm.max_map_count, or returns the kernel's default
// when it cannot.
func readMaxMapCount() int {
	b, err := os.ReadFile(maxMapCountPath)
	if err != nil {
		return defaultMaxMapCount
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return defaultMaxMapCount
	}
	return n
}

// Server serves one device to one client at a time.
type Server struct {
	dev  device.Device
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	active *Conn

	gate acceptGate // a live upgrade holds Serve's accepts (handover.go)

	panics atomic.Uint64 // see Panics
}

// Panics counts the panics recovered while handling clients' messages.
// Each is a bug of the server or the device, not the client's doing: it
// was logged with its stack at error level and ended its connection.
func (s *Server) Panics() uint64 { return s.panics.Load() }

// NewServer returns a server for dev.
func NewServer(dev device.Device, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxDataXferSize == 0 {
		opts.MaxDataXferSize = DefaultMaxDataXferSize
	}
	opts.MaxDataXferSize = min(opts.MaxDataXferSize, 64<<20)
	if opts.MaxBitmapSize == 0 {
		opts.MaxBitmapSize = DefaultMaxBitmapSize
	}
	if opts.DMALimits.MaxMaps <= 0 {
		opts.DMALimits.MaxMaps = DefaultDMALimits.MaxMaps
	}
	if opts.DMALimits.MaxTotal == 0 {
		opts.DMALimits.MaxTotal = DefaultDMALimits.MaxTotal
	}
	// Read once, at start: the cap is what VERSION announces as
	// max_dma_maps, and it must not change under a client.
	if opts.vmMaxMapCount <= 0 {
		opts.vmMaxMapCount = readMaxMapCount()
	}
	opts.DMALimits.MaxMaps = min(opts.DMALimits.MaxMaps, mapCountCap(opts.vmMaxMapCount))
	if opts.DMATimeout == 0 {
		opts.DMATimeout = DefaultDMATimeout
	}
	if opts.HandoverWait == 0 {
		opts.HandoverWait = 500 * time.Millisecond
	}
	return &Server{dev: dev, opts: opts, log: opts.Logger}
}

// ErrBusy is returned by NewConn while another client is connected.
var ErrBusy = errors.New("vfio-user: device already has a client")

// NewConn starts serving the connected socket fd, which the Conn owns from
// then on (even on error it is closed). Drive it with Step (one message at a
// time, as tests do) or Serve (until the client goes).
func (s *Server) NewConn(fd int) (*Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != nil {
		unix.Close(fd)
		return nil, ErrBusy
	}
	c := newConn(s, fd)
	s.active = c
	s.dev.Connect(c.dma)
	return c, nil
}

// newConnAfter is NewConn, after waiting up to wait for the current client
// (if any) to be torn down.
func (s *Server) newConnAfter(fd int, wait time.Duration) (*Conn, error) {
	s.mu.Lock()
	old := s.active
	s.mu.Unlock()
	if old != nil {
		// The old client may be gone while its connection is stuck in an
		// interrupt write on an eventfd it filled (see releaseIRQs):
		// release that while waiting. A client still connected stays
		// served.
		old.releaseUntil(old.done, wait)
	}
	return s.NewConn(fd)
}

func (s *Server) release(c *Conn) {
	s.mu.Lock()
	if s.active == c {
		s.active = nil
	}
	s.mu.Unlock()
}

// Serve accepts clients on ln until ln is closed, serving one at a time; a
// client that connects while another is served is refused (its socket is
// closed after a logged warning) and the first one carries on. Accept
// errors that pass, such as running out of descriptors, are waited out
// (see unixsock.Accept); any other ends Serve.
func (s *Server) Serve(ln *Listener) error {
	s.gate.serving(ln.ln)
	defer s.gate.serving(nil)
	for {
		s.gate.wait()
		conn, err := unixsock.Accept(context.Background(), ln.ln, s.log)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // HoldAccepts' deadline: wait at the gate
			}
			return fmt.Errorf("vfio-user: accept: %w", err)
		}
		// Connections are served with plain system calls on a blocking
		// descriptor, with no poller hop per message.
		// A UnixListener accepts only *net.UnixConn.
		fd, err := dupBlocking(conn.(*net.UnixConn))
		conn.Close()
		if err != nil {
			// This client is hung up on; the next may fare better.
			s.log.Warn("vfio-user: cannot take the connection", "socket", ln.path, "err", err)
			continue
		}
		c, err := s.newConnAfter(fd, s.opts.HandoverWait)
		if err != nil {
			s.log.Warn("vfio-user: refusing a second client", "socket", ln.path, "err", err)
			continue
		}
		s.log.Info("vfio-user: client connected", "socket", ln.path)
		go func() {
			err := c.Serve()
			s.log.Info("vfio-user: client gone", "socket", ln.path, "err", err)
		}()
	}
}

// Close disconnects the current client, if any.
func (s *Server) Close() {
	s.mu.Lock()
	c := s.active
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Listener is a vfio-user server socket.
type Listener struct {
	ln   *net.UnixListener
	path string
}

// Listen creates the server socket at path with mode 0600. A stale socket
// file (connecting to it is refused) is replaced; a live one is refused, as
// is a path that holds something other than a socket, which is left
// untouched (see unixsock.Listen).
func Listen(path string) (*Listener, error) {
	ln, err := unixsock.Listen(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vfio-user: %s: %w", path, err)
	}
	return &Listener{ln: ln, path: path}, nil
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Close stops accepting and removes the socket file.
func (l *Listener) Close() error { return l.ln.Close() }

// dupBlocking duplicates a connection's descriptor in blocking mode, for a
// reader that makes plain system calls. The mode belongs to the file
// description both descriptors share, which is why the caller closes uc
// at once.
func dupBlocking(uc *net.UnixConn) (int, error) {
	nfd, err := DupSocketFD(uc)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return -1, fmt.Errorf("set blocking: %w", err)
	}
	return nfd, nil
}
