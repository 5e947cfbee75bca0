package netdev

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/leakcheck"
)

// TestTAPRootHandover: a paused TAP delivers nothing; the frames sent
// meanwhile wait in the interface and reach the successor that took the
// descriptor over; the old one resumes cleanly when no one takes over.
func TestTAPRootHandover(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	leakcheck.Check(t)
	var old *TAP
	var ps *packetSocket
	inNetns(t, ns, func() error {
		var err error
		if old, err = OpenTAP(TAPConfig{Up: true}, quietLog()); err != nil {
			return err
		}
		if ps, err = openPacketSocket(old.Name()); err != nil {
			old.Close()
		}
		return err
	})
	defer unix.Close(ps.fd)
	rx := newCollector()
	if err := old.Start(rx); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Pause and resume: a frame sent while paused arrives after.
	if err := old.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	f1 := testFrame(100, 1)
	if err := ps.send(f1); err != nil {
		t.Fatal(err)
	}
	rx.expectNone(t, 50*time.Millisecond)
	old.Resume()
	nextMatching(t, rx, f1)

	// Pause, hand the descriptor over, release the old one.
	if err := old.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	kind, name, fd := old.HandoverFD()
	if kind != "tap" || name != old.Name() || fd < 0 {
		t.Fatalf("%s %s %d", kind, name, fd)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f2 := testFrame(200, 2)
	if err := ps.send(f2); err != nil {
		t.Fatal(err)
	}
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TAPFromFD(ev, name, quietLog()); err == nil {
		t.Fatal("an eventfd taken for a TAP")
	}
	nu, err := TAPFromFD(dup, name, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer nu.Close()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	rx.closed.Store(true)
	rx2 := newCollector()
	if err := nu.Start(rx2); err != nil {
		t.Fatal(err)
	}
	nextMatching(t, rx2, f2)
	out := testFrame(300, 3)
	if err := nu.Send(out); err != nil {
		t.Fatal(err)
	}
	ps.waitFor(t, out)
	if rx.lateCalls.Load() != 0 {
		t.Fatal("the old TAP delivered after Close")
	}
}

// TestDgramFromFDKeepsFile: a successor's unixgram backend leaves the
// socket file alone when it is closed before the predecessor commits (the
// file is still the predecessor's), and removes it once told it is its
// own.
func TestDgramFromFDKeepsFile(t *testing.T) {
	dir := t.TempDir()
	local, remote := filepath.Join(dir, "l.sock"), filepath.Join(dir, "r.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := DgramConfig{Network: "unixgram", Local: local, Remote: remote}
	adopt := func() *Dgram {
		t.Helper()
		raw, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		fd := -1
		raw.Control(func(f uintptr) { fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) })
		if err != nil {
			t.Fatal(err)
		}
		d, err := DgramFromFD(fd, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if err := adopt().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(local); err != nil {
		t.Fatalf("a successor that gave up removed the socket file: %v", err)
	}
	d := adopt()
	d.SetUnlinkOnClose(true)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Fatalf("a successor that took over left its socket file: %v", err)
	}
}

// TestPauserStaleToken: a token left by a pause that timed out (the loop
// parked after the wait gave up) does not pass for the next pause's park.
func TestPauserStaleToken(t *testing.T) {
	var p pauser
	p.init()
	life := &lifecycle{started: true, done: make(chan struct{})}
	p.parked <- struct{}{} // the timed-out pause's park
	p.resume <- struct{}{} // and its release
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.pause(ctx, life, func(time.Time) error { return nil }); err == nil {
		t.Fatal("a pause returned on a stale park, with no loop parked")
	}
}

// A handed-over descriptor of the wrong kind is refused: a UNIX stream
// socket bound where a unixgram backend's should be, and a capture file
// without a pcap header.
func TestFromFDRefusesWrongKind(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "l.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: local}); err != nil {
		t.Fatal(err)
	}
	if _, err := DgramFromFD(fd, DgramConfig{Network: "unixgram", Local: local, Remote: filepath.Join(dir, "r.sock")}, nil); err == nil ||
		!strings.Contains(err.Error(), "not a UNIX datagram socket") {
		t.Errorf("a stream socket as the unixgram backend: %v", err)
	}

	f, err := os.Create(filepath.Join(dir, "not.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	pfd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	near, far := NewPair()
	defer near.Close()
	defer far.Close()
	if _, err := PcapFromFD(near, pfd, nil); err == nil || !strings.Contains(err.Error(), "no pcap header") {
		t.Errorf("a file of zeros as the capture: %v", err)
	}
}
