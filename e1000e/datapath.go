package e1000e

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"time"

	"e1000e-vfu/device"
)

// Running the datapath. Transmit and receive run where they are kicked (a
// register write, a frame from the backend, a timer) while that stays
// cheap, and otherwise on a worker goroutine of the NIC's own:
//
//   - A TX doorbell does at most one budget of work (txBudget*); the rest
//     continues on the worker, one budget per turn, and n.mu is free between
//     turns so register accesses are answered promptly.
//   - Guest memory that is reached by messages to the client (vfio-user
//     DMA_READ/DMA_WRITE, for memory shared without an fd) is touched only
//     by the worker, and never with n.mu held: the reply to such a message
//     is read by the goroutine that serves the client, which may itself be
//     waiting for n.mu to answer a register access, and the client (QEMU)
//     answers the message only once it has our answer to its own request.
//     An engine lets n.mu go for each such access and, on taking it back,
//     checks that what it worked on still holds (dpValid); if not, it stops
//     where it is without committing, and what it did is done again later:
//     on a turn of the worker scheduled at once when the engine can still
//     run (a stopped engine with nothing to wake it would stall its ring).
//   - Each engine has a generation of its own (work.gen), so that a write
//     to the other engine's registers does not stop it: only its own ring
//     registers, and what changes both (reset, state load, guest memory,
//     Bus Master, Quiesce, Close), do.
//
// The worker is a goroutine started when work is asked for, which runs
// turns until none is left and then ends (so none lingers on an idle
// NIC); at most one runs at a time.

// messaged is guest memory of which some part is reached only by messages
// to the client: an access may wait for the client's reply.
type messaged interface {
	device.GuestMemory
	// Messaged reports whether accesses may need messages right now.
	Messaged() bool
}

// workState is the worker's bookkeeping. Guarded by n.mu.
type workState struct {
	active  bool // a worker is started and has not finished its turn
	pending bool // work was asked for since the worker's turn began
	// spawn starts a worker turn; tests replace it to run turns by hand.
	spawn func(func())
	run   func() // n.runTurns (tests: n.runTurn), bound once so a start does not allocate it

	// gen[e] changes whenever what engine e relies on may have changed:
	// its ring registers (ringChanged), and for both engines reset, state
	// load, guest memory, Bus Master, Quiesce and Close (datapathChanged).
	gen [2]uint64
	// inFlight counts guest memory accesses made without n.mu; idle is
	// signalled when it drops to zero (Disconnect waits for that).
	inFlight int
	idle     *sync.Cond

	msg messaged // n.mem when it can say whether it needs messages, else nil
	// worker is the memory the worker uses for accesses that may be
	// messages: n.mem's workerMemory accessor, else n.mem.
	worker device.GuestMemory
}

// The engines, indexing workState.gen.
const (
	engTX = iota
	engRX
)

// workerMemory is guest memory that gives the device's own goroutines an
// accessor of their own, the only one that may wait for the client (the
// vfio-user server refuses message DMA through the memory a request
// handler reaches).
type workerMemory interface {
	Worker() device.GuestMemory
}

func (n *NIC) initWork() {
	n.work.spawn = func(f func()) { go f() }
	n.work.run = n.runTurns
	n.work.idle = sync.NewCond(&n.mu)
}

// schedule asks the worker for a turn. Called with n.mu held.
func (n *NIC) schedule() {
	n.work.pending = true
	if n.work.active || n.closed {
		return
	}
	n.work.active = true
	n.work.spawn(n.work.run)
}

// runTurns is the worker: turns one after the other while work is left or
// asked for, and then it ends. Between two turns it lets n.mu go and
// yields, so that a register access waiting for n.mu gets it at once; and
// after each workerSlice of turns it sleeps for workerRest, so that the
// runtime, with no goroutine left to run on that CPU, also wakes those
// that wait for the network, such as the control socket's. (Yielding
// alone kept the worker always runnable, and a control request through a
// hostile ring's thousands of turns waited up to 90 ms for n.mu on two
// CPUs, as bench-abuse's hostile-tx measured; a goroutine per turn, as a
// first version had, up to a second. With the rest, under 10 ms.)
func (n *NIC) runTurns() {
	slice := time.Now()
	for n.turn() {
		if time.Since(slice) < workerSlice {
			runtime.Gosched()
			continue
		}
		time.Sleep(workerRest)
		slice = time.Now()
	}
}

// The worker's slice and rest: at most a few per cent of a busy worker's
// time, and only when it has run for milliseconds without a pause.
const (
	workerSlice = 2 * time.Millisecond
	workerRest  = 50 * time.Microsecond
)

// runTurn is one turn, the next one started as a new worker: for tests
// that run the worker's turns one by one.
func (n *NIC) runTurn() {
	if n.turn() {
		n.mu.Lock()
		n.work.spawn(n.work.run)
		n.mu.Unlock()
	}
}

