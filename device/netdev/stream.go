package netdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"e1000e-vfu/internal/unixsock"
)

// StreamConfig describes one end of QEMU's stream netdev protocol.
type StreamConfig struct {
	// Network is "unix" (Address is a socket path) or "tcp" (host:port).
	Network string
	Address string
	// Server listens on Address and serves one peer at a time; when the
	// peer goes, the next connection is accepted. Otherwise Address is
	// dialled once at Open.
	Server bool
	// Reconnect, for a client, is how long to wait before dialling again
	// after the peer goes; zero leaves the backend unplugged instead.
	Reconnect time.Duration
	// SendTimeout bounds how long Send may block on a peer that does not
	// read; when it expires the peer is dropped. Zero means DefaultSendTimeout.
	SendTimeout time.Duration
}

// DefaultSendTimeout is the SendTimeout used when none is given.
const DefaultSendTimeout = 2 * time.Second

// dialTimeout bounds each connection attempt of a client.
const dialTimeout = 5 * time.Second

// Stream is a backend speaking QEMU's stream protocol (-netdev stream, and
// passt): every frame preceded by its length as a 4-byte big-endian number.
//
// A frame sent while no peer is connected is dropped and Send returns nil,
// as a NIC with nobody at the other end of the cable would see it.
type Stream struct {
	cfg     StreamConfig
	log     *slog.Logger
	life    lifecycle
	ln      net.Listener // server only
	dec     *streamDecoder
	closing chan struct{}

	sendMu  sync.Mutex
	sendBuf []byte

	connMu sync.Mutex
	conn   net.Conn // the current peer, nil if none
}

var _ Backend = (*Stream)(nil)

// OpenStream listens on or connects to cfg.Address.
func OpenStream(cfg StreamConfig, log *slog.Logger) (*Stream, error) {
	if cfg.Network != "unix" && cfg.Network != "tcp" {
		return nil, fmt.Errorf("stream: network %q is neither unix nor tcp", cfg.Network)
	}
	s := newStream(cfg, log)
	if cfg.Server {
		ln, err := listenStream(cfg.Network, cfg.Address)
		if err != nil {
			return nil, fmt.Errorf("stream: listen on %s %s: %w", cfg.Network, cfg.Address, err)
		}
		s.ln = ln
		s.log.Debug("stream listening", "network", cfg.Network, "addr", ln.Addr().String())
		return s, nil
	}
	conn, err := s.dial()
	if err != nil {
		return nil, err
	}
	s.conn = conn
	return s, nil
}

func newStream(cfg StreamConfig, log *slog.Logger) *Stream {
	if log == nil {
		log = slog.Default()
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	return &Stream{
		cfg:     cfg,
		log:     log,
		closing: make(chan struct{}),
		sendBuf: make([]byte, streamHeaderSize+MaxFrameSize),
	}
}

// listenStream listens on addr. For a UNIX socket, a file left behind by a
// process that died is replaced first, but never one somebody still
// answers on, nor anything that is not a socket (see unixsock.Listen).
func listenStream(network, addr string) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, addr)
	}
	ln, err := unixsock.Listen(addr, 0)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// closingContext is a context that Close cancels, for a dial or an
// accept loop to end with the backend; cancel releases its goroutine.
func (s *Stream) closingContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (s *Stream) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	ctx, cancel := s.closingContext()
	defer cancel()
	conn, err := d.DialContext(ctx, s.cfg.Network, s.cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("stream: connect to %s %s: %w", s.cfg.Network, s.cfg.Address, err)
	}
	return conn, nil
}

// Addr is the address a server listens on (useful with port 0), or nil.
func (s *Stream) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Connected reports whether a peer is currently attached.
func (s *Stream) Connected() bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.conn != nil
}

