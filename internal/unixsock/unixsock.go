// Package unixsock is the one way this program serves on a UNIX socket:
// Listen creates the socket file, replacing one a dead process left behind
// but never one that is still served or that is not a socket, and Accept
// takes the next connection, waiting out the errors that pass (running out
// of descriptors, a peer gone before it was accepted) instead of stopping
// or spinning.
//
// The vfio-user server, the control socket and the stream and dgram
// network backends all use it, so a path left by a crash is treated the
// same everywhere. Rights and CloseFDs are the descriptors passed over
// such a socket, for vfio-user and the live upgrade's handover alike.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"
)

// probeTimeout bounds the dial that tells a live socket from a stale one.
// A live server answers at once (the kernel completes the connection
// while it sits in the backlog); only a server with a full backlog makes
// the dial wait.
const probeTimeout = time.Second

// Listen creates a stream socket at path and listens on it. When mode is
// not 0 the socket file is given that mode; otherwise it keeps the one
// the umask gives.
//
// Whatever is already at path is judged by RemoveStale: a socket nobody
// answers on is replaced; a socket that answers (another server is
// running), one that cannot be probed, and anything that is not a socket
// are refused and left as they are.
//
// Errors do not repeat path: callers name the socket in their own words.
// Closing the listener removes the socket file.
func Listen(path string, mode fs.FileMode) (*net.UnixListener, error) {
	if err := RemoveStale("unix", path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", opCause(err))
	}
	// Between bind and chmod the file has the umask's mode; callers that
	// care (the control socket) check their peers' credentials too.
	if mode != 0 && !abstract(path) {
		if err := os.Chmod(path, mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting mode %#o: %w", mode, opCause(err))
		}
	}
	return ln, nil
}

// RemoveStale makes path free for a socket of the given network ("unix"
// or "unixgram") to be bound there. Nothing at path is fine. A socket is
// probed by connecting to it: it is removed only when the connection is
// refused (ECONNREFUSED: no process holds it any more). A socket that
// accepts the connection is in use; any other outcome of the probe, and
// anything at path that is not a socket, is an error too, and the file is
// left untouched: it may belong to somebody else.
func RemoveStale(network, path string) error {
	if abstract(path) {
		// Linux's abstract namespace: no file, and the kernel frees the
		// name when its last socket closes.
		return nil
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting the existing file: %w", opCause(err))
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return errors.New("exists and is not a socket")
	}
	c, err := net.DialTimeout(network, path, probeTimeout)
	if err == nil {
		c.Close()
		return errors.New("is in use: another process accepts connections on it")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("a socket exists there and probing it failed, so it is left in place: %w", opCause(err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale socket: %w", opCause(err))
	}
	return nil
}

// abstract reports whether path names a socket in Linux's abstract
// namespace, which has no file.
func abstract(path string) bool {
	return len(path) > 0 && path[0] == '@'
}

// opCause strips the *net.OpError or *fs.PathError around err, whose text
// repeats the path the caller names anyway.
func opCause(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// Accept backoff: the first wait after a transient error, and the longest.
// The wait doubles from one to the other, as net/http's Server does, so a
// process out of descriptors neither spins nor leaves clients waiting long
// once descriptors are free again.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Accept returns the next connection on ln. A transient error (see
// Transient) is logged and retried after a wait that starts at 5 ms and
// doubles up to 1 s; any other error is returned. Accept ends when ln is
// closed (the error satisfies errors.Is(err, net.ErrClosed)) or, while it
// waits between attempts, when ctx is done (it returns ctx.Err()). It does
// not watch ctx during a blocked accept: close ln to end that.
//
// ln may be any listener; the stream backend uses it for TCP as well.
func Accept(ctx context.Context, ln net.Listener, log *slog.Logger) (net.Conn, error) {
	return accept(ctx, ln, log, sleep)
}

// accept is Accept with the wait between attempts given, so tests can
// see the waits without taking them.
func accept(ctx context.Context, ln net.Listener, log *slog.Logger, wait func(context.Context, time.Duration) error) (net.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !Transient(err) {
			return nil, err
		}
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		log.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "in", backoff)
		if err := wait(ctx, backoff); err != nil {
			return nil, err
		}
	}
}

// sleep waits d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Transient reports whether an accept error passes by itself, so that
// accepting again later may succeed: the process or the system is out of
// descriptors or memory, the peer left before it was accepted, or (for
// TCP) one of the network errors that Linux's accept(2) hands over from
// the new connection and says to treat as "try again".
func Transient(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR:
		return true
	// accept(2), "Error handling", for TCP; EPERM is a firewall rule
	// refusing that one connection.
	case syscall.EPROTO, syscall.ENETDOWN, syscall.ENOPROTOOPT, syscall.EHOSTDOWN,
		syscall.ENONET, syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH,
		syscall.EPERM:
		return true
	}
	return false
}
