package e1000e

import "time"

// nicTimer is a one-shot timer whose callback runs with n.mu held. A
// callback that fires late for an earlier arming, or after stop, finds the
// timer re-armed or stopped and does nothing: time.Timer cannot recall a
// callback already waiting for the mutex.
type nicTimer struct {
	t       *time.Timer
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
	nt := &nicTimer{fire: fire}
	nt.t = time.AfterFunc(time.Hour, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed || !nt.running || nt.held {
			return
		}
		if rem := time.Until(nt.due); rem > 0 {
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
	t.due = time.Now().Add(d)
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
	return max(time.Until(t.due), 0)
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
