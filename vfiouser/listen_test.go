package vfiouser

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/internal/leakcheck"
)

func TestListenSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dev.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	// A live socket is refused.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	ln.Close()

	// A stale socket file (nothing accepts) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal("stale socket file missing:", err)
	}
	ln, err = Listen(path)
	if err != nil {
		t.Fatal("stale socket not replaced:", err)
	}
	ln.Close()

	// Something that is not a socket is left alone.
	plain := filepath.Join(dir, "file")
	os.WriteFile(plain, []byte("x"), 0o600)
	if _, err := Listen(plain); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

// TestOneClientAtATime: a second client is refused while the first goes on;
// when the first leaves, the device is disconnected and the next is served.
func TestOneClientAtATime(t *testing.T) {
	leakcheck.FDs(t)
	path := filepath.Join(t.TempDir(), "dev.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	dev := newFakeDevice(t)
	srv := newServer(t, dev, Options{HandoverWait: time.Second})
	served := make(chan error)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ln.Close()
		if err := <-served; err != nil {
			t.Error(err)
		}
		srv.Close()
	}()

	first, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	second, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Negotiate(nil); err == nil {
		t.Fatal("second client served while the first is connected")
	}
	second.Close()
	if _, err := first.GetInfo(); err != nil {
		t.Fatal("first client disturbed by the second:", err)
	}
	first.Close()

	// A client that connects right after the first one closed waits for
	// its teardown instead of being refused, as a restarted QEMU would.
	third, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := third.Negotiate(nil); err != nil {
		t.Fatal("client right after the first left:", err)
	}
	if _, err := third.GetInfo(); err != nil {
		t.Fatal(err)
	}
	third.Close()
	deadline := time.Now().Add(10 * time.Second)
	// Wait (bounded) for the server to notice the last client left.
	idle := func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.active == nil
	}
	for c, d, _ := dev.counts(); c != d || !idle(); c, d, _ = dev.counts() {
		if time.Now().After(deadline) {
			t.Fatalf("connects %d disconnects %d", c, d)
		}
		time.Sleep(time.Millisecond)
	}
	if c, _, _ := dev.counts(); c < 2 {
		t.Fatalf("%d connects", c)
	}
}
