package device

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventfd is a test's end of an eventfd handed to IRQs: the test keeps a
// duplicate to read from, so it can observe signals and the table's close.
type eventfd struct {
	file *os.File // handed over; IRQs owns it
	dup  int      // ours
}

func newEventfd(t testing.TB) eventfd {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(dup) })
	return eventfd{file: os.NewFile(uintptr(fd), "eventfd"), dup: dup}
}

// count reads and resets the eventfd counter: the number of signals since
// the last read.
func (e eventfd) count(t testing.TB) uint64 {
	t.Helper()
	var b [8]byte
	_, err := unix.Read(e.dup, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

// wait polls the eventfd for up to 5 s: for signals sent by another
// goroutine.
func (e eventfd) wait(t testing.TB) uint64 {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(e.dup), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd, 5000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return e.count(t)
	}
}

// closed reports whether the handed-over file has been closed.
func (e eventfd) closed() bool {
	_, err := rawFD(e.file)
	return err != nil
}

func stdInfos() []IRQInfo {
	return []IRQInfo{{Count: 1}, {Count: 1}, {Count: 5}, {Count: 1}, {Count: 1}}
}

func assign(t testing.TB, q *IRQs, index, start uint32, fds ...eventfd) {
	t.Helper()
	files := make([]*os.File, len(fds))
	for i, e := range fds {
		files[i] = e.file
	}
	err := q.SetIRQs(SetIRQs{Index: index, Start: start, Count: uint32(len(fds)),
		Action: IRQActionTrigger, Data: IRQDataEventFD, FDs: files})
	if err != nil {
		t.Fatal(err)
	}
}

func action(t testing.TB, q *IRQs, index, start, count uint32, a IRQAction, bools ...bool) {
	t.Helper()
	req := SetIRQs{Index: index, Start: start, Count: count, Action: a, Data: IRQDataNone}
	if bools != nil {
		req.Data = IRQDataBool
		req.Bools = bools
	}
	if err := q.SetIRQs(req); err != nil {
		t.Fatal(err)
	}
}

func TestMSIXDelivery(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	fds := make([]eventfd, 5)
	for i := range fds {
		fds[i] = newEventfd(t)
	}
	assign(t, q, IRQMSIX, 0, fds...)

	if q.MSIX(1) {
		t.Fatal("delivered with MSI-X disabled")
	}
	if fds[1].count(t) != 0 || q.Pending(IRQMSIX, 1) {
		t.Fatal("disabled MSI-X signalled or went pending")
	}
	q.SetMSIXControl(true, false)
	if !q.MSIX(1) || fds[1].count(t) != 1 {
		t.Fatal("vector 1 not signalled")
	}
	if q.MSIX(5) || q.MSIX(1<<31) {
		t.Fatal("out-of-range vector delivered")
	}

	// SET_IRQS mask: pending, then fired by unmask.
	action(t, q, IRQMSIX, 2, 1, IRQActionMask)
	if q.MSIX(2) || fds[2].count(t) != 0 || !q.Pending(IRQMSIX, 2) {
		t.Fatal("masked vector not pending")
	}
	var pba [8]byte
	q.ReadPBA(0, pba[:])
	if pba[0] != 1<<2 {
		t.Fatalf("PBA %x", pba)
	}
	action(t, q, IRQMSIX, 2, 1, IRQActionUnmask)
	if fds[2].count(t) != 1 || q.Pending(IRQMSIX, 2) {
		t.Fatal("unmask did not fire the pending vector")
	}
	// A cleared pending bit does not fire on unmask.
	action(t, q, IRQMSIX, 2, 1, IRQActionMask)
	q.MSIX(2)
	q.ClearPending(IRQMSIX, 2)
	q.ClearPending(IRQMSIX, 99)
	action(t, q, IRQMSIX, 2, 1, IRQActionUnmask)
	if fds[2].count(t) != 0 || q.Pending(IRQMSIX, 2) {
		t.Fatal("cleared pending vector fired")
	}

	// Function mask.
	q.SetMSIXControl(true, true)
	q.MSIX(0)
	q.MSIX(4)
	if fds[0].count(t)+fds[4].count(t) != 0 {
		t.Fatal("function-masked vectors signalled")
	}
	q.ReadPBA(0, pba[:])
	if pba[0] != 1|1<<4 {
		t.Fatalf("PBA %x", pba)
	}
	q.SetMSIXControl(true, false)
	if fds[0].count(t) != 1 || fds[4].count(t) != 1 {
		t.Fatal("clearing the function mask did not fire pending vectors")
	}

	// Masking with bools selects vectors.
	action(t, q, IRQMSIX, 0, 3, IRQActionMask, true, false, true)
	q.MSIX(0)
	q.MSIX(1)
	if fds[0].count(t) != 0 || fds[1].count(t) != 1 {
		t.Fatal("bool mask applied to the wrong vectors")
	}
	action(t, q, IRQMSIX, 0, 3, IRQActionUnmask, true, true, true)
	if fds[0].count(t) != 1 {
		t.Fatal("bool unmask")
	}

	// Software trigger.
	action(t, q, IRQMSIX, 3, 2, IRQActionTrigger)
	action(t, q, IRQMSIX, 3, 2, IRQActionTrigger, false, true)
	if fds[3].count(t) != 1 || fds[4].count(t) != 2 {
		t.Fatal("trigger")
	}
}

func TestMSIXAssignmentAndDisable(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	q.SetMSIXControl(true, false)
	// No eventfd yet: pending until one is assigned.
	q.MSIX(3)
	if !q.Pending(IRQMSIX, 3) {
		t.Fatal("vector without eventfd not pending")
	}
	a := newEventfd(t)
	assign(t, q, IRQMSIX, 3, a)
	if a.count(t) != 1 || q.Pending(IRQMSIX, 3) {
		t.Fatal("assignment did not fire the pending vector")
	}
	// Replacing closes the old file.
	b := newEventfd(t)
	assign(t, q, IRQMSIX, 3, b)
	if !a.closed() || b.closed() {
		t.Fatal("replaced eventfd not closed, or new one closed")
	}
	q.MSIX(3)
	if b.count(t) != 1 {
		t.Fatal("new eventfd not signalled")
	}
	// A nil entry de-assigns.
	if err := q.SetIRQs(SetIRQs{Index: IRQMSIX, Start: 3, Count: 1, Action: IRQActionTrigger,
		Data: IRQDataEventFD, FDs: []*os.File{nil}}); err != nil {
		t.Fatal(err)
	}
	if !b.closed() {
		t.Fatal("de-assigned eventfd not closed")
	}
	// Count 0 with DATA_NONE|TRIGGER disables the index.
	c, d := newEventfd(t), newEventfd(t)
	assign(t, q, IRQMSIX, 0, c, d)
	action(t, q, IRQMSIX, 0, 0, IRQActionTrigger)
	if !c.closed() || !d.closed() {
		t.Fatal("disable did not close the index's eventfds")
	}
	if q.Pending(IRQMSIX, 3) {
		t.Fatal("disable kept pending bits")
	}
	q.MSIX(0)
	if !q.Pending(IRQMSIX, 0) {
		t.Fatal("vector of a disabled index not pending")
	}
}

func TestMSIDelivery(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	e := newEventfd(t)
	assign(t, q, IRQMSI, 0, e)
	if q.MSI(0) || e.count(t) != 0 {
		t.Fatal("MSI delivered while disabled")
	}
	q.SetMSIControl(true, 0)
	if !q.MSI(0) || e.count(t) != 1 {
		t.Fatal("MSI not delivered")
	}
	q.SetMSIControl(true, 1) // per-vector mask in config
	q.MSI(0)
	if e.count(t) != 0 || !q.Pending(IRQMSI, 0) {
		t.Fatal("config-masked MSI not pending")
	}
	q.SetMSIControl(true, 0)
	if e.count(t) != 1 {
		t.Fatal("unmasking MSI did not fire")
	}
}

func TestINTxLevel(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	trig := newEventfd(t)
	assign(t, q, IRQINTx, 0, trig)

	q.SetINTx(true)
	if trig.count(t) != 1 || !q.INTxMasked() {
		t.Fatal("assertion did not signal and automask")
	}
	q.SetINTx(true)
	if trig.count(t) != 0 {
		t.Fatal("masked line signalled again")
	}
	// Unmask with the line still asserted: fires again, masks again.
	action(t, q, IRQINTx, 0, 1, IRQActionUnmask)
	if trig.count(t) != 1 || !q.INTxMasked() {
		t.Fatal("unmask of an asserted line did not fire")
	}
	// Deassert, then unmask: nothing.
	q.SetINTx(false)
	action(t, q, IRQINTx, 0, 1, IRQActionUnmask, true)
	if trig.count(t) != 0 || q.INTxMasked() {
		t.Fatal("unmask of a deasserted line fired or stayed masked")
	}
	// Client mask holds off a new assertion until unmask.
	action(t, q, IRQINTx, 0, 1, IRQActionMask)
	q.SetINTx(true)
	if trig.count(t) != 0 {
		t.Fatal("client-masked INTx signalled")
	}
	action(t, q, IRQINTx, 0, 1, IRQActionUnmask)
	if trig.count(t) != 1 {
		t.Fatal("unmask did not fire")
	}
	// The command register's INTx disable.
	q.SetINTx(false)
	action(t, q, IRQINTx, 0, 1, IRQActionUnmask)
	q.SetINTxDisabled(true)
	q.SetINTx(true)
	if trig.count(t) != 0 {
		t.Fatal("disabled INTx signalled")
	}
	q.SetINTxDisabled(false)
	if trig.count(t) != 1 {
		t.Fatal("re-enabling an asserted INTx did not signal")
	}
	// A software trigger signals regardless of the mask.
	action(t, q, IRQINTx, 0, 1, IRQActionTrigger)
	if trig.count(t) != 1 {
		t.Fatal("software trigger")
	}
}

func TestINTxUnmaskEventfd(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	trig, unm := newEventfd(t), newEventfd(t)
	assign(t, q, IRQINTx, 0, trig)
	if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
		Data: IRQDataEventFD, FDs: []*os.File{unm.file}}); err != nil {
		t.Fatal(err)
	}
	q.SetINTx(true)
	if trig.count(t) != 1 {
		t.Fatal("no first signal")
	}
	// The client unmasks through the eventfd; the line is still asserted,
	// so the watcher's unmask fires again.
	for round := 0; round < 3; round++ {
		if _, err := unix.Write(unm.dup, eventfdOne[:]); err != nil {
			t.Fatal(err)
		}
		if n := trig.wait(t); n != 1 {
			t.Fatalf("round %d: %d signals after unmask eventfd", round, n)
		}
	}
	// Disabling INTx stops the watcher and closes both files.
	action(t, q, IRQINTx, 0, 0, IRQActionTrigger)
	if !trig.closed() || !unm.closed() {
		t.Fatal("disable left INTx eventfds open")
	}
}

