package netdev

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/internal/leakcheck"
)

// newStreamConn makes a quiet Stream backend on an already connected
// stream, such as one end of a socketpair. Its peer is not replaced when it
// goes.
func newStreamConn(conn net.Conn) *Stream {
	s := newStream(StreamConfig{Network: conn.LocalAddr().Network()}, quietLog())
	s.conn = conn
	return s
}

// readStreamFrame reads one length-prefixed frame from a raw conn.
func readStreamFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("read header: %v", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		t.Fatalf("length %d", n)
	}
	f := make([]byte, n)
	if _, err := io.ReadFull(c, f); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return f
}

func writeRaw(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestStreamSocketpairRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	ca, cb := socketpair(t)
	a, b := newStreamConn(ca), newStreamConn(cb)
	defer a.Close()
	defer b.Close()
	ra, rb := newCollector(), newCollector()
	if err := a.Start(ra); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{14, 60, 1514, 9018, MaxFrameSize} {
		f := testFrame(n, byte(i))
		if err := a.Send(f); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, rb.next(t), f)
		if err := b.Send(f); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, ra.next(t), f)
	}
	if err := a.Send(make([]byte, MaxFrameSize+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized send: %v", err)
	}
}

func TestStreamCloseSemantics(t *testing.T) {
	leakcheck.Check(t)
	ca, cb := socketpair(t)
	defer cb.Close()
	s := newStreamConn(ca)
	rx := newCollector()
	if err := s.Start(rx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(rx); err == nil {
		t.Fatal("second Start succeeded")
	}
	// Keep frames coming while closing, so a late Receive would show.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f := encodeStream(testFrame(60, 0))
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cb.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := cb.Write(f); err != nil {
				return
			}
		}
	}()
	rx.next(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rx.closed.Store(true)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-done
	if n := rx.lateCalls.Load(); n != 0 {
		t.Fatalf("%d Receive calls after Close returned", n)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Send(testFrame(60, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if err := s.Start(rx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

func TestStreamCloseBeforeStart(t *testing.T) {
	leakcheck.Check(t)
	ca, cb := socketpair(t)
	defer cb.Close()
	s := newStreamConn(ca)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The conn is closed too: the peer sees the end of the stream.
	cb.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := cb.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read: %v, want EOF", err)
	}
}

func TestStreamUnixServerAcceptsNextPeer(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	cfg, err := Parse("stream,path=" + path + ",server=on")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := b.(*Stream)
	rx := newCollector()
	if err := s.Start(rx); err != nil {
		t.Fatal(err)
	}
	// With no peer, frames are dropped without error.
	if err := s.Send(testFrame(60, 9)); err != nil {
		t.Fatalf("send without peer: %v", err)
	}
	for peer := 0; peer < 3; peer++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		f := testFrame(100+peer, byte(peer))
		writeRaw(t, c, encodeStream(f))
		mustEqual(t, rx.next(t), f)
		// The peer is installed before its first frame is delivered.
		if err := s.Send(f); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, readStreamFrame(t, c), f)
		c.Close()
		waitUntil(t, func() bool { return !s.Connected() })
	}
}

// waitUntil polls cond until it holds, failing after waitLimit.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestStreamBadLengthDropsPeer(t *testing.T) {
	leakcheck.Check(t)
	s, err := OpenStream(StreamConfig{Network: "tcp", Address: "127.0.0.1:0", Server: true}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rx := newCollector()
	if err := s.Start(rx); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := testFrame(60, 1)
	writeRaw(t, c, append(encodeStream(good), 0x7f, 0xff, 0xff, 0xff, 1, 2, 3))
	mustEqual(t, rx.next(t), good)
	// The server hangs up on the bad length.
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after a bad length")
	}
	rx.expectNone(t, 20*time.Millisecond)
	// And serves the next peer.
	c2, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	writeRaw(t, c2, encodeStream(good))
	mustEqual(t, rx.next(t), good)
}

func TestStreamClientAndReconnect(t *testing.T) {
	leakcheck.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cfg, err := Parse("stream,host=127.0.0.1,port=" + port + ",reconnect-ms=10")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rx := newCollector()
	if err := b.Start(rx); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(waitLimit))
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		f := testFrame(1514, byte(round))
		writeRaw(t, c, encodeStream(f))
		mustEqual(t, rx.next(t), f)
		if err := b.Send(f); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, readStreamFrame(t, c), f)
		c.Close() // the client dials again after reconnect-ms
	}
}

