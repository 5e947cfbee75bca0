package netdev

import (
	"errors"
	"testing"
	"time"

	"e1000e-vfu/internal/leakcheck"
)

func TestPairRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	a, b := NewPair()
	defer a.Close()
	defer b.Close()
	ra, rb := newCollector(), newCollector()
	// Frames sent before the peer starts wait for it.
	early := testFrame(60, 7)
	if err := a.Send(early); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ra); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, rb.next(t), early)
	for i, n := range []int{14, 1514, MaxFrameSize} {
		f := testFrame(n, byte(i))
		if err := a.Send(f); err != nil {
			t.Fatal(err)
		}
		// Send copied the frame: changing it now does not change what arrives.
		want := append([]byte(nil), f...)
		f[len(f)-1] ^= 0xff
		mustEqual(t, rb.next(t), want)
		if err := b.Send(want); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, ra.next(t), want)
	}
}

func TestPairDropsWhenFull(t *testing.T) {
	leakcheck.Check(t)
	a, b := NewPair()
	defer a.Close()
	defer b.Close()
	f := testFrame(60, 0)
	for i := 0; i < pairDepth+10; i++ {
		if err := a.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Dropped(); got != 10 {
		t.Fatalf("dropped %d, want 10", got)
	}
	rb := newCollector()
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < pairDepth; i++ {
		rb.next(t)
	}
	rb.expectNone(t, 10*time.Millisecond)
}

func TestPairClose(t *testing.T) {
	leakcheck.Check(t)
	a, b := NewPair()
	rb := newCollector()
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	rb.closed.Store(true)
	if err := a.Send(testFrame(60, 0)); err != nil {
		t.Fatalf("send to a closed peer: %v", err)
	}
	if b.Dropped() != 1 {
		t.Fatalf("dropped %d, want 1", b.Dropped())
	}
	if err := b.Send(testFrame(60, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send on closed end: %v", err)
	}
	a.Close()
	time.Sleep(10 * time.Millisecond)
	if rb.lateCalls.Load() != 0 {
		t.Fatal("Receive after Close")
	}
}

func TestPairSendNoAllocs(t *testing.T) {
	a, b := NewPair()
	defer a.Close()
	defer b.Close()
	got := signalRx{ch: make(chan struct{}, 1)}
	if err := b.Start(got); err != nil {
		t.Fatal(err)
	}
	f := testFrame(1514, 0)
	allocs := testing.AllocsPerRun(100, func() {
		if err := a.Send(f); err != nil {
			t.Fatal(err)
		}
		<-got.ch
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame, want 0", allocs)
	}
}

func benchmarkPairRoundTrip(b *testing.B, size int) {
	near, far := NewPair()
	benchmarkRoundTrip(b, near, far, size)
}

func BenchmarkPairRoundTrip64(b *testing.B)   { benchmarkPairRoundTrip(b, 64) }
func BenchmarkPairRoundTrip1500(b *testing.B) { benchmarkPairRoundTrip(b, 1500) }