func TestSetIRQsRejects(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	cases := []SetIRQs{
		{Index: 7, Count: 1, Action: IRQActionTrigger, Data: IRQDataEventFD},
		{Index: IRQMSIX, Start: 4, Count: 2, Action: IRQActionTrigger, Data: IRQDataEventFD},
		{Index: IRQMSIX, Start: 1 << 31, Count: 1 << 31, Action: IRQActionTrigger, Data: IRQDataEventFD},
		{Index: IRQMSIX, Count: 2, Action: IRQActionTrigger, Data: IRQDataBool, Bools: []bool{true}},
		{Index: IRQMSIX, Count: 1, Action: IRQActionMask, Data: IRQDataEventFD},
		{Index: IRQMSIX, Count: 1, Action: IRQActionUnmask, Data: IRQDataEventFD},
		{Index: IRQMSIX, Count: 1, Action: 99, Data: IRQDataNone},
		{Index: IRQMSIX, Count: 1, Action: IRQActionTrigger, Data: 99},
	}
	for i, req := range cases {
		var evs []eventfd
		if req.Data == IRQDataEventFD {
			n := req.Count
			if n > 4 {
				n = 1
			}
			for j := uint32(0); j < n; j++ {
				e := newEventfd(t)
				evs = append(evs, e)
				req.FDs = append(req.FDs, e.file)
			}
		}
		if err := q.SetIRQs(req); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("case %d: %v, want EINVAL", i, err)
		}
		for _, e := range evs {
			if !e.closed() {
				t.Errorf("case %d: a refused eventfd was not closed", i)
			}
		}
	}
}

