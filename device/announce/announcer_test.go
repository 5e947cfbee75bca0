package announce

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"e1000e-vfu/device/netdev"
)

// fakeClock hands every wait to the test, which fires it. After never
// blocks, so a cancelled announcement never waits for the test.
type fakeClock struct{ waits chan fakeWait }

type fakeWait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{waits: make(chan fakeWait, 64)} }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	w := fakeWait{d: d, fire: make(chan time.Time, 1)}
	c.waits <- w
	return w.fire
}

// guard bounds how long a test waits for the announcer's goroutine to
// reach its next step; it is a hang guard, never a timing assertion.
const guard = 10 * time.Second

func (c *fakeClock) next(t *testing.T) fakeWait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(guard):
		t.Fatal("the announcer never waited for its next round")
		return fakeWait{}
	}
}

// noWait checks that no wait is pending right now (the announcement ended
// or was cancelled before its next round).
func (c *fakeClock) noWait(t *testing.T) {
	t.Helper()
	select {
	case w := <-c.waits:
		t.Errorf("an unexpected wait of %v", w.d)
	default:
	}
}

// fakeSource returns whatever addresses the test sets, counting reads.
type fakeSource struct {
	mu    sync.Mutex
	addrs []Address
	reads int
}

func (s *fakeSource) set(a ...Address) {
	s.mu.Lock()
	s.addrs = a
	s.mu.Unlock()
}

func (s *fakeSource) AnnounceAddresses(dst []Address) []Address {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return append(dst, s.addrs...)
}

// fakeSender puts every frame on a channel; err, when set, fails sends.
type fakeSender struct {
	frames chan []byte
	tries  chan struct{} // one per Send call, failed or not
	mu     sync.Mutex
	err    error
}

func newFakeSender() *fakeSender {
	return &fakeSender{frames: make(chan []byte, MaxAddresses), tries: make(chan struct{}, MaxAddresses)}
}

func (s *fakeSender) Send(f []byte) error {
	select {
	case s.tries <- struct{}{}:
	default:
	}
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.frames <- append([]byte(nil), f...)
	return nil
}

func (s *fakeSender) take(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for range n {
		select {
		case f := <-s.frames:
			out = append(out, f)
		case <-time.After(guard):
			t.Fatalf("got %d frames, want %d", len(out), n)
		}
	}
	return out
}

func (s *fakeSender) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-s.frames:
		t.Errorf("an unexpected frame %x", f)
	default:
	}
}

type rig struct {
	clk *fakeClock
	src *fakeSource
	out *fakeSender
	a   *Announcer
}

func newRig(t *testing.T) *rig {
	r := &rig{clk: newFakeClock(), src: &fakeSource{}, out: newFakeSender()}
	r.a = New(Config{Source: r.src, Sender: r.out, Clock: r.clk})
	t.Cleanup(r.a.Close)
	return r
}

var (
	macA = [6]byte{0x52, 0x54, 0x00, 0, 0, 0xA}
	macB = [6]byte{0x52, 0x54, 0x00, 0, 0, 0xB}
)

// The default schedule: five rounds after gaps of 50..450 ms, each round
// one frame per address, tagged copies included.
func TestAnnouncerRoundsFollowSchedule(t *testing.T) {
	r := newRig(t)
	addrs := []Address{{MAC: macA}, {MAC: macB}, {MAC: macA, Tagged: true, VLAN: 5}}
	r.src.set(addrs...)
	st, err := r.a.Start(ReasonMigration, Default())
	if err != nil || st != (Started{Addresses: 2, Tagged: 1, Rounds: 5}) {
		t.Fatalf("Start = %+v, %v", st, err)
	}
	for i, gap := range []time.Duration{50 * ms, 150 * ms, 250 * ms, 350 * ms, 450 * ms} {
		w := r.clk.next(t)
		if w.d != gap {
			t.Errorf("round %d: waited %v, want %v", i+1, w.d, gap)
		}
		r.out.none(t) // nothing goes out before the wait ends
		w.fire <- time.Time{}
		for j, f := range r.out.take(t, len(addrs)) {
			if want := AppendRARP(nil, addrs[j]); string(f) != string(want) {
				t.Errorf("round %d frame %d: %x, want %x", i+1, j, f, want)
			}
		}
	}
	r.a.Close()
	r.clk.noWait(t)
	r.out.none(t)
	if s := r.a.Stats(); s != (Stats{Rounds: 5, Frames: 15}) {
		t.Errorf("stats %+v", s)
	}
}

// Each round reads the addresses again: the guest may change them.
func TestAnnouncerReadsAddressesEachRound(t *testing.T) {
	r := newRig(t)
	r.src.set(Address{MAC: macA})
	if _, err := r.a.Start(ReasonControl, Schedule{Rounds: 2, Initial: ms, Max: ms, Step: ms}); err != nil {
		t.Fatal(err)
	}
	r.clk.next(t).fire <- time.Time{}
	if f := r.out.take(t, 1)[0]; string(f[6:12]) != string(macA[:]) {
		t.Errorf("round 1 from %x", f[6:12])
	}
	w := r.clk.next(t)
	r.src.set(Address{MAC: macB}, Address{MAC: macB, Tagged: true, VLAN: 9})
	w.fire <- time.Time{}
	fs := r.out.take(t, 2)
	if string(fs[0][6:12]) != string(macB[:]) || len(fs[1]) != TaggedFrameLen {
		t.Errorf("round 2: %x", fs)
	}
}

