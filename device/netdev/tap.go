package netdev

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// TAPConfig names the TAP interface to use.
type TAPConfig struct {
	// Name is the interface to attach to, created if it does not exist
	// (and then removed again on Close). Empty lets the kernel choose
	// (tap0, tap1, ...); the chosen name is TAP.Name.
	Name string
	// Up brings the interface administratively up after opening it.
	Up bool
}

// TAP is a backend on a Linux TAP interface. Frames are plain Ethernet
// frames (IFF_NO_PI, no virtio-net header): one read or write per frame.
type TAP struct {
	file *os.File
	name string
	log  *slog.Logger
	life lifecycle
	buf  []byte
	// A live upgrade pauses the receive loop (handover.go).
	pause pauser
}

var _ Backend = (*TAP)(nil)

// OpenTAP opens /dev/net/tun and attaches it to the interface cfg names,
// creating it if needed, in the network namespace of the calling thread.
func OpenTAP(cfg TAPConfig, log *slog.Logger) (*TAP, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap: interface name %q longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}
	// Non-blocking, so that os.NewFile puts the fd under Go's poller and
	// Close wakes a pending Read.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(cfg.Name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: interface name %q: %w", cfg.Name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: attach to %q: %w", cfg.Name, err)
	}
	name := ifr.Name()
	if cfg.Up {
		if err := setLinkUp(name); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tap: bring %s up: %w", name, err)
		}
	}
	t := &TAP{
		file: os.NewFile(uintptr(fd), "tap:"+name),
		name: name,
		log:  log,
		buf:  make([]byte, MaxFrameSize),
	}
	log.Debug("tap opened", "ifname", name, "up", cfg.Up)
	return t, nil
}

// setLinkUp sets IFF_UP on the interface through an ioctl socket.
func setLinkUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ioctl socket: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// Name is the interface's name, as the kernel reported it.
func (t *TAP) Name() string { return t.name }

// Send writes one frame to the interface.
func (t *TAP) Send(frame []byte) error {
	if err := checkFrame(frame); err != nil {
		return err
	}
	if _, err := t.file.Write(frame); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("tap %s: write: %w", t.name, err)
	}
	return nil
}

// Start delivers frames read from the interface to rx until Close.
func (t *TAP) Start(rx Receiver) error {
	t.pause.init()
	return t.life.start(func() { t.readLoop(rx) })
}

func (t *TAP) readLoop(rx Receiver) {
	for {
		n, err := t.file.Read(t.buf)
		if err != nil {
			if t.pause.park(err) {
				continue
			}
			if errors.Is(err, os.ErrClosed) || t.life.isClosed() {
				return
			}
			// The interface went away (or worse): nothing more will come.
			t.log.Error("tap read failed; receive stopped", "ifname", t.name, "err", err)
			return
		}
		if n > 0 {
			rx.Receive(t.buf[:n])
		}
	}
}

// Close stops the receive goroutine and closes the TAP file; an interface
// this TAP created disappears with it.
func (t *TAP) Close() error {
	return t.life.close(func() error {
		err := t.file.Close()
		// A paused loop is let go only now, to find the file closed.
		t.pause.release()
		if err != nil {
			return fmt.Errorf("tap %s: close: %w", t.name, err)
		}
		return nil
	})
}