func TestStreamClientConnectFails(t *testing.T) {
	leakcheck.Check(t)
	_, err := OpenStream(StreamConfig{Network: "unix", Address: filepath.Join(t.TempDir(), "nobody")}, quietLog())
	if err == nil {
		t.Fatal("connected to nothing")
	}
}

func TestStreamStaleSocketReplaced(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	// A socket file nobody listens on any more, as a crash leaves behind.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	s, err := OpenStream(StreamConfig{Network: "unix", Address: path, Server: true}, quietLog())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// A live one is left alone.
	if _, err := OpenStream(StreamConfig{Network: "unix", Address: path, Server: true}, quietLog()); err == nil {
		t.Fatal("took over a socket in use")
	}
	s.Close()
}

// A path holding something that is not a socket is refused and left as it
// was: it may be somebody's file.
func TestStreamListenNotASocket(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStream(StreamConfig{Network: "unix", Address: path, Server: true}, quietLog())
	if err == nil {
		s.Close()
		t.Fatal("listened over a regular file")
	}
	if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("error %v; want it to say the path is not a socket", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("file changed: %q, %v", b, err)
	}
}

func TestStreamSendNoAllocs(t *testing.T) {
	ca, cb := socketpair(t)
	defer cb.Close()
	s := newStreamConn(ca)
	defer s.Close()
	go io.Copy(io.Discard, cb)
	f := testFrame(1514, 0)
	allocs := testing.AllocsPerRun(200, func() {
		if err := s.Send(f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Send, want 0", allocs)
	}
}

// echoRx sends every frame straight back through its backend.
type echoRx struct{ b Backend }

func (e echoRx) Receive(f []byte) { e.b.Send(f) }

// signalRx counts frames and signals each arrival without allocating.
type signalRx struct{ ch chan struct{} }

func (s signalRx) Receive([]byte) { s.ch <- struct{}{} }

func benchmarkStreamRoundTrip(b *testing.B, size int) {
	ca, cb := socketpair(b)
	benchmarkRoundTrip(b, newStreamConn(ca), newStreamConn(cb), size)
}

// benchmarkRoundTrip sends frames of size from near to far, which echoes
// them, one at a time, and closes both.
func benchmarkRoundTrip(b *testing.B, near, far Backend, size int) {
	defer near.Close()
	defer far.Close()
	got := signalRx{ch: make(chan struct{}, 1)}
	if err := near.Start(got); err != nil {
		b.Fatal(err)
	}
	if err := far.Start(echoRx{far}); err != nil {
		b.Fatal(err)
	}
	f := testFrame(size, 0)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := near.Send(f); err != nil {
			b.Fatal(err)
		}
		<-got.ch
	}
}

func BenchmarkStreamRoundTrip64(b *testing.B)   { benchmarkStreamRoundTrip(b, 64) }
func BenchmarkStreamRoundTrip1500(b *testing.B) { benchmarkStreamRoundTrip(b, 1500) }

func TestStreamPeerThatStopsReadingIsDropped(t *testing.T) {
	leakcheck.Check(t)
	s, err := OpenStream(StreamConfig{Network: "tcp", Address: "127.0.0.1:0", Server: true,
		SendTimeout: 50 * time.Millisecond}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(newCollector()); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, s.Connected)
	// The peer never reads: once the socket buffers fill, a Send times out
	// and the peer is dropped instead of blocking the NIC for good.
	f := testFrame(MaxFrameSize, 0)
	var sendErr error
	for i := 0; i < 10000 && sendErr == nil; i++ {
		sendErr = s.Send(f)
	}
	if sendErr == nil {
		t.Fatal("sends to a peer that never reads kept succeeding")
	}
	if s.Connected() {
		t.Fatal("peer still attached after a send timed out")
	}
	// Later frames are dropped quietly until a new peer comes.
	if err := s.Send(f); err != nil {
		t.Fatalf("send with no peer: %v", err)
	}
}
