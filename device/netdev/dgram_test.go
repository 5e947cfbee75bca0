package netdev

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"e1000e-vfu/internal/leakcheck"
)

func TestDgramUDPRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	// Bind two sockets on loopback with kernel-chosen ports, then point
	// each at the other.
	pa, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addrA, addrB := pa.LocalAddr().String(), pb.LocalAddr().String()
	pa.Close()
	pb.Close()
	cfgA, err := Parse("dgram,local=" + addrA + ",remote=" + addrB)
	if err != nil {
		t.Fatal(err)
	}
	_, portA, _ := net.SplitHostPort(addrA)
	_, portB, _ := net.SplitHostPort(addrB)
	cfgB, err := Parse("dgram,local.type=inet,local.host=127.0.0.1,local.port=" + portB +
		",remote.type=inet,remote.host=127.0.0.1,remote.port=" + portA)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(cfgA, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(cfgB, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dgramRoundTrip(t, a, b, []int{14, 60, 1514, 9018, 65507})
	if err := a.Send(make([]byte, 65508)); err == nil {
		t.Fatal("a frame too big for UDP was sent")
	}
}

// dgramRoundTrip starts a and b and sends frames of each size both ways.
func dgramRoundTrip(t *testing.T, a, b Backend, sizes []int) {
	t.Helper()
	ra, rb := newCollector(), newCollector()
	if err := a.Start(ra); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	for i, n := range sizes {
		f := testFrame(n, byte(i))
		if err := a.Send(f); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
		mustEqual(t, rb.next(t), f)
		if err := b.Send(f); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
		mustEqual(t, ra.next(t), f)
	}
}

func TestDgramUnixRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cfgA, err := Parse("dgram,local.path=" + pa + ",remote.path=" + pb)
	if err != nil {
		t.Fatal(err)
	}
	cfgB, err := Parse("dgram,local.type=unix,local.path=" + pb + ",remote.type=unix,remote.path=" + pa)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(cfgA, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	// Nobody at b yet: the frame is lost, quietly.
	if err := a.Send(testFrame(60, 0)); err != nil {
		t.Fatalf("send with no remote: %v", err)
	}
	b, err := Open(cfgB, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	dgramRoundTrip(t, a, b, []int{14, 60, 1514, 9018, MaxFrameSize})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Close removes the socket files it bound.
	for _, p := range []string{pa, pb} {
		if _, err := net.Dial("unixgram", p); err == nil {
			t.Fatalf("%s still answers", p)
		}
	}
	if err := a.Send(testFrame(60, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

func TestDgramOversizedDropped(t *testing.T) {
	leakcheck.Check(t)
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	d, err := OpenDgram(DgramConfig{Network: "unixgram", Local: pa, Remote: pb}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rx := newCollector()
	if err := d.Start(rx); err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: pb, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	to := &net.UnixAddr{Name: pa, Net: "unixgram"}
	peer.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := peer.WriteToUnix(make([]byte, MaxFrameSize+100), to); err != nil {
		t.Fatal(err)
	}
	small := testFrame(60, 5)
	if _, err := peer.WriteToUnix(small, to); err != nil {
		t.Fatal(err)
	}
	// Only the frame that fits arrives.
	mustEqual(t, rx.next(t), small)
	rx.expectNone(t, 20*time.Millisecond)
}

func TestDgramCloseSemantics(t *testing.T) {
	leakcheck.Check(t)
	d, err := OpenDgram(DgramConfig{Network: "udp", Local: "127.0.0.1:0", Remote: "127.0.0.1:9"}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	rx := newCollector()
	if err := d.Start(rx); err != nil {
		t.Fatal(err)
	}
	src, err := net.Dial("udp", d.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f := testFrame(60, 0)
	for i := 0; i < 3; i++ {
		if _, err := src.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	rx.next(t)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	rx.closed.Store(true)
	for i := 0; i < 10; i++ {
		src.Write(f) // may fail once the port is gone; that is fine
	}
	time.Sleep(20 * time.Millisecond)
	if n := rx.lateCalls.Load(); n != 0 {
		t.Fatalf("%d Receive calls after Close returned", n)
	}
}

func TestDgramOpenErrors(t *testing.T) {
	leakcheck.Check(t)
	cases := []DgramConfig{
		{Network: "udp", Local: "127.0.0.1:notaport", Remote: "127.0.0.1:1"},
		{Network: "udp", Local: "127.0.0.1:0", Remote: "127.0.0.1:99999"},
		{Network: "unixgram", Local: filepath.Join(t.TempDir(), "missing-dir", "a"), Remote: "b"},
		{Network: "unixgram", Local: "", Remote: "b"},
		{Network: "ip", Local: "a", Remote: "b"},
	}
	for _, c := range cases {
		if d, err := OpenDgram(c, quietLog()); err == nil {
			d.Close()
			t.Errorf("%+v opened", c)
		}
	}
}

func TestDgramSendNoAllocs(t *testing.T) {
	d, err := OpenDgram(DgramConfig{Network: "udp", Local: "127.0.0.1:0", Remote: "127.0.0.1:9"}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f := testFrame(1514, 0)
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.Send(f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per UDP Send, want 0", allocs)
	}
}

func TestDgramUnixStaleSocketReplaced(t *testing.T) {
	leakcheck.Check(t)
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	// A socket file whose owner is gone, as a crash leaves behind.
	old, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: pa, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	d, err := OpenDgram(DgramConfig{Network: "unixgram", Local: pa, Remote: pb}, quietLog())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer d.Close()
	// A live one is left alone.
	if d2, err := OpenDgram(DgramConfig{Network: "unixgram", Local: pa, Remote: pb}, quietLog()); err == nil {
		d2.Close()
		t.Fatal("took over a socket in use")
	}
}

func BenchmarkDgramUDPRoundTrip1500(b *testing.B) {
	near, err := OpenDgram(DgramConfig{Network: "udp", Local: "127.0.0.1:0", Remote: "127.0.0.1:9"}, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer near.Close()
	far, err := OpenDgram(DgramConfig{Network: "udp", Local: "127.0.0.1:0", Remote: near.LocalAddr().String()}, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer far.Close()
	near.udpRemote = far.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	got := signalRx{ch: make(chan struct{}, 1)}
	if err := near.Start(got); err != nil {
		b.Fatal(err)
	}
	if err := far.Start(echoRx{far}); err != nil {
		b.Fatal(err)
	}
	f := testFrame(1500, 0)
	// UDP may lose a datagram even on loopback; a lost one fails the run
	// instead of hanging it.
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	b.SetBytes(1500)
	b.ReportAllocs()
	for b.Loop() {
		if err := near.Send(f); err != nil {
			b.Fatal(err)
		}
		timer.Reset(waitLimit)
		select {
		case <-got.ch:
		case <-timer.C:
			b.Fatal("datagram lost")
		}
	}
}
