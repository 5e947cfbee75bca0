package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxVectors bounds the vectors of any IRQ index (MSI-X allows 2048).
const maxVectors = 2048

// eventfdOne is what signals an eventfd: a little-endian u64 1. It is only
// ever read.
var eventfdOne = [8]byte{1}

// dropLogEvery bounds how often signals dropped on a full eventfd counter
// are logged: a client that keeps its counter full would otherwise fill the
// log, one line per interrupt.
const dropLogEvery = 10 * time.Second

// watcherStopWait bounds how long stopping the INTx unmask watcher waits for
// its goroutine. The watcher blocks only in poll, which the stop eventfd
// ends at once; the bound keeps a SET_IRQS or a disconnect from waiting on
// anything a client controls even if that ever stops being true.
const watcherStopWait = time.Second

// irqIndex is the client's side of one IRQ index: an eventfd per vector,
// the vectors the client masked through SET_IRQS, and the vectors that
// fired while they could not be delivered.
type irqIndex struct {
	count   uint32
	files   []*os.File
	fds     []int // raw descriptors of files, -1 when unassigned
	masked  []uint64
	pending []uint64
}

func bit(set []uint64, v uint32) bool { return set[v/64]&(1<<(v%64)) != 0 }
func setBit(set []uint64, v uint32, on bool) {
	if on {
		set[v/64] |= 1 << (v % 64)
	} else {
		set[v/64] &^= 1 << (v % 64)
	}
}

// IRQs delivers a function's interrupts to the client through eventfds and
// applies the client's SET_IRQS requests. Delivery (MSIX, MSI, SetINTx,
// Signal) may be called from any goroutine; a mutex orders it with SetIRQs,
// the configuration updates and Close.
//
// Delivery never allocates: it writes a u64 1 to the vector's eventfd, or
// sets the vector's pending bit when the vector cannot be delivered.
//
// Delivery runs with the table's lock held, and usually with the device's
// too, so it must never block. Every eventfd the table takes is switched to
// non-blocking mode, and a signal that finds the client's counter full
// (EAGAIN) is dropped and counted: a full counter already reads as "signalled"
// to its reader. The file description is shared with the client, which can
// switch it back; the server releases a write stuck that way when the client
// goes (see vfiouser).
type IRQs struct {
	mu  sync.Mutex
	idx [NumIRQIndexes]irqIndex

	log        *slog.Logger // nil: drops are counted, not logged
	dropped    uint64       // signals dropped on a full counter
	dropLogged uint64       // dropped at the last log line
	dropLogAt  time.Time

	// Configuration state, fed from the config space by Function.
	msiEnabled   bool
	msiCfgMask   uint32 // MSI per-vector mask register
	msixEnabled  bool
	msixFuncMask bool
	intxDisabled bool

	// INTx is a level: asserted by the device, automasked when signalled,
	// unmasked by the client.
	intxLevel  bool
	intxMasked bool
	unmask     *unmaskWatcher
	// unmaskHeld keeps the watcher off the eventfd during a live upgrade
	// (HoldUnmask), so that only one process reads it.
	unmaskHeld bool
}

// NewIRQs returns an IRQ table with the vector counts of infos (indexed by
// IRQ index; missing entries have no vectors).
func NewIRQs(infos []IRQInfo) *IRQs {
	q := &IRQs{}
	for i := range q.idx {
		var n uint32
		if i < len(infos) {
			n = min(infos[i].Count, maxVectors)
		}
		words := (n + 63) / 64
		ix := &q.idx[i]
		ix.count = n
		ix.files = make([]*os.File, n)
		ix.fds = make([]int, n)
		for v := range ix.fds {
			ix.fds[v] = -1
		}
		ix.masked = make([]uint64, words)
		ix.pending = make([]uint64, words)
	}
	return q
}

// SetLogger sets where the table reports signals it drops (rate-limited).
func (q *IRQs) SetLogger(l *slog.Logger) {
	q.mu.Lock()
	q.log = l
	q.mu.Unlock()
}