func TestIRQsCloseAndReset(t *testing.T) {
	q := NewIRQs(stdInfos())
	a, b, c, u := newEventfd(t), newEventfd(t), newEventfd(t), newEventfd(t)
	assign(t, q, IRQMSIX, 0, a)
	assign(t, q, IRQErr, 0, b)
	assign(t, q, IRQINTx, 0, c)
	if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
		Data: IRQDataEventFD, FDs: []*os.File{u.file}}); err != nil {
		t.Fatal(err)
	}
	if !q.Signal(IRQErr, 0) || b.count(t) != 1 {
		t.Fatal("ERR signal")
	}
	q.SetMSIXControl(true, true)
	q.MSIX(0)
	q.SetINTx(true)
	q.Reset()
	if q.Pending(IRQMSIX, 0) || q.INTxMasked() {
		t.Fatal("reset kept interrupt state")
	}
	if a.closed() {
		t.Fatal("reset closed eventfds")
	}
	q.Close()
	for i, e := range []eventfd{a, b, c, u} {
		if !e.closed() {
			t.Errorf("eventfd %d open after Close", i)
		}
	}
	// Usable again by a next client.
	d := newEventfd(t)
	assign(t, q, IRQMSIX, 0, d)
	q.SetMSIXControl(true, false)
	if !q.MSIX(0) || d.count(t) != 1 {
		t.Fatal("no delivery after Close and new assignment")
	}
	q.Close()
}

