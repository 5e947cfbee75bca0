package announce

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"e1000e-vfu/device/netdev"
)

// Reasons an announcement starts, as logged.
const (
	ReasonMigration = "migration"
	ReasonControl   = "control"
)

// ErrClosed is returned by Start once the announcer is closed.
var ErrClosed = errors.New("announce: closed")

// Clock makes the waits between rounds. Tests substitute one they step by
// hand, so no test depends on how fast a busy machine runs.
type Clock interface {
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config describes an Announcer.
type Config struct {
	Source Source
	Sender Sender
	// Clock times the rounds; nil is the real clock.
	Clock Clock
	// Logger receives the announcer's logs; nil discards them.
	Logger *slog.Logger
}

// Started says what an announcement sends in each round, from the
// addresses as Start read them: Addresses untagged frames and Tagged
// 802.1Q copies (so Addresses+Tagged frames a round), for Rounds rounds.
// Later rounds read the addresses again.
type Started struct {
	Addresses int
	Tagged    int
	Rounds    int
}

// Stats are cumulative counts since the announcer was made: rounds
// completed, frames sent, and frames the sender refused.
type Stats struct {
	Rounds uint64
	Frames uint64
	Errors uint64
}

// Announcer runs announcements, one at a time, each on a goroutine of its
// own. Starting one replaces the one in progress; Cancel and Close end it.
// It holds no lock of its own while it reads the Source or sends, so a
// Source may take the NIC's lock, and the NIC may call Cancel under it.
type Announcer struct {
	src   Source
	out   Sender
	clock Clock
	log   *slog.Logger

	mu     sync.Mutex
	stop   chan struct{} // closed to end the announcement in progress; nil when none
	closed bool
	wg     sync.WaitGroup

	rounds, frames, errs atomic.Uint64
}

// New returns an idle announcer.
func New(cfg Config) *Announcer {
	a := &Announcer{src: cfg.Source, out: cfg.Sender, clock: cfg.Clock, log: cfg.Logger}
	if a.clock == nil {
		a.clock = realClock{}
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

// Start begins an announcement on sched, replacing any in progress, and
// says what its rounds send with the addresses as they are now. reason
// names it in the log (ReasonMigration, ReasonControl). An off schedule
// starts nothing. Start reads the Source, so the caller must not hold a
// lock the Source takes.
func (a *Announcer) Start(reason string, sched Schedule) (Started, error) {
	addrs := a.src.AnnounceAddresses(nil)
	st := Started{Rounds: sched.Rounds}
	for _, ad := range addrs[:min(len(addrs), MaxAddresses)] {
		if ad.Tagged {
			st.Tagged++
		} else {
			st.Addresses++
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return Started{}, ErrClosed
	}
	a.cancelLocked()
	if sched.Off() {
		return Started{}, nil
	}
	stop := make(chan struct{})
	a.stop = stop
	a.wg.Add(1)
	a.log.Info("announcing", "reason", reason, "addresses", st.Addresses, "tagged", st.Tagged,
		"rounds", sched.Rounds, "schedule", sched.String())
	go a.run(stop, reason, sched)
	return st, nil
}

// Cancel ends the announcement in progress, if any: no round starts after
// Cancel returns, though a round already sending finishes its frames. It
// does not wait, so it may be called with the Source's lock held.
func (a *Announcer) Cancel() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cancelLocked()
}

func (a *Announcer) cancelLocked() {
	if a.stop != nil {
		close(a.stop)
		a.stop = nil
	}
}

// Close ends the announcement in progress and waits for its goroutine to
// return; later Starts fail. The caller must not hold a lock the Source
// takes. A second Close does nothing.
func (a *Announcer) Close() {
	a.mu.Lock()
	a.closed = true
	a.cancelLocked()
	a.mu.Unlock()
	a.wg.Wait()
}

// Stats returns the cumulative counts.
func (a *Announcer) Stats() Stats {
	return Stats{Rounds: a.rounds.Load(), Frames: a.frames.Load(), Errors: a.errs.Load()}
}

// run sends sched's rounds until they are done or stop is closed.
func (a *Announcer) run(stop chan struct{}, reason string, sched Schedule) {
	defer a.wg.Done()
	defer func() {
		a.mu.Lock()
		if a.stop == stop {
			a.stop = nil
		}
		a.mu.Unlock()
	}()
	var (
		addrs []Address
		frame []byte
	)
	for i := 0; i < sched.Rounds; i++ {
		select {
		case <-stop:
			a.log.Debug("announcement cancelled", "reason", reason, "round", i+1)
			return
		case <-a.clock.After(sched.Gap(i)):
		}
		addrs = a.src.AnnounceAddresses(addrs[:0])
		// A reset or a new load while the addresses were read ends this
		// announcement before it sends what may be stale.
		select {
		case <-stop:
			a.log.Debug("announcement cancelled", "reason", reason, "round", i+1)
			return
		default:
		}
		if len(addrs) > MaxAddresses {
			a.log.Warn("announce: too many addresses; announcing the first ones", "addresses", len(addrs), "max", MaxAddresses)
			addrs = addrs[:MaxAddresses]
		}
		var (
			sent, failed int
			firstErr     error
		)
		for _, ad := range addrs {
			// A Cancel (the NIC stopping for a migration away, say)
			// ends the round at once: not one frame of it may follow.
			select {
			case <-stop:
				a.log.Debug("announcement cancelled", "reason", reason, "round", i+1)
				return
			default:
			}
			frame = AppendRARP(frame[:0], ad)
			err := a.out.Send(frame)
			if err == nil {
				sent++
				continue
			}
			failed++
			if firstErr == nil {
				firstErr = err
			}
			if errors.Is(err, netdev.ErrClosed) {
				break
			}
		}
		a.rounds.Add(1)
		a.frames.Add(uint64(sent))
		a.errs.Add(uint64(failed))
		a.log.Debug("announce round", "reason", reason, "round", i+1, "of", sched.Rounds, "frames", sent)
		switch {
		case errors.Is(firstErr, netdev.ErrClosed):
			// The backend is gone (the server is shutting down): no
			// later round can go out.
			a.log.Debug("announce: the backend is closed; announcement ended", "reason", reason, "round", i+1)
			return
		case firstErr != nil:
			// Once a round, not once a frame: a backend that is down
			// would otherwise log every address of every round.
			a.log.Warn("announce: sending failed", "reason", reason, "round", i+1, "failed", failed, "err", firstErr)
		}
	}
}