// Dropped is the number of signals dropped because the client's eventfd
// counter was full.
func (q *IRQs) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Count returns the number of vectors of an IRQ index.
func (q *IRQs) Count(index int) uint32 {
	if index < 0 || index >= NumIRQIndexes {
		return 0
	}
	return q.idx[index].count
}

// errIRQ wraps EINVAL for a SET_IRQS request this table refuses.
func errIRQ(format string, args ...any) error {
	return fmt.Errorf("set irqs: "+format+": %w", append(args, syscall.EINVAL)...)
}

// SetIRQs applies a SET_IRQS request. It owns req.FDs: it keeps the ones it
// assigns and closes every other, also on error. Replaced or de-assigned
// eventfds are closed.
func (q *IRQs) SetIRQs(req SetIRQs) error {
	var toClose []*os.File
	var stop *unmaskWatcher
	err := q.setIRQs(req, &toClose, &stop)
	// A watcher is stopped, and files closed, without the lock: the
	// watcher may be waiting for it to unmask INTx.
	if stop != nil {
		stop.stop()
	}
	for _, f := range toClose {
		if f != nil {
			f.Close()
		}
	}
	return err
}

func (q *IRQs) setIRQs(req SetIRQs, toClose *[]*os.File, stop **unmaskWatcher) error {
	// Until a file is kept, it is to be closed.
	*toClose = append(*toClose, req.FDs...)
	if req.Index >= NumIRQIndexes {
		return errIRQ("index %d out of range", req.Index)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	ix := &q.idx[req.Index]
	if req.Start > ix.count || req.Count > ix.count-req.Start {
		return errIRQ("index %d vectors %d+%d beyond %d", req.Index, req.Start, req.Count, ix.count)
	}
	switch req.Data {
	case IRQDataNone:
	case IRQDataBool:
		if uint32(len(req.Bools)) != req.Count {
			return errIRQ("%d bools for %d vectors", len(req.Bools), req.Count)
		}
	case IRQDataEventFD:
		if uint32(len(req.FDs)) != req.Count {
			return errIRQ("%d fds for %d vectors", len(req.FDs), req.Count)
		}
	default:
		return errIRQ("data kind %#x", req.Data)
	}
	// sel reports whether vector i of the request is selected.
	sel := func(i uint32) bool { return req.Data != IRQDataBool || req.Bools[i] }

	switch req.Action {
	case IRQActionTrigger:
		switch {
		case req.Data == IRQDataEventFD:
			for i := uint32(0); i < req.Count; i++ {
				if err := q.assign(req.Index, req.Start+i, req.FDs[i], toClose); err != nil {
					return err
				}
				(*toClose)[i] = nil // kept, or queued again by assign
			}
			q.refresh(req.Index)
		case req.Count == 0 && req.Data == IRQDataNone:
			q.disable(req.Index, toClose, stop)
		default:
			for i := uint32(0); i < req.Count; i++ {
				if sel(i) {
					q.fire(req.Index, req.Start+i)
				}
			}
		}
	case IRQActionMask, IRQActionUnmask:
		mask := req.Action == IRQActionMask
		if req.Data == IRQDataEventFD {
			if mask || req.Index != IRQINTx {
				return errIRQ("eventfd %s on index %d is not supported", actionName(req.Action), req.Index)
			}
			if req.Count == 1 {
				w, err := q.setUnmaskFD(req.FDs[0], stop)
				(*toClose)[0] = nil
				if err != nil {
					return err
				}
				q.unmask = w
			}
			return nil
		}
		for i := uint32(0); i < req.Count; i++ {
			if !sel(i) {
				continue
			}
			v := req.Start + i
			if req.Index == IRQINTx {
				q.intxMasked = mask
			} else {
				setBit(ix.masked, v, mask)
			}
		}
		if !mask {
			q.refresh(req.Index)
		}
	default:
		return errIRQ("action %#x", req.Action)
	}
	return nil
}

func actionName(a IRQAction) string {
	if a == IRQActionMask {
		return "mask"
	}
	return "unmask"
}

// assign sets vector v's eventfd to f (nil de-assigns), queueing the
// replaced file for closing.
func (q *IRQs) assign(index, v uint32, f *os.File, toClose *[]*os.File) error {
	ix := &q.idx[index]
	fd := -1
	if f != nil {
		var err error
		fd, err = nonblockingFD(f)
		if err != nil {
			// f is still in toClose, where the request put it.
			return fmt.Errorf("set irqs: index %d vector %d: %w", index, v, err)
		}
	}
	*toClose = append(*toClose, ix.files[v])
	ix.files[v] = f
	ix.fds[v] = fd
	return nil
}

// rawFD returns f's descriptor without switching it to blocking mode (as
// f.Fd would).
func rawFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(d uintptr) { fd = int(d) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// nonblockingFD returns f's descriptor after switching its file description
// to non-blocking mode. The description is the client's too: QEMU makes its
// eventfds non-blocking itself, and a client that hands over a blocking one
// gets it back non-blocking rather than a server that can block on it.
func nonblockingFD(f *os.File) (int, error) {
	fd, err := rawFD(f)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return -1, fmt.Errorf("eventfd: set non-blocking: %w", err)
	}
	return fd, nil
}

// ReadEventfd reads and resets an eventfd's counter without ever blocking,
// whatever the mode of its file description (which a client that shares it
// may change at any time): with RWF_NOWAIT where the kernel has it (5.12 and
// later), else with a plain read after switching the description back to
// non-blocking, which a client racing it can still undo on such a kernel.
// An empty counter is EAGAIN.
func ReadEventfd(fd int) (uint64, error) {
	var b [8]byte
	iov := [][]byte{b[:]}
	_, err := unix.Preadv2(fd, iov, -1, unix.RWF_NOWAIT)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		if err := unix.SetNonblock(fd, true); err != nil {
			return 0, err
		}
		_, err = unix.Read(fd, b[:])
	}
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// disable drops every eventfd of an index and its masks and pending bits
// (count 0 with DATA_NONE|TRIGGER). For INTx it also drops the unmask
// eventfd.
func (q *IRQs) disable(index uint32, toClose *[]*os.File, stop **unmaskWatcher) {
	ix := &q.idx[index]
	for v := range ix.files {
		*toClose = append(*toClose, ix.files[v])
		ix.files[v] = nil
		ix.fds[v] = -1
	}
	clear(ix.masked)
	clear(ix.pending)
	if index == IRQINTx {
		q.intxMasked = false
		if q.unmask != nil {
			*stop = q.unmask
			q.unmask = nil
		}
	}
}

// fire writes 1 to vector v of an index's eventfd, if it has one. Called
// with mu held, so the descriptor cannot be closed under it.
func (q *IRQs) fire(index, v uint32) bool {
	fd := q.idx[index].fds[v]
	if fd < 0 {
		return false
	}
	// The descriptor is non-blocking (assign made it so): a full counter
	// is EAGAIN, not a wait. Other errors are the client's broken
	// descriptor, not the device's to report.
	if _, err := unix.Write(fd, eventfdOne[:]); err == unix.EAGAIN {
		q.dropSignal(index, v)
	}
	return true
}

// dropSignal counts a signal the client's full counter refused, and logs
// the drops at most once per dropLogEvery.
func (q *IRQs) dropSignal(index, v uint32) {
	q.dropped++
	if q.log == nil {
		return
	}
	now := time.Now()
	if !q.dropLogAt.IsZero() && now.Sub(q.dropLogAt) < dropLogEvery {
		return
	}
	q.log.Warn("irq: eventfd counter full, signals dropped",
		"index", index, "vector", v, "dropped", q.dropped-q.dropLogged, "total", q.dropped)
	q.dropLogged = q.dropped
	q.dropLogAt = now
}

// deliverable reports whether vector v of an MSI or MSI-X index can be
// signalled now.
func (q *IRQs) deliverable(index, v uint32) bool {
	ix := &q.idx[index]
	if ix.fds[v] < 0 || bit(ix.masked, v) {
		return false
	}
	if index == IRQMSIX {
		return !q.msixFuncMask
	}
	return v >= 32 || q.msiCfgMask&(1<<v) == 0
}

// refresh delivers what became deliverable: pending MSI/MSI-X vectors, or
// an asserted INTx line.
func (q *IRQs) refresh(index uint32) {
	switch index {
	case IRQINTx:
		q.updateINTx()
	case IRQMSI, IRQMSIX:
		if index == IRQMSI && !q.msiEnabled || index == IRQMSIX && !q.msixEnabled {
			return
		}
		ix := &q.idx[index]
		for w, word := range ix.pending {
			for word != 0 {
				b := uint32(bits.TrailingZeros64(word))
				word &^= 1 << b
				v := uint32(w)*64 + b
				if q.deliverable(index, v) {
					q.fire(index, v)
					setBit(ix.pending, v, false)
				}
			}
		}
	}
}

// MSIX delivers MSI-X vector v. It reports whether the eventfd was
// signalled: when the vector is masked (by SET_IRQS or the function mask)
// or has no eventfd, its pending bit is set instead and it fires once it
// becomes deliverable. With MSI-X disabled, or v out of range, nothing
// happens.
func (q *IRQs) MSIX(v uint32) bool { return q.deliverVector(IRQMSIX, v) }

// MSI delivers MSI vector v (0 for single-message MSI), with the same
// pending rules as MSIX, the MSI per-vector mask taking the function mask's
// place. With MSI disabled nothing happens.
func (q *IRQs) MSI(v uint32) bool { return q.deliverVector(IRQMSI, v) }

func (q *IRQs) deliverVector(index, v uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ix := &q.idx[index]
	if v >= ix.count {
		return false
	}
	if index == IRQMSI && !q.msiEnabled || index == IRQMSIX && !q.msixEnabled {
		return false
	}
	if q.deliverable(index, v) {
		return q.fire(index, v)
	}
	setBit(ix.pending, v, true)
	return false
}

// Signal writes to vector v of any index, unconditionally but for a missing
// eventfd: for the ERR and REQ indexes.
func (q *IRQs) Signal(index int, v uint32) bool {
	if index < 0 || index >= NumIRQIndexes {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if v >= q.idx[index].count {
		return false
	}
	return q.fire(uint32(index), v)
}

// SetINTx sets the level of the INTx line. A rising level signals the
// trigger eventfd unless INTx is masked or disabled; signalling masks the
// line (automasking) until the client unmasks it, and unmasking a line
// still asserted signals again.
func (q *IRQs) SetINTx(level bool) {
	q.mu.Lock()
	q.intxLevel = level
	q.updateINTx()
	q.mu.Unlock()
}

func (q *IRQs) updateINTx() {
	ix := &q.idx[IRQINTx]
	if ix.count == 0 || !q.intxLevel || q.intxDisabled || q.intxMasked {
		return
	}
	if q.fire(IRQINTx, 0) {
		q.intxMasked = true
	}
}

// INTxMasked reports whether INTx is masked (automasked or by the client).
func (q *IRQs) INTxMasked() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.intxMasked
}

// SetMSIXControl follows the MSI-X enable and function mask bits.
func (q *IRQs) SetMSIXControl(enabled, funcMasked bool) {
	q.mu.Lock()
	q.msixEnabled = enabled
	q.msixFuncMask = funcMasked
	q.refresh(IRQMSIX)
	q.mu.Unlock()
}

// SetMSIControl follows the MSI enable bit and per-vector mask register.
func (q *IRQs) SetMSIControl(enabled bool, mask uint32) {
	q.mu.Lock()
	q.msiEnabled = enabled
	q.msiCfgMask = mask
	q.refresh(IRQMSI)
	q.mu.Unlock()
}

// SetINTxDisabled follows the command register's INTx-disable bit; clearing
// it with the line asserted signals.
func (q *IRQs) SetINTxDisabled(disabled bool) {
	q.mu.Lock()
	q.intxDisabled = disabled
	q.updateINTx()
	q.mu.Unlock()
}

// Pending reports vector v's pending bit of an MSI or MSI-X index.
func (q *IRQs) Pending(index int, v uint32) bool {
	if index != IRQMSI && index != IRQMSIX {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	ix := &q.idx[index]
	return v < ix.count && bit(ix.pending, v)
}

// ClearPending clears vector v's pending bit of an MSI or MSI-X index
// without delivering it (the 82574's PBACLR does this).
func (q *IRQs) ClearPending(index int, v uint32) {
	if index != IRQMSI && index != IRQMSIX {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	ix := &q.idx[index]
	if v < ix.count {
		setBit(ix.pending, v, false)
	}
}

// ReadPBA copies bytes of the MSI-X pending bit array, starting at byte
// offset off, into p; bytes beyond the array read as zero. A device serves
// the PBA area of its BAR with it.
func (q *IRQs) ReadPBA(off uint64, p []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	pend := q.idx[IRQMSIX].pending
	for i := range p {
		p[i] = 0
		o := off + uint64(i)
		if o < off || o/8 >= uint64(len(pend)) {
			continue
		}
		p[i] = byte(pend[o/8] >> (8 * (o % 8)))
	}
}

// Reset returns the interrupt state to that of a reset function: INTx
// deasserted and unmasked, no pending vectors, no client masks. Eventfds
// stay assigned: the client manages them across a reset.
func (q *IRQs) Reset() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.intxLevel = false
	q.intxMasked = false
	for i := range q.idx {
		clear(q.idx[i].masked)
		clear(q.idx[i].pending)
	}
}

// Close releases every eventfd and stops the unmask watcher, as when the
// client disconnects. The table stays usable for a next client.
func (q *IRQs) Close() {
	var toClose []*os.File
	var stop *unmaskWatcher
	q.mu.Lock()
	for i := range q.idx {
		q.disable(uint32(i), &toClose, &stop)
	}
	q.intxLevel = false
	q.mu.Unlock()
	if stop != nil {
		stop.stop()
	}
	for _, f := range toClose {
		if f != nil {
			f.Close()
		}
	}
}

// unmaskWatcher reads the INTx unmask eventfd and unmasks INTx each time
// the client signals it. Its goroutine owns both descriptors and closes
// them on its way out, so stopping it never waits on anything the client
// controls.
type unmaskWatcher struct {
	file   *os.File
	fd     int
	stopFD int // our own eventfd: written to stop the watcher or change held
	done   chan struct{}

	mu     sync.Mutex // orders stop's write with the goroutine's close of stopFD
	exited bool

	quit atomic.Bool   // set by stop: the next wakeup ends the goroutine
	held atomic.Bool   // the goroutine polls stopFD alone (see IRQs.HoldUnmask)
	ack  chan struct{} // the goroutine has seen a change of held
}

// setUnmaskFD replaces the unmask eventfd with f (nil removes it). The old
// watcher, if any, is handed back through stop to be stopped after the lock
// is released.
func (q *IRQs) setUnmaskFD(f *os.File, stop **unmaskWatcher) (*unmaskWatcher, error) {
	if q.unmask != nil {
		*stop = q.unmask
		q.unmask = nil
	}
	if f == nil {
		return nil, nil
	}
	// Non-blocking as well, for kernels whose eventfd read has no
	// RWF_NOWAIT (see ReadEventfd).
	fd, err := nonblockingFD(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("set irqs: unmask eventfd: %w", err)
	}
	sfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("set irqs: watcher eventfd: %w", err)
	}
	w := &unmaskWatcher{file: f, fd: fd, stopFD: sfd, done: make(chan struct{}), ack: make(chan struct{}, 1)}
	w.held.Store(q.unmaskHeld)
	go w.run(q)
	return w, nil
}

// run waits in poll for an unmask or the stop signal. It never blocks
// anywhere else: the read after poll does not wait, so a client that empties
// the counter between the two (it shares the eventfd) costs a wasted wakeup,
// not a goroutine stuck in read.
func (w *unmaskWatcher) run(q *IRQs) {
	defer func() {
		w.mu.Lock()
		w.exited = true
		unix.Close(w.stopFD)
		w.file.Close()
		w.mu.Unlock()
		close(w.done)
	}()
	pfd := [2]unix.PollFd{
		{Fd: int32(w.fd), Events: unix.POLLIN},
		{Fd: int32(w.stopFD), Events: unix.POLLIN},
	}
	// One pass per wakeup, until stopped or the descriptor fails.
	for {
		pfd[0].Revents, pfd[1].Revents = 0, 0
		// Held, the client's eventfd is not even polled: it stays
		// readable for the process that reads it now.
		fds := pfd[:]
		if w.held.Load() {
			fds = pfd[1:]
		}
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		if pfd[1].Revents != 0 {
			if w.quit.Load() || pfd[1].Revents&unix.POLLIN == 0 {
				return
			}
			// A change of held: seen from the next poll on.
			ReadEventfd(w.stopFD)
			select {
			case w.ack <- struct{}{}:
			default:
			}
			continue
		}
		if pfd[0].Revents&unix.POLLIN != 0 {
			_, err := ReadEventfd(w.fd)
			if errors.Is(err, unix.EAGAIN) {
				continue // emptied by someone else: no unmask to act on
			}
			if err != nil {
				return
			}
			q.unmaskFrom(w)
		} else if pfd[0].Revents != 0 {
			return // POLLERR, POLLHUP, POLLNVAL: not an eventfd we can use
		}
	}
}

// unmaskFrom unmasks INTx for watcher w, unless w has been replaced.
func (q *IRQs) unmaskFrom(w *unmaskWatcher) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.unmask != w {
		return
	}
	q.intxMasked = false
	q.updateINTx()
}

