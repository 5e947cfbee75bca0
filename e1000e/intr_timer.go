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
}

// newTimer makes a stopped timer that calls fire with n.mu held.
func (n *NIC) newTimer(fire func()) *nicTimer {
	nt := &nicTimer{fire: fire}
	nt.t = time.AfterFunc(time.Hour, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed || !nt.running {
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

// arm (re)starts the timer to fire after d.
func (t *nicTimer) arm(d time.Duration) {
	t.due = time.Now().Add(d)
	t.running = true
	t.t.Reset(d)
}

// stop cancels the timer.
func (t *nicTimer) stop() {
	if t.running {
		t.running = false
		t.t.Stop()
	}
}

// remaining is the time left before the timer fires (0 when stopped).
func (t *nicTimer) remaining() time.Duration {
	if !t.running {
		return 0
	}
	return max(time.Until(t.due), 0)
}
