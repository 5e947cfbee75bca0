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
	vlan uint16 // if not 0: the stream side carries this VLAN, the TAP none
	tap  *os.File
	conn net.Conn
	wg   sync.WaitGroup
	once sync.Once
	mu   sync.Mutex
	err  error
}

// maxFrame bounds a frame from the stream; a longer length is a framing error.
const maxFrame = 65536 + 64

// StartVLANRelay opens TAP tapName inside ns and connects to the stream
// socket at path (retrying until timeout, as the NIC side may still be
// starting). A vid other than 0 adds an 802.1Q tag: frames from the TAP get
// tag vid on their way to the NIC, frames from the NIC lose it on their way
// to the TAP, and NIC frames without that tag are dropped. The namespace's
// kernel then talks to a guest VLAN sub-interface with no VLAN support of
// its own.
func StartVLANRelay(ns *NetNS, tapName, path string, vid uint16, timeout time.Duration) (*Relay, error) {
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
	r := &Relay{tap: tap, conn: conn, vlan: vid}
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
	b := make([]byte, 4+maxFrame+4)
	for {
		n, err := r.tap.Read(b[4:])
		if err != nil {
			r.fail(fmt.Errorf("relay: tap read: %w", err))
			return
		}
		frame := b[4 : 4+n]
		if r.vlan != 0 && n >= 12 {
			// Make room for the tag after the two MAC addresses.
			copy(b[4+16:4+n+4], b[4+12:4+n])
			binary.BigEndian.PutUint16(b[4+12:], 0x8100)
			binary.BigEndian.PutUint16(b[4+14:], r.vlan&0x0fff)
			n += 4
			frame = b[4 : 4+n]
		}
		binary.BigEndian.PutUint32(b, uint32(len(frame)))
		if _, err := r.conn.Write(b[:4+n]); err != nil {
			r.fail(fmt.Errorf("relay: stream write: %w", err))
			return
		}
	}
}

func (r *Relay) toTAP() {
	defer r.wg.Done()
	b := make([]byte, maxFrame)
	for {
		frame, err := readFrame(r.conn, b)
		if err != nil {
			r.fail(err)
			return
		}
		if r.vlan != 0 {
			var ok bool
			if frame, ok = untag(frame, r.vlan); !ok {
				continue
			}
		}
		if _, err := r.tap.Write(frame); err != nil {
			continue // the TAP refuses what its kernel would drop; go on
		}
	}
}

// readFrame reads one length-prefixed frame from the stream into buf
// (len(buf) bounds the frame) and returns it.
func readFrame(rd io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(rd, hdr[:]); err != nil {
		return nil, fmt.Errorf("relay: stream read: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > uint32(len(buf)) {
		return nil, fmt.Errorf("relay: frame of %d bytes (at most %d)", n, len(buf))
	}
	if _, err := io.ReadFull(rd, buf[:n]); err != nil {
		return nil, fmt.Errorf("relay: stream read: %w", err)
	}
	return buf[:n], nil
}

// untag removes an 802.1Q tag with VLAN id vid (in place); ok is false
// for a frame without that tag.
func untag(f []byte, vid uint16) ([]byte, bool) {
	if len(f) < 18 || binary.BigEndian.Uint16(f[12:]) != 0x8100 || binary.BigEndian.Uint16(f[14:])&0x0fff != vid {
		return nil, false
	}
	copy(f[12:], f[16:])
	return f[:len(f)-4], true
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