// Cancel before a round: nothing more goes out, and the goroutine ends.
func TestAnnouncerCancel(t *testing.T) {
	r := newRig(t)
	r.src.set(Address{MAC: macA})
	r.a.Start(ReasonMigration, Default())
	r.clk.next(t).fire <- time.Time{}
	r.out.take(t, 1)
	w := r.clk.next(t)
	r.a.Cancel()
	w.fire <- time.Time{} // too late: the cancel won
	r.a.Close()           // waits for the goroutine
	r.out.none(t)
	r.clk.noWait(t)
	if s := r.a.Stats(); s.Rounds != 1 || s.Frames != 1 {
		t.Errorf("stats %+v", s)
	}
}

// A second Start replaces the first: the schedule begins again.
func TestAnnouncerRestart(t *testing.T) {
	r := newRig(t)
	r.src.set(Address{MAC: macA})
	r.a.Start(ReasonMigration, Default())
	r.clk.next(t).fire <- time.Time{}
	r.out.take(t, 1)
	old := r.clk.next(t) // round 2 of the first announcement
	r.a.Start(ReasonControl, Default())
	if w := r.clk.next(t); w.d != 50*ms {
		t.Errorf("the new announcement waits %v first, want 50ms", w.d)
	} else {
		old.fire <- time.Time{} // the old one must not send
		w.fire <- time.Time{}
	}
	r.out.take(t, 1)
	if w := r.clk.next(t); w.d != 150*ms {
		t.Errorf("the new announcement's second gap %v, want 150ms", w.d)
	}
	r.a.Close()
	r.out.none(t)
}

// A cancel that comes while a round reads the addresses (a reset under the
// NIC's lock) wins: nothing from that read is sent.
func TestAnnouncerCancelDuringRead(t *testing.T) {
	clk, out := newFakeClock(), newFakeSender()
	var (
		a        *Announcer
		inRounds atomic.Bool
	)
	src := sourceFunc(func(dst []Address) []Address {
		if inRounds.Load() {
			a.Cancel()
		}
		return append(dst, Address{MAC: macA})
	})
	a = New(Config{Source: src, Sender: out, Clock: clk})
	defer a.Close()
	a.Start(ReasonMigration, Default())
	inRounds.Store(true)
	clk.next(t).fire <- time.Time{}
	a.Close()
	out.none(t)
	if s := a.Stats(); s.Rounds != 0 {
		t.Errorf("stats %+v", s)
	}
}

type sourceFunc func([]Address) []Address

func (f sourceFunc) AnnounceAddresses(dst []Address) []Address { return f(dst) }

// Send errors are counted and logged, not fatal; a closed backend ends the
// announcement.
func TestAnnouncerSendErrors(t *testing.T) {
	r := newRig(t)
	r.src.set(Address{MAC: macA}, Address{MAC: macB})
	r.out.err = errors.New("no peer")
	r.a.Start(ReasonMigration, Default())
	r.clk.next(t).fire <- time.Time{}
	w := r.clk.next(t) // the next round is still scheduled
	if s := r.a.Stats(); s != (Stats{Rounds: 1, Errors: 2}) {
		t.Errorf("after a failed round: %+v", s)
	}
	r.out.mu.Lock()
	r.out.err = fmt.Errorf("stream: %w", netdev.ErrClosed)
	r.out.mu.Unlock()
	for len(r.out.tries) > 0 {
		<-r.out.tries // the first round's
	}
	w.fire <- time.Time{}
	select {
	case <-r.out.tries:
	case <-time.After(guard):
		t.Fatal("the second round sent nothing")
	}
	r.a.Close() // lets the round finish
	r.clk.noWait(t)
	// The round stops at the first frame the closed backend refuses.
	if s := r.a.Stats(); s != (Stats{Rounds: 2, Errors: 3}) {
		t.Errorf("after the backend closed: %+v", s)
	}
}

func TestAnnouncerOffAndClosed(t *testing.T) {
	r := newRig(t)
	r.src.set(Address{MAC: macA})
	if st, err := r.a.Start(ReasonControl, Schedule{}); err != nil || st != (Started{}) {
		t.Errorf("off: %+v, %v", st, err)
	}
	r.clk.noWait(t)
	r.a.Close()
	r.a.Close() // twice is fine
	if _, err := r.a.Start(ReasonControl, Default()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

// No goroutine outlives Close, even with announcements cancelled midway.
func TestAnnouncerCloseLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 20 {
		r := &rig{clk: newFakeClock(), src: &fakeSource{}, out: newFakeSender()}
		r.a = New(Config{Source: r.src, Sender: r.out, Clock: r.clk})
		r.src.set(Address{MAC: macA})
		r.a.Start(ReasonMigration, Default())
		r.a.Start(ReasonControl, Default())
		r.a.Close()
	}
	// Goroutines of other tests may still be ending; allow them time.
	deadline := time.Now().Add(guard)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * ms)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

// More addresses than MaxAddresses are cut at the bound.
func TestAnnouncerBoundsAddresses(t *testing.T) {
	r := newRig(t)
	many := make([]Address, MaxAddresses+10)
	for i := range many {
		many[i] = Address{MAC: macA, Tagged: true, VLAN: uint16(i % 4096)}
	}
	r.src.set(many...)
	st, _ := r.a.Start(ReasonControl, Schedule{Rounds: 1, Initial: ms, Max: ms, Step: ms})
	if st.Tagged != MaxAddresses {
		t.Errorf("Start counts %d tagged, want %d", st.Tagged, MaxAddresses)
	}
	r.clk.next(t).fire <- time.Time{}
	r.out.take(t, MaxAddresses)
	r.a.Close()
	r.out.none(t)
}