func TestMSIXNoAllocs(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	e := newEventfd(t)
	assign(t, q, IRQMSIX, 1, e)
	q.SetMSIXControl(true, false)
	if n := testing.AllocsPerRun(100, func() { q.MSIX(1) }); n != 0 {
		t.Errorf("MSIX delivery allocates %v times", n)
	}
	action(t, q, IRQMSIX, 1, 1, IRQActionMask)
	if n := testing.AllocsPerRun(100, func() { q.MSIX(1) }); n != 0 {
		t.Errorf("pending path allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { q.SetINTx(true); q.SetINTx(false) }); n != 0 {
		t.Errorf("INTx allocates %v times", n)
	}
	// A full counter: the signal is dropped, and the log is rate-limited
	// (the warm-up run logs).
	q.SetLogger(slog.New(slog.DiscardHandler))
	full := newBlockingEventfd(t, 0xfffffffffffffffe)
	assign(t, q, IRQMSIX, 2, full)
	if n := testing.AllocsPerRun(100, func() { q.MSIX(2) }); n != 0 {
		t.Errorf("dropping a signal allocates %v times", n)
	}
	if q.Dropped() < 100 {
		t.Errorf("%d signals dropped, want at least 100", q.Dropped())
	}
}

// Delivery from several goroutines races SetIRQs replacing and disabling
// eventfds; run with -race. Every signal lands on a live eventfd.
func TestIRQsConcurrent(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	q.SetMSIXControl(true, false)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				q.MSIX(uint32(i+g) % 5)
				q.SetINTx(i%2 == 0)
			}
		}(g)
	}
	for i := 0; i < 200; i++ {
		e := newEventfd(t)
		assign(t, q, IRQMSIX, uint32(i%5), e)
		if i%20 == 0 {
			action(t, q, IRQMSIX, 0, 0, IRQActionTrigger)
		}
		action(t, q, IRQMSIX, 0, 5, IRQActionMask)
		action(t, q, IRQMSIX, 0, 5, IRQActionUnmask)
	}
	close(stop)
	wg.Wait()
}