// turn is one turn of the worker: a budget of transmit, then the receive
// backlog. It reports whether another turn is wanted (work left over, or
// asked for meanwhile): the worker then stays active.
func (n *NIC) turn() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.work.pending = false
	if !n.closed {
		if !n.tx.busy {
			n.txRun()
		}
		if !n.rx.busy {
			n.rxDrain()
		}
	}
	if n.work.pending && !n.closed {
		return true
	}
	n.work.active = false
	return false
}

// setMem gives the datapath new guest memory (nil: none). Called with n.mu
// held.
func (n *NIC) setMem(mem device.GuestMemory) {
	n.mem = mem
	n.work.msg, _ = mem.(messaged)
	n.work.worker = mem
	if w, ok := mem.(workerMemory); ok {
		n.work.worker = w.Worker()
	}
	n.datapathChanged()
}

// datapathChanged stops both engines at their next guest memory access:
// what they work on is no longer what they read. Called with n.mu held.
func (n *NIC) datapathChanged() {
	n.work.gen[engTX]++
	n.work.gen[engRX]++
}

// memMessaged reports whether guest memory may need messages to the
// client, so the datapath must run on the worker and without n.mu.
func (n *NIC) memMessaged() bool {
	return n.work.msg != nil && n.work.msg.Messaged()
}

// errStale is returned by a datapath access after which the engine must
// stop, commit nothing, and let the worker take the work up again: n.mu was
// let go during a message and the ring, the memory or the device's state
// changed meanwhile, or guest memory turned out to need messages.
var errStale = errors.New("e1000e: datapath changed during a guest memory message")

// dmaAccess reads or writes guest memory for engine eng (engTX, engRX),
// called with n.mu held. Memory that may need messages is accessed through
// the worker's accessor without n.mu, and the engine's view (gen) is
// checked once it is taken back.
//
// Other memory is accessed with n.mu held, through n.mem, which never waits
// for the client: memory the client maps without fd after memMessaged was
// asked is refused there at once with EDEADLK (vfiouser's DMATable), and
// that is errStale too, so the worker, which may wait, does the access.
func (n *NIC) dmaAccess(addr uint64, p []byte, write bool, eng int, gen uint64) error {
	mem := n.mem
	if mem == nil {
		return errStale
	}
	if !n.memMessaged() {
		var err error
		if write {
			err = mem.Write(addr, p)
		} else {
			err = mem.Read(addr, p)
		}
		if errors.Is(err, syscall.EDEADLK) {
			return errStale
		}
		return err
	}
	if eng == engTX {
		// Whoever takes n.mu meanwhile (Quiesce, a state save) finds
		// every committed packet's interrupt raised.
		n.txFlushCauses()
	}
	mem = n.work.worker
	n.work.inFlight++
	n.mu.Unlock()
	var err error
	if write {
		err = mem.Write(addr, p)
	} else {
		err = mem.Read(addr, p)
	}
	n.mu.Lock()
	n.work.inFlight--
	if n.work.inFlight == 0 {
		n.work.idle.Broadcast()
	}
	if !n.dpValid(eng, gen) {
		return errStale
	}
	return err
}

// waitIdle waits, with n.mu held, until no engine accesses guest memory
// without n.mu. Each such access ends within the client's DMA timeout, at
// once when the connection is gone.
func (n *NIC) waitIdle() {
	for n.work.inFlight > 0 {
		n.work.idle.Wait()
	}
}

// dpValid is what an engine needs to go on after n.mu was let go: the
// same rings and memory (its generation), DMA allowed, the NIC open.
func (n *NIC) dpValid(eng int, gen uint64) bool {
	return n.work.gen[eng] == gen && n.busMaster() && !n.closed
}

// rctlLayout are the RCTL bits that decide how a frame is written to the
// ring; the rest (filters, enable) are read before a frame's delivery
// starts, or checked on their own.
const rctlLayout = rctlBSIZE | rctlBSEX | rctlDTYPMask | rctlSECRC

// ringChanged records a guest write of v over old to a register an engine
// relies on: only a change stops the engine, and only that engine. (Linux
// rewrites RCTL on every receive-mode change, with its layout unchanged.)
func (n *NIC) ringChanged(off, old, v uint32) {
	switch off {
	case TDBAL0, TDBAH0, TDLEN0, TDH0:
		if v != old {
			n.work.gen[engTX]++
		}
	case RDBAL0, RDBAH0, RDLEN0, RDH0, RFCTL, PSRCTL:
		if v != old {
			n.work.gen[engRX]++
		}
	case RCTL:
		if (v^old)&rctlLayout != 0 {
			n.work.gen[engRX]++
		}
	}
}
