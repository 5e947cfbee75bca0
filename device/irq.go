package device

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxVectors bounds the vectors of any IRQ index (MSI-X allows 2048).
const maxVectors = 2048

// eventfdOne is what signals an eventfd: a little-endian u64 1. It is only
// ever read.
var eventfdOne = [8]byte{1}

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
type IRQs struct {
	mu  sync.Mutex
	idx [NumIRQIndexes]irqIndex

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
					q.fire(ix, req.Start+i)
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
		fd, err = rawFD(f)
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

// fire writes 1 to vector v's eventfd, if it has one. Called with mu held,
// so the descriptor cannot be closed under it.
func (q *IRQs) fire(ix *irqIndex, v uint32) bool {
	fd := ix.fds[v]
	if fd < 0 {
		return false
	}
	// A full counter (EAGAIN) means the client has an interrupt pending
	// already; other errors are the client's broken descriptor. Neither is
	// the device's to report.
	_, _ = unix.Write(fd, eventfdOne[:])
	return true
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
					q.fire(ix, v)
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
		return q.fire(ix, v)
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
	ix := &q.idx[index]
	if v >= ix.count {
		return false
	}
	return q.fire(ix, v)
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
	if q.fire(ix, 0) {
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
// the client signals it.
type unmaskWatcher struct {
	file   *os.File
	fd     int
	stopFD int // our own eventfd: written to stop the watcher
	done   chan struct{}
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
	fd, err := rawFD(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("set irqs: unmask eventfd: %w", err)
	}
	sfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("set irqs: watcher eventfd: %w", err)
	}
	w := &unmaskWatcher{file: f, fd: fd, stopFD: sfd, done: make(chan struct{})}
	go w.run(q)
	return w, nil
}

func (w *unmaskWatcher) run(q *IRQs) {
	defer close(w.done)
	var buf [8]byte
	for {
		pfd := []unix.PollFd{
			{Fd: int32(w.fd), Events: unix.POLLIN},
			{Fd: int32(w.stopFD), Events: unix.POLLIN},
		}
		_, err := unix.Poll(pfd, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pfd[1].Revents != 0 {
			return
		}
		if pfd[0].Revents&unix.POLLIN != 0 {
			if _, err := unix.Read(w.fd, buf[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
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

// stop ends the watcher, waits for it, and closes its descriptors.
func (w *unmaskWatcher) stop() {
	_, _ = unix.Write(w.stopFD, eventfdOne[:])
	<-w.done
	unix.Close(w.stopFD)
	w.file.Close()
}
