package netdev

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitLimit bounds every wait in these tests.
const waitLimit = 10 * time.Second

// quietLog discards log output so expected errors do not clutter test logs.
func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// collector is a Receiver that keeps copies of what it gets and notices any
// Receive made after the test declared the backend closed.
type collector struct {
	frames    chan []byte
	closed    atomic.Bool
	lateCalls atomic.Int64
}

func newCollector() *collector { return &collector{frames: make(chan []byte, 1024)} }

func (c *collector) Receive(frame []byte) {
	if c.closed.Load() {
		c.lateCalls.Add(1)
	}
	cp := append([]byte(nil), frame...)
	select {
	case c.frames <- cp:
	default:
	}
}

// next waits for one frame.
func (c *collector) next(t *testing.T) []byte {
	t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-time.After(waitLimit):
		t.Fatal("no frame received in time")
		return nil
	}
}

// expectNone checks that no frame arrives within d.
func (c *collector) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case f := <-c.frames:
		t.Fatalf("unexpected frame of %d bytes", len(f))
	case <-time.After(d):
	}
}

// testFrame is an Ethernet frame of n bytes (n >= 14) with a local
// experimental EtherType and a payload that encodes seq.
func testFrame(n int, seq byte) []byte {
	f := make([]byte, n)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 0x02})
	f[12], f[13] = 0x88, 0xb5
	for i := 14; i < n; i++ {
		f[i] = seq + byte(i)
	}
	return f
}

func mustEqual(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("frame differs: got %d bytes, want %d", len(got), len(want))
	}
}

// socketpair returns two connected UNIX stream conns.
func socketpair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}