// stop asks the watcher to end and waits for it, at most watcherStopWait.
// It never waits on a read: the goroutine wakes from poll on the stop
// eventfd and closes its descriptors itself, so a goroutine that does not
// end in time still releases them when it does.
func (w *unmaskWatcher) stop() {
	w.quit.Store(true)
	w.mu.Lock()
	if !w.exited {
		_, _ = unix.Write(w.stopFD, eventfdOne[:]) // our own non-blocking eventfd
	}
	w.mu.Unlock()
	t := time.NewTimer(watcherStopWait)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
}

// setHeld holds or releases the watcher and waits, at most
// watcherStopWait, until the goroutine has seen it: once setHeld(true)
// returns, it reads the client's eventfd no more, and an unmask it read
// before has been applied.
func (w *unmaskWatcher) setHeld(h bool) {
	w.held.Store(h)
	select {
	case <-w.ack: // a stale one
	default:
	}
	w.mu.Lock()
	if w.exited {
		w.mu.Unlock()
		return
	}
	_, _ = unix.Write(w.stopFD, eventfdOne[:])
	w.mu.Unlock()
	t := time.NewTimer(watcherStopWait)
	defer t.Stop()
	select {
	case <-w.ack:
	case <-w.done:
	case <-t.C:
	}
}

// HoldUnmask stops reading the INTx unmask eventfd, and keeps a watcher
// set up meanwhile from reading it, until ResumeUnmask. A live upgrade's
// two processes share the eventfd: the one not serving must leave the
// client's unmasks to the other, and the mask the state carries must not
// change after it was taken.
func (q *IRQs) HoldUnmask() { q.holdUnmask(true) }

// ResumeUnmask undoes HoldUnmask. The watcher's first poll picks up an
// unmask the client signalled while it was held.
func (q *IRQs) ResumeUnmask() { q.holdUnmask(false) }

func (q *IRQs) holdUnmask(h bool) {
	q.mu.Lock()
	q.unmaskHeld = h
	w := q.unmask
	q.mu.Unlock()
	// Without the lock: the watcher may be waiting for it to unmask.
	if w != nil {
		w.setHeld(h)
	}
}
