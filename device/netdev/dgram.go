package netdev

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/unixsock"
)

// DgramConfig describes QEMU's dgram netdev: one frame per datagram, no
// length prefix, between a local and a remote socket address.
type DgramConfig struct {
	// Network is "udp" (Local and Remote are host:port) or "unixgram"
	// (Local and Remote are socket paths).
	Network string
	Local   string
	Remote  string
	// SendTimeout bounds how long Send waits for room in the socket; zero
	// means DefaultSendTimeout.
	SendTimeout time.Duration
}

// maxReadErrors is how many failed reads in a row end the receive loop,
// so a socket stuck in an error state does not spin.
const maxReadErrors = 100

// Dgram is a backend on a datagram socket. It binds Local, sends every frame
// to Remote and accepts frames from any sender (as QEMU does). A frame the
// remote is not there to take (no socket at the path yet) is dropped.
type Dgram struct {
	cfg  DgramConfig
	log  *slog.Logger
	life lifecycle

	conn        net.Conn
	udp         *net.UDPConn
	udpRemote   netip.AddrPort
	unix        *net.UnixConn
	unixRemote  *net.UnixAddr
	removeLocal string // the socket file to remove on Close

	// buf is one byte longer than MaxFrameSize so an oversized datagram
	// shows as such instead of arriving silently truncated.
	buf []byte
	// A live upgrade pauses the receive loop (handover.go).
	pause pauser
}

var _ Backend = (*Dgram)(nil)

// OpenDgram binds cfg.Local and resolves cfg.Remote.
func OpenDgram(cfg DgramConfig, log *slog.Logger) (*Dgram, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	d := &Dgram{cfg: cfg, log: log, buf: make([]byte, MaxFrameSize+1)}
	switch cfg.Network {
	case "udp":
		local, err := net.ResolveUDPAddr("udp", cfg.Local)
		if err != nil {
			return nil, fmt.Errorf("dgram: local address %q: %w", cfg.Local, err)
		}
		remote, err := net.ResolveUDPAddr("udp", cfg.Remote)
		if err != nil {
			return nil, fmt.Errorf("dgram: remote address %q: %w", cfg.Remote, err)
		}
		conn, err := net.ListenUDP("udp", local)
		if err != nil {
			return nil, fmt.Errorf("dgram: bind %s: %w", cfg.Local, err)
		}
		d.udp, d.conn = conn, conn
		// Unmap so an IPv4 remote matches the socket's family on send.
		d.udpRemote = netip.AddrPortFrom(remote.AddrPort().Addr().Unmap(), remote.AddrPort().Port())
	case "unixgram":
		if cfg.Local == "" || cfg.Remote == "" {
			return nil, fmt.Errorf("dgram: unix sockets need both a local and a remote path")
		}
		// A socket file left by a process that died is replaced; one
		// still bound, or anything else at the path, is not.
		if err := unixsock.RemoveStale("unixgram", cfg.Local); err != nil {
			return nil, fmt.Errorf("dgram: bind %s: %w", cfg.Local, err)
		}
		local := &net.UnixAddr{Name: cfg.Local, Net: "unixgram"}
		conn, err := net.ListenUnixgram("unixgram", local)
		if err != nil {
			return nil, fmt.Errorf("dgram: bind %s: %w", cfg.Local, err)
		}
		d.unix, d.conn = conn, conn
		d.unixRemote = &net.UnixAddr{Name: cfg.Remote, Net: "unixgram"}
		d.removeLocal = cfg.Local
	default:
		return nil, fmt.Errorf("dgram: network %q is neither udp nor unixgram", cfg.Network)
	}
	log.Debug("dgram opened", "network", cfg.Network, "local", d.conn.LocalAddr().String(), "remote", cfg.Remote)
	return d, nil
}

// LocalAddr is the bound local address (useful with port 0).
func (d *Dgram) LocalAddr() net.Addr { return d.conn.LocalAddr() }

// Send sends frame as one datagram to the remote address.
func (d *Dgram) Send(frame []byte) error {
	if err := checkFrame(frame); err != nil {
		return err
	}
	if d.life.isClosed() {
		return ErrClosed
	}
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.cfg.SendTimeout)); err != nil {
		return d.sendErr(err)
	}
	var err error
	if d.udp != nil {
		_, err = d.udp.WriteToUDPAddrPort(frame, d.udpRemote)
	} else {
		_, err = d.unix.WriteToUnix(frame, d.unixRemote)
	}
	if err != nil {
		return d.sendErr(err)
	}
	return nil
}

func (d *Dgram) sendErr(err error) error {
	switch {
	case errors.Is(err, net.ErrClosed):
		return ErrClosed
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ECONNREFUSED):
		// Nobody at the remote address yet: the frame is lost, as on a
		// cable with nothing at the other end.
		return nil
	}
	return fmt.Errorf("dgram: send to %s: %w", d.cfg.Remote, err)
}

// Start delivers received datagrams to rx until Close.
func (d *Dgram) Start(rx Receiver) error {
	d.pause.init()
	return d.life.start(func() { d.readLoop(rx) })
}

func (d *Dgram) readLoop(rx Receiver) {
	failures := 0
	for {
		n, err := d.conn.Read(d.buf)
		if err != nil {
			if d.pause.park(err) {
				continue
			}
			if d.life.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			failures++
			if failures >= maxReadErrors {
				d.log.Error("dgram receive failing; stopped", "err", err)
				return
			}
			d.log.Warn("dgram receive failed", "err", err)
			continue
		}
		failures = 0
		if n > MaxFrameSize {
			d.log.Warn("dgram dropped an oversized datagram", "min_bytes", n)
			continue
		}
		if n == 0 {
			continue
		}
		rx.Receive(d.buf[:n])
	}
}

// Close stops the receive goroutine, closes the socket and removes the local
// socket file it bound.
func (d *Dgram) Close() error {
	return d.life.close(func() error {
		var errs []error
		if err := d.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dgram: close: %w", err))
		}
		// A paused loop is let go only now, to find the socket closed.
		d.pause.release()
		d.life.mu.Lock()
		remove := d.removeLocal
		d.life.mu.Unlock()
		if remove != "" {
			if err := os.Remove(remove); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("dgram: remove %s: %w", remove, err))
			}
		}
		return errors.Join(errs...)
	})
}
