package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Relay joins a NIC's stream socket backend (QEMU's -netdev stream framing:
// each frame preceded by its length as a 32-bit big-endian number) to a TAP
// device in a namespace, so that the namespace's kernel is the guest's peer
// over the stream backend just as over a TAP backend.
type Relay struct {
	tap  *os.File
	conn net.Conn
	wg   sync.WaitGroup
	once sync.Once
	mu   sync.Mutex
	err  error
}

// maxFrame bounds a frame from the stream; a longer length is a framing error.
const maxFrame = 65536 + 64

// StartRelay opens TAP tapName inside ns and connects to the stream socket at
// path (retrying until timeout, as the NIC side may still be starting).
func StartRelay(ns *NetNS, tapName, path string, timeout time.Duration) (*Relay, error) {
	var tap *os.File
	err := ns.Do(func() (err error) {
		tap, err = openTAP(tapName)
		return err
	})
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	deadline := time.Now().Add(timeout)
	for {
		conn, err = net.Dial("unix", path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tap.Close()
			return nil, fmt.Errorf("relay: connecting to %s: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := &Relay{tap: tap, conn: conn}
	r.wg.Add(2)
	go r.toStream()
	go r.toTAP()
	return r, nil
}

func (r *Relay) fail(err error) {
	r.mu.Lock()
	if r.err == nil && err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
		r.err = err
	}
	r.mu.Unlock()
	r.shut()
}

func (r *Relay) shut() {
	r.once.Do(func() {
		r.conn.Close()
		r.tap.Close()
	})
}

func (r *Relay) toStream() {
	defer r.wg.Done()
	b := make([]byte, 4+maxFrame)
	for {
		n, err := r.tap.Read(b[4:])
		if err != nil {
			r.fail(fmt.Errorf("relay: tap read: %w", err))
			return
		}
		binary.BigEndian.PutUint32(b, uint32(n))
		if _, err := r.conn.Write(b[:4+n]); err != nil {
			r.fail(fmt.Errorf("relay: stream write: %w", err))
			return
		}
	}
}

func (r *Relay) toTAP() {
	defer r.wg.Done()
	var hdr [4]byte
	b := make([]byte, maxFrame)
	for {
		if _, err := io.ReadFull(r.conn, hdr[:]); err != nil {
			r.fail(fmt.Errorf("relay: stream read: %w", err))
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxFrame {
			r.fail(fmt.Errorf("relay: frame of %d bytes", n))
			return
		}
		if _, err := io.ReadFull(r.conn, b[:n]); err != nil {
			r.fail(fmt.Errorf("relay: stream read: %w", err))
			return
		}
		if _, err := r.tap.Write(b[:n]); err != nil {
			continue // the TAP refuses what its kernel would drop; go on
		}
	}
}

// Close stops the relay and returns the first error it met, if any.
func (r *Relay) Close() error {
	r.shut()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil && errors.Is(r.err, io.EOF) {
		return nil
	}
	return r.err
}

// openTAP attaches to the existing TAP device name in the calling thread's
// namespace, in non-blocking mode so that Close interrupts a Read.
func openTAP(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:unix.IFNAMSIZ-1], name)
	binary.NativeEndian.PutUint16(req[unix.IFNAMSIZ:], unix.IFF_TAP|unix.IFF_NO_PI)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, e)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
