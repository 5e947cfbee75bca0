package vfiouser

import (
	"encoding/binary"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

// The attacks below come from a client that shares its interrupt eventfds
// with the server and turns them against it: a blocking eventfd whose
// counter is one short of full, so the next write of the server would wait
// until the client reads it, which it never does.

const (
	abuseMSIXCap   = 0x40
	abuseVendorID  = 0x1af4
	abuseFullCount = 0xfffffffffffffffe
	abuseBound     = 20 * time.Second // "never", for a call that must return
)

// irqFunction is a real PCI function (its IRQ table is the one the NIC
// uses) with MSI-X, served on a listening socket.
func irqFunction(t *testing.T) *device.Function {
	t.Helper()
	cs := device.NewConfigSpace(device.Identity{VendorID: abuseVendorID, DeviceID: 1, Class: 0x020000})
	if err := cs.AddBAR(0, device.BAR{Kind: device.BARMem32, Size: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	if err := cs.AddMSIX(abuseMSIXCap, 2, 0, 0, 0, 0x2000); err != nil {
		t.Fatal(err)
	}
	return device.NewFunction(cs)
}

// abuseServer serves dev on a fresh socket until the test ends (or stop),
// checking then that Serve returned. A client waits for the previous one's
// teardown up to abuseBound before it is refused.
type abuseServer struct {
	srv      *Server
	ln       *Listener
	served   chan error
	stopOnce sync.Once
}

func serveAbuse(t testing.TB, dev device.Device, opts Options) *abuseServer {
	t.Helper()
	ln, err := Listen(filepath.Join(t.TempDir(), "dev.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HandoverWait == 0 {
		opts.HandoverWait = abuseBound
	}
	s := &abuseServer{srv: newServer(t, dev, opts), ln: ln, served: make(chan error, 1)}
	go func() { s.served <- s.srv.Serve(ln) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// connect connects a client whose calls give up after abuseBound instead
// of hanging the test.
func (s *abuseServer) connect(t testing.TB) *Client {
	t.Helper()
	cl, err := Dial(s.ln.Path())
	if err != nil {
		t.Fatal(err)
	}
	cl.SetTimeout(abuseBound)
	return cl
}

// dial connects and negotiates a client.
func (s *abuseServer) dial(t testing.TB) *Client {
	t.Helper()
	cl := s.connect(t)
	if _, err := cl.Negotiate(nil); err != nil {
		cl.Close()
		t.Fatal("negotiate:", err)
	}
	return cl
}

// nextClient is the client after an abusive one has gone: it connects,
// negotiates and has a register read at off of region answered.
func (s *abuseServer) nextClient(t testing.TB, region uint32, off uint64) {
	t.Helper()
	cl := s.dial(t)
	defer cl.Close()
	var b [4]byte
	if err := cl.ReadRegion(region, off, b[:]); err != nil {
		t.Fatal("the next client's register read:", err)
	}
}

// conn is the connection of the current client, nil if none.
func (s *abuseServer) conn() *Conn {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	return s.srv.active
}

// stop closes the socket and drops the client, and fails the test unless
// Serve returns and the connection is torn down within abuseBound. Only
// the first call does anything.
func (s *abuseServer) stop(t testing.TB) {
	t.Helper()
	s.stopOnce.Do(func() {
		s.ln.Close()
		within(t, "Serve after the socket closed", func() {
			if err := <-s.served; err != nil {
				t.Error(err)
			}
		})
		s.srv.Close()
		waitFor(t, "the connection's teardown", func() bool { return s.conn() == nil })
	})
}

// within runs f on its own goroutine and fails the test if it has not
// returned after abuseBound.
func within(t testing.TB, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(abuseBound):
		t.Fatalf("%s: still blocked after %s", what, abuseBound)
	}
}

// waitFor polls cond until it holds, failing after abuseBound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(abuseBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, abuseBound)
		}
		time.Sleep(time.Millisecond)
	}
}

// fullBlockingEventFD is an eventfd in blocking mode with its counter one
// short of full: a write of 1 to it blocks.
func fullBlockingEventFD(t *testing.T) *EventFD {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, fd)
	e := &EventFD{fd: fd}
	t.Cleanup(func() { e.Close() })
	return e
}

// fill sets the counter of eventfd fd to one short of full.
func fill(t *testing.T, fd int) {
	t.Helper()
	var b [8]byte
	if _, err := device.ReadEventfd(fd); err != nil && err != unix.EAGAIN {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(b[:], abuseFullCount)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatal(err)
	}
}

func enableMSIX(t *testing.T, cl *Client) {
	t.Helper()
	if err := cl.WriteRegion(device.RegionConfig, abuseMSIXCap+device.MSIXControl, []byte{0, 0x80}); err != nil {
		t.Fatal(err)
	}
}

// readVendor is the register read a well-behaved client makes.
func readVendor(t *testing.T, cl *Client) {
	t.Helper()
	var b [2]byte
	if err := cl.ReadRegion(device.RegionConfig, device.CfgVendorID, b[:]); err != nil {
		t.Fatal("register read:", err)
	}
	if v := binary.LittleEndian.Uint16(b[:]); v != abuseVendorID {
		t.Fatalf("vendor %#x, want %#x", v, abuseVendorID)
	}
}

// A client hands over a blocking eventfd one signal short of full while an
// interrupt is pending, and the device raises another: the SET_IRQS reply
// comes, both signals are dropped, registers are served, the next client is
// accepted and shutdown completes, with no descriptor or goroutine left.
func TestFullBlockingEventFDThroughSocket(t *testing.T) {
	leakcheck.FDs(t)
	leakcheck.Goroutines(t)
	fn := irqFunction(t)
	s := serveAbuse(t, fn, Options{HandoverWait: abuseBound})
	cl := s.dial(t)
	enableMSIX(t, cl)
	fn.IRQs.MSIX(0) // no eventfd yet: pending, fired by the assignment
	e := fullBlockingEventFD(t)
	within(t, "SET_IRQS with a full blocking eventfd", func() {
		if err := cl.SetIRQEventFDs(device.IRQMSIX, 0, []*EventFD{e}); err != nil {
			t.Error("SET_IRQS:", err)
		}
	})
	// The device raises an interrupt from a goroutine of its own.
	within(t, "an interrupt on the full eventfd", func() { fn.IRQs.MSIX(0) })
	if n := fn.IRQs.Dropped(); n != 2 {
		t.Errorf("%d signals dropped, want 2", n)
	}
	readVendor(t, cl)
	cl.Close()

	next := s.dial(t)
	readVendor(t, next)
	next.Close()
	s.stop(t)
}

// blockedAgain hands the server an eventfd for MSI-X vector v, then
// switches it back to blocking mode behind the server's back, as a hostile
// client sharing its file description can.
func blockedAgain(t *testing.T, cl *Client, v uint32) *EventFD {
	t.Helper()
	e, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if err := cl.SetIRQEventFDs(device.IRQMSIX, v, []*EventFD{e}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(e.FD(), false); err != nil {
		t.Fatal(err)
	}
	return e
}

// postTrigger sends a posted software trigger of MSI-X vector 0: the
// server writes to its eventfd from the connection's goroutine, and sends
// no reply to wait for.
func postTrigger(t *testing.T, cl *Client) {
	t.Helper()
	p := make([]byte, IRQSetSize)
	IRQSet{Argsz: IRQSetSize, Flags: uint32(device.IRQDataNone) | uint32(device.IRQActionTrigger),
		Index: device.IRQMSIX, Count: 1}.Encode(p)
	if _, err := cl.call(CmdSetIRQs, FlagNoReply, p, nil); err != nil {
		t.Fatal(err)
	}
}

// A client switches its eventfd back to blocking mode after handing it
// over, fills it, and has the server signal it: the connection's goroutine
// is stuck in that write. When the client goes and the next one connects,
// the server empties the counter, the old connection ends, and the next
// client is served.
func TestEventFDMadeBlockingAgainReleasedOnHandover(t *testing.T) {
	leakcheck.FDs(t)
	leakcheck.Goroutines(t)
	fn := irqFunction(t)
	s := serveAbuse(t, fn, Options{HandoverWait: abuseBound})
	cl := s.dial(t)
	enableMSIX(t, cl)
	e := blockedAgain(t, cl, 0)
	fill(t, e.FD())
	postTrigger(t, cl)
	cl.Close()

	next := s.dial(t)
	readVendor(t, next)
	if n, err := e.Wait(0); err != nil || n != 1 {
		t.Errorf("the stuck signal: counter %d, %v; want the one signal written once released", n, err)
	}
	next.Close()
	s.stop(t)
}

// The same stuck write on a goroutine of the device, with the client still
// connected: shutting the server down releases it.
func TestEventFDMadeBlockingAgainReleasedOnShutdown(t *testing.T) {
	leakcheck.FDs(t)
	leakcheck.Goroutines(t)
	fn := irqFunction(t)
	s := serveAbuse(t, fn, Options{})
	cl := s.dial(t)
	defer cl.Close()
	enableMSIX(t, cl)
	e := blockedAgain(t, cl, 1)
	fill(t, e.FD())
	stuck := make(chan struct{})
	go func() { defer close(stuck); fn.IRQs.MSIX(1) }()
	s.stop(t)
	within(t, "the device's interrupt write after shutdown", func() { <-stuck })
}

// The stuck writes again, with the client still connected and never
// leaving: one on the connection's goroutine (a posted trigger) and one on
// a goroutine of the device. The connection's watcher empties the full
// counter, both writes finish, and the same client's next register read is
// answered; each signal lands once in the emptied counter.
func TestEventFDMadeBlockingAgainReleasedWhileConnected(t *testing.T) {
	leakcheck.FDs(t)
	leakcheck.Goroutines(t)
	fn := irqFunction(t)
	s := serveAbuse(t, fn, Options{})
	cl := s.dial(t)
	enableMSIX(t, cl)
	e := blockedAgain(t, cl, 0)

	fill(t, e.FD())
	postTrigger(t, cl)
	within(t, "a register read after a stuck write on the connection's goroutine", func() { readVendor(t, cl) })
	if n, err := e.Wait(0); err != nil || n != 1 {
		t.Errorf("the connection's stuck signal: counter %d, %v; want 1", n, err)
	}

	fill(t, e.FD())
	within(t, "the device's stuck interrupt write", func() { fn.IRQs.MSIX(0) })
	readVendor(t, cl)
	if n, err := e.Wait(0); err != nil || n != 1 {
		t.Errorf("the device's stuck signal: counter %d, %v; want 1", n, err)
	}
	cl.Close()
	s.stop(t)
}