// Send writes one frame with its length prefix, in a single write so that
// concurrent senders never interleave.
func (s *Stream) Send(frame []byte) error {
	if err := checkFrame(frame); err != nil {
		return err
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.connMu.Lock()
	conn := s.conn
	s.connMu.Unlock()
	if conn == nil {
		if s.life.isClosed() {
			return ErrClosed
		}
		return nil
	}
	putStreamHeader(s.sendBuf, len(frame))
	n := copy(s.sendBuf[streamHeaderSize:], frame)
	if err := conn.SetWriteDeadline(time.Now().Add(s.cfg.SendTimeout)); err != nil {
		return s.sendFailed(conn, err)
	}
	if _, err := conn.Write(s.sendBuf[:streamHeaderSize+n]); err != nil {
		return s.sendFailed(conn, err)
	}
	return nil
}

// sendFailed drops a peer after a failed write: part of a frame may have
// gone out, so the stream can no longer be trusted to be in step.
func (s *Stream) sendFailed(conn net.Conn, err error) error {
	if s.life.isClosed() {
		return ErrClosed
	}
	s.log.Warn("stream send failed; dropping peer", "err", err)
	s.connMu.Lock()
	if s.conn == conn {
		s.conn = nil
	}
	s.connMu.Unlock()
	conn.Close() // the receive loop sees the close and moves on
	return fmt.Errorf("stream: send: %w", err)
}

// Start delivers received frames to rx until Close.
func (s *Stream) Start(rx Receiver) error {
	return s.life.start(func() { s.run(rx) })
}

func (s *Stream) run(rx Receiver) {
	s.dec = newStreamDecoder(nil)
	if s.ln != nil {
		s.serveListener(rx)
		return
	}
	s.connMu.Lock()
	conn := s.conn
	s.connMu.Unlock()
	for {
		if conn == nil {
			if s.cfg.Reconnect <= 0 {
				return
			}
			if conn = s.redial(); conn == nil {
				return
			}
		}
		s.serveConn(conn, rx)
		if s.cfg.Reconnect <= 0 || s.life.isClosed() {
			return
		}
		conn = nil
	}
}

// redial dials until it succeeds or the backend closes, waiting Reconnect
// between attempts. It returns nil when closing.
func (s *Stream) redial() net.Conn {
	for {
		select {
		case <-s.closing:
			return nil
		case <-time.After(s.cfg.Reconnect):
		}
		conn, err := s.dial()
		if err != nil {
			s.log.Debug("stream reconnect failed", "err", err)
			continue
		}
		if !s.setConn(conn) {
			return nil
		}
		s.log.Info("stream reconnected", "addr", s.cfg.Address)
		return conn
	}
}

func (s *Stream) serveListener(rx Receiver) {
	// Close ends a wait between accept attempts as well as the accept.
	ctx, cancel := s.closingContext()
	defer cancel()
	for {
		// Out of descriptors and the like is waited out, without spinning.
		conn, err := unixsock.Accept(ctx, s.ln, s.log)
		if err != nil {
			if !s.life.isClosed() && !errors.Is(err, net.ErrClosed) {
				s.log.Error("stream accept failed; no further peer will be accepted", "err", err)
			}
			return
		}
		if !s.setConn(conn) {
			return
		}
		s.log.Info("stream peer connected", "peer", conn.RemoteAddr().String())
		s.serveConn(conn, rx)
	}
}

// setConn installs conn as the peer unless the backend is closing, in
// which case it closes conn and reports false.
func (s *Stream) setConn(conn net.Conn) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	select {
	case <-s.closing:
		conn.Close()
		return false
	default:
	}
	s.conn = conn
	return true
}

// serveConn delivers frames from conn until it ends, then closes it.
func (s *Stream) serveConn(conn net.Conn, rx Receiver) {
	defer func() {
		s.connMu.Lock()
		if s.conn == conn {
			s.conn = nil
		}
		s.connMu.Unlock()
		conn.Close()
	}()
	s.dec.reset(conn)
	for {
		frame, err := s.dec.next()
		if err != nil {
			switch {
			case s.life.isClosed():
			case errors.Is(err, io.EOF):
				s.log.Info("stream peer disconnected")
			case errors.Is(err, errBadLength):
				s.log.Error("stream peer sent a bad frame length; dropping it", "err", err)
			default:
				s.log.Warn("stream peer lost", "err", err)
			}
			return
		}
		if len(frame) == 0 {
			continue
		}
		rx.Receive(frame)
	}
}

// Close stops listening, drops the peer and waits for the receive goroutine.
func (s *Stream) Close() error {
	return s.life.close(func() error {
		s.connMu.Lock()
		close(s.closing)
		conn := s.conn
		s.conn = nil
		s.connMu.Unlock()
		var errs []error
		if s.ln != nil {
			if err := s.ln.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stream: close listener: %w", err))
			}
		}
		if conn != nil {
			if err := conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("stream: close peer: %w", err))
			}
		}
		return errors.Join(errs...)
	})
}