func BenchmarkMSIXDelivery(b *testing.B) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	e := newEventfd(b)
	assign(b, q, IRQMSIX, 0, e)
	q.SetMSIXControl(true, false)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.MSIX(0)
		if i%1000 == 0 {
			e.count(b) // keep the counter far from overflow
		}
	}
}

// BenchmarkMSIXDeliveryFullCounter is the cost of a signal dropped on a
// client's full eventfd counter.
func BenchmarkMSIXDeliveryFullCounter(b *testing.B) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	q.SetLogger(slog.New(slog.DiscardHandler))
	assign(b, q, IRQMSIX, 0, newBlockingEventfd(b, 0xfffffffffffffffe))
	q.SetMSIXControl(true, false)
	b.ReportAllocs()
	for b.Loop() {
		q.MSIX(0)
	}
}

// Replacing the unmask eventfd while the line toggles stops each old
// watcher and closes its file; only the current one unmasks.
func TestINTxUnmaskReplace(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	trig := newEventfd(t)
	assign(t, q, IRQINTx, 0, trig)
	var old []eventfd
	for i := 0; i < 30; i++ {
		u := newEventfd(t)
		if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
			Data: IRQDataEventFD, FDs: []*os.File{u.file}}); err != nil {
			t.Fatal(err)
		}
		for _, o := range old {
			if !o.closed() {
				t.Fatalf("round %d: replaced unmask eventfd still open", i)
			}
			unix.Write(o.dup, eventfdOne[:]) // a stale unmask goes nowhere
		}
		q.SetINTx(i%2 == 0)
		unix.Write(u.dup, eventfdOne[:])
		old = append(old[:0], u)
	}
	// A nil eventfd removes the watcher.
	if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
		Data: IRQDataEventFD, FDs: []*os.File{nil}}); err != nil {
		t.Fatal(err)
	}
	if !old[0].closed() {
		t.Fatal("removed unmask eventfd still open")
	}
	// With no watcher, an assertion stays masked after its signal.
	trig.count(t)
	q.SetINTx(false)
	action(t, q, IRQINTx, 0, 1, IRQActionUnmask)
	q.SetINTx(true)
	if trig.count(t) != 1 || !q.INTxMasked() {
		t.Fatal("assertion after watcher removal")
	}
}

// newBlockingEventfd is a client's eventfd made blocking, its counter
// preset: what a hostile client hands over.
func newBlockingEventfd(t testing.TB, counter uint64) eventfd {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(dup) })
	if counter != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], counter)
		if _, err := unix.Write(dup, b[:]); err != nil {
			t.Fatal(err)
		}
	}
	return eventfd{file: os.NewFile(uintptr(fd), "eventfd"), dup: dup}
}

// within runs f on its own goroutine and fails the test if it has not
// returned after a generous bound: for calls that must not block, where
// the failure would otherwise be a hung test.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

// A blocking eventfd whose counter is one short of full: the signal that
// would block is dropped and counted, the table stays usable, and once the
// client reads its counter signals land again.
func TestFullBlockingEventfdDropsSignals(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	var logs strings.Builder
	q.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	q.SetMSIXControl(true, false)
	q.MSIX(0) // pending: no eventfd yet
	e := newBlockingEventfd(t, 0xfffffffffffffffe)
	// Assigning fires the pending vector on the full counter.
	within(t, "SET_IRQS on a full blocking eventfd", func() { assign(t, q, IRQMSIX, 0, e) })
	within(t, "MSI-X delivery on a full counter", func() { q.MSIX(0) })
	if n := q.Dropped(); n != 2 {
		t.Fatalf("%d signals dropped, want 2", n)
	}
	if strings.Count(logs.String(), "eventfd counter full") != 1 {
		t.Errorf("drops not logged once (rate limit):\n%s", logs.String())
	}
	fl, err := unix.FcntlInt(uintptr(e.dup), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Error("the eventfd was kept blocking")
	}
	if n := e.count(t); n != 0xfffffffffffffffe {
		t.Fatalf("counter %#x, want the client's own value", n)
	}
	if !q.MSIX(0) || e.count(t) != 1 {
		t.Fatal("no signal after the client emptied its counter")
	}
	if q.Dropped() != 2 {
		t.Fatal("a delivered signal was counted as dropped")
	}
}

