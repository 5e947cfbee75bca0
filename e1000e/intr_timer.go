package e1000e

import "time"

// TimerClock makes the NIC's interrupt, moderation and autonegotiation
// timers. Tests substitute one they step by hand, so that no test depends
// on how fast a busy machine runs.
type TimerClock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed, as time.AfterFunc does; f takes
	// the NIC's mutex, so the clock must not call it with that held.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer a TimerClock made; *time.Timer is one.
type Timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// realClock is the TimerClock of the time package.
type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// nicTimer is a one-shot timer whose callback runs with n.mu held. A
// callback that fires late for an earlier arming, or after stop, finds the
// timer re-armed or stopped and does nothing: time.Timer cannot recall a
// callback already waiting for the mutex.
type nicTimer struct {
	clock   TimerClock
	t       Timer
	due     time.Time
	running bool
	fire    func()

	// A held timer is paused with left still to run (device quiesced for
	// migration); resume arms it again.
	held bool
	left time.Duration
}

// newTimer makes a stopped timer that calls fire with n.mu held.
func (n *NIC) newTimer(fire func()) *nicTimer {
	nt := &nicTimer{clock: n.clock, fire: fire}
	nt.t = n.clock.AfterFunc(time.Hour, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed || !nt.running || nt.held {
			return
		}
		if rem := nt.due.Sub(nt.clock.Now()); rem > 0 {
			nt.t.Reset(rem)
			return
		}
		nt.running = false
		nt.fire()
	})
	nt.t.Stop()
	return nt
}

// arm (re)starts the timer to fire after d. A held timer stays held with
// d left.
func (t *nicTimer) arm(d time.Duration) {
	if t.held {
		t.left = d
		t.running = true
		return
	}
	t.due = t.clock.Now().Add(d)
	t.running = true
	t.t.Reset(d)
}

// stop cancels the timer.
func (t *nicTimer) stop() {
	if t.running {
		t.running = false
		t.left = 0
		t.t.Stop()
	}
}

// remaining is the time left before the timer fires (0 when stopped).
func (t *nicTimer) remaining() time.Duration {
	switch {
	case !t.running:
		return 0
	case t.held:
		return t.left
	}
	return max(t.due.Sub(t.clock.Now()), 0)
}

// hold pauses the timer, keeping the time left.
func (t *nicTimer) hold() {
	if t.held {
		return
	}
	t.left = t.remaining()
	t.held = true
	t.t.Stop()
}

// release resumes a held timer.
func (t *nicTimer) release() {
	if !t.held {
		return
	}
	t.held = false
	if t.running {
		t.arm(t.left)
	}
}
