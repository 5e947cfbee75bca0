package driver

import (
	"fmt"
	"time"
)

// transport is what one migration protocol does for each step of the
// algorithm in migrate; the algorithm owns the order of the steps, so the
// v1 region and the v2 state machine take them the same way. A transport
// is opened on a source and a destination and acts on them; its errors say
// what the protocol did, and migrate adds which step it was.
type transport interface {
	// startLogging starts dirty-page tracking of the source's guest memory
	// at pageSize, and returns the page size the source will report in.
	startLogging(pageSize uint64) (uint64, error)
	// dirtyPages returns the pages the source dirtied since logging
	// started or the previous call: bit i is the page at i*pageSize from
	// the start of its guest memory.
	dirtyPages(pageSize uint64) ([]byte, error)
	stopLogging() error
	// resuming readies the destination to receive device state.
	resuming() error
	// preCopy starts saving on the still running source, and says false
	// when the source offers no pre-copy: the whole state then moves
	// while it is stopped.
	preCopy() (bool, error)
	// stopCopy stops the source for the rest of its state, and returns
	// the bytes the source says are left (0 when it does not say).
	stopCopy() (uint64, error)
	// transfer moves state from source to destination until the source
	// has none left in its current state, and returns the bytes moved.
	transfer() (int, error)
	// resume makes the destination load the state it received and run.
	resume() error
	// stopSource leaves the source stopped: the guest runs on the
	// destination now.
	stopSource() error
	// close releases what opening took.
	close()
}

// opener opens a transport on two endpoints already checked to match.
type opener func(src, dst Endpoint, opts Options) (transport, error)

// migrate is the one migration algorithm. Dirty logging starts on the
// source and guest memory is copied whole while the destination gets ready
// to resume; the source pre-copies its state (when it can) and some rounds
// of dirty pages while it runs; after Options.BeforeStop it is stopped, the
// rest of its state and the last dirty pages move, and the destination
// loads and runs before the source is left stopped. Downtime runs from the
// stop to the destination running.
func migrate(protocol string, open opener, src, dst Endpoint, opts Options) (Report, error) {
	opts.defaults()
	rep := Report{Protocol: protocol}
	start := time.Now()
	if err := checkEndpoints(src, dst, opts.PageSize); err != nil {
		return rep, err
	}
	t, err := open(src, dst, opts)
	if err != nil {
		return rep, fmt.Errorf("driver: %s: %w", protocol, err)
	}
	defer t.close()

	ps, err := t.startLogging(opts.PageSize)
	if err != nil {
		return rep, fmt.Errorf("driver: starting dirty logging: %w", err)
	}
	logging := true
	defer func() {
		// An error has already been returned; a second one from the
		// clean-up would only hide it.
		if logging {
			t.stopLogging()
		}
	}()
	if ps != opts.PageSize {
		if err := checkEndpoints(src, dst, ps); err != nil {
			return rep, err
		}
	}
	copy(dst.Mem, src.Mem)
	rep.Pages = len(src.Mem) / int(ps)
	dirtyRound := func() error {
		bm, err := t.dirtyPages(ps)
		if err != nil {
			return fmt.Errorf("driver: dirty pages: %w", err)
		}
		n := copyDirty(src.Mem, dst.Mem, bm, ps)
		rep.Pages += n
		rep.DirtyPages += n
		return nil
	}

	if err := t.resuming(); err != nil {
		return rep, fmt.Errorf("driver: destination to resuming: %w", err)
	}
	pre, err := t.preCopy()
	if err != nil {
		return rep, fmt.Errorf("driver: source to pre-copy: %w", err)
	}
	if pre {
		n, err := t.transfer()
		rep.PreCopyBytes += n
		rep.StateBytes += n
		if err != nil {
			return rep, fmt.Errorf("driver: pre-copy: %w", err)
		}
		for r := 0; r < opts.PreCopyRounds; r++ {
			if err := dirtyRound(); err != nil {
				return rep, err
			}
		}
	}

	if opts.BeforeStop != nil {
		opts.BeforeStop()
	}
	stopped := time.Now()
	rep.SizeEstimate, err = t.stopCopy()
	if err != nil {
		return rep, fmt.Errorf("driver: source to stop-copy: %w", err)
	}
	n, err := t.transfer()
	rep.StateBytes += n
	if err != nil {
		return rep, fmt.Errorf("driver: stop-copy: %w", err)
	}
	if err := dirtyRound(); err != nil {
		return rep, err
	}
	logging = false
	if err := t.stopLogging(); err != nil {
		return rep, fmt.Errorf("driver: stopping dirty logging: %w", err)
	}
	if err := t.resume(); err != nil {
		return rep, fmt.Errorf("driver: destination to running, loading the state: %w", err)
	}
	rep.Downtime = time.Since(stopped)
	if err := t.stopSource(); err != nil {
		return rep, fmt.Errorf("driver: stopping the source: %w", err)
	}
	rep.Total = time.Since(start)
	return rep, nil
}