// ReadEventfd returns at once on an empty counter even when the file
// description is blocking (the client may make it so at any time).
func TestReadEventfdNeverBlocks(t *testing.T) {
	e := newBlockingEventfd(t, 3)
	fd, err := rawFD(e.file)
	if err != nil {
		t.Fatal(err)
	}
	defer e.file.Close()
	var n uint64
	within(t, "reading a counter of 3", func() { n, err = ReadEventfd(fd) })
	if err != nil || n != 3 {
		t.Fatalf("read %d, %v; want 3", n, err)
	}
	within(t, "reading an empty blocking eventfd", func() { n, err = ReadEventfd(fd) })
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("read of an empty counter: %d, %v; want EAGAIN", n, err)
	}
}

// A client races the unmask watcher for its own eventfd, made blocking
// again behind the server's back: the watcher reads only what poll promised
// and may find it gone. Replacing and removing the watcher still returns,
// and every descriptor the table was given is closed.
func TestINTxUnmaskWatcherRacedByClient(t *testing.T) {
	q := NewIRQs(stdInfos())
	defer q.Close()
	trig := newEventfd(t)
	assign(t, q, IRQINTx, 0, trig)
	const rounds = 3
	for r := 0; r < rounds; r++ {
		u := newBlockingEventfd(t, 0)
		if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
			Data: IRQDataEventFD, FDs: []*os.File{u.file}}); err != nil {
			t.Fatal(err)
		}
		// The client turns blocking mode back on, then signals and takes
		// back its own unmask as fast as it can.
		if err := unix.SetNonblock(u.dup, false); err != nil {
			t.Fatal(err)
		}
		var stolen int
		for i := 0; i < 20000; i++ {
			unix.Write(u.dup, eventfdOne[:])
			if _, err := ReadEventfd(u.dup); err == nil {
				stolen++
			}
		}
		if stolen == 0 {
			t.Fatal("the client never won its counter back: the race did not happen")
		}
		within(t, "removing a raced unmask watcher", func() {
			if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
				Data: IRQDataEventFD, FDs: []*os.File{nil}}); err != nil {
				t.Error(err)
			}
		})
		if !u.closed() {
			t.Fatalf("round %d: the raced unmask eventfd is still open", r)
		}
	}
}

// readable says whether an eventfd's counter is non-zero, without reading it.
func (e eventfd) readable(t testing.TB) bool {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(e.dup), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestINTxUnmaskHeld: a held watcher leaves the client's unmask in the
// eventfd (for the other process of a live upgrade) and the mask as it
// was; resumed, it picks the unmask up. A watcher set up while held, as by
// a successor adopting the eventfd, does not read it either until resumed.
func TestINTxUnmaskHeld(t *testing.T) {
	for _, setUpHeld := range []bool{false, true} {
		q := NewIRQs(stdInfos())
		trig, unm := newEventfd(t), newEventfd(t)
		assign(t, q, IRQINTx, 0, trig)
		if setUpHeld {
			q.HoldUnmask()
		}
		if err := q.SetIRQs(SetIRQs{Index: IRQINTx, Count: 1, Action: IRQActionUnmask,
			Data: IRQDataEventFD, FDs: []*os.File{unm.file}}); err != nil {
			t.Fatal(err)
		}
		q.SetINTx(true)
		if trig.count(t) != 1 || !q.INTxMasked() {
			t.Fatal("no first signal, or not automasked")
		}
		q.HoldUnmask()
		if _, err := unix.Write(unm.dup, eventfdOne[:]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if !unm.readable(t) || !q.INTxMasked() || trig.count(t) != 0 {
			t.Fatalf("set up held %v: a held watcher read the unmask", setUpHeld)
		}
		q.ResumeUnmask()
		// The line is still asserted: the unmask fires it again.
		if n := trig.wait(t); n != 1 {
			t.Fatalf("set up held %v: %d signals after resuming", setUpHeld, n)
		}
		q.Close()
		if !unm.closed() {
			t.Fatal("Close left the unmask eventfd open")
		}
	}
}
