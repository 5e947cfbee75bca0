package vfiouser

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/handover"
	"e1000e-vfu/internal/leakcheck"
)

// takeoverPair is a client served by an old server that a test hands over
// to a new one; fds[1] is the client's socket, for raw writes.
type takeoverPair struct {
	oldDev, newDev *fakeDevice
	oldSrv, newSrv *Server
	cl             *Client
	clientFD       int
	oldDone        chan struct{}
}

func newTakeoverPair(t *testing.T) *takeoverPair {
	t.Helper()
	p := &takeoverPair{oldDev: newFakeDevice(t), newDev: newFakeDevice(t), oldDone: make(chan struct{})}
	p.oldSrv = newServer(t, p.oldDev, Options{})
	p.newSrv = newServer(t, p.newDev, Options{})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := p.oldSrv.NewConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	go func() { conn.Serve(); close(p.oldDone) }()
	p.cl = NewClient(fds[1])
	p.clientFD = fds[1]
	t.Cleanup(func() {
		p.cl.Close()
		<-p.oldDone
		for _, s := range []*Server{p.oldSrv, p.newSrv} {
			s.Close()
			waitNoClient(t, s)
		}
	})
	return p
}

// waitRead waits until the server's connection has read everything the
// client sent (the socket holds no unread byte).
func waitRead(t *testing.T, s *Server) {
	t.Helper()
	s.mu.Lock()
	fd := s.active.fd
	s.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n == 0 {
			return
		}
	}
	t.Fatal("the server did not read")
}

// waitNoClient waits for the server's connection, served on its own
// goroutine, to be torn down.
func waitNoClient(t *testing.T, s *Server) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.mu.Lock()
		c := s.active
		s.mu.Unlock()
		if c == nil {
			return
		}
	}
	t.Error("a connection was not torn down")
}

// dupAll is what SCM_RIGHTS does to the descriptors of an export: the
// receiver gets its own.
func dupAll(t *testing.T, x *ConnExport, intxMasked bool) Adopted {
	t.Helper()
	d := func(fd int) int {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a := Adopted{FD: d(x.FD), Proto: x.Proto, Maps: x.Maps, Files: map[uint32]int{}, Unmask: -1, INTxMasked: intxMasked}
	a.Proto.Buffered = append([]byte(nil), x.Proto.Buffered...)
	for i, f := range x.Files {
		a.Files[uint32(i)] = d(f)
	}
	for _, q := range x.IRQs {
		a.IRQs = append(a.IRQs, IRQFD{Index: q.Index, Vector: q.Vector, FD: d(q.FD)})
	}
	for _, b := range x.Buffered {
		a.Buffered = append(a.Buffered, BufferedFD{Offset: b.Offset, FD: d(b.FD)})
	}
	if x.Unmask >= 0 {
		a.Unmask = d(x.Unmask)
	}
	return a
}

// takeover pauses the old server, exports, adopts in the new one and
// releases the old one, as the two processes of a live upgrade do.
func (p *takeoverPair) takeover(t *testing.T) {
	t.Helper()
	h, err := p.oldSrv.Pause(context.Background())
	if err != nil || h == nil {
		t.Fatalf("pause: %v %v", h, err)
	}
	p.complete(t, h, export(t, h))
}

func export(t *testing.T, h *Handoff) *ConnExport {
	t.Helper()
	x, err := h.Export()
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// complete has the new server adopt what the paused old one exported and
// serve it, and releases the old one.
func (p *takeoverPair) complete(t *testing.T, h *Handoff, x *ConnExport) {
	t.Helper()
	c, err := p.newSrv.Adopt(dupAll(t, x, false))
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	p.newSrv.ServeAdopted(c)
}

func TestHandoverClientKeepsTalking(t *testing.T) {
	leakcheck.FDs(t)
	p := newTakeoverPair(t)
	if _, err := p.cl.Negotiate(DefaultCapabilities()); err != nil {
		t.Fatal(err)
	}
	mem, err := NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := p.cl.Map(0x100000, mem, 0, 1<<20, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	if err := p.cl.MapMessage(0x400000, make([]byte, 4096), DMAFlagRead); err != nil {
		t.Fatal(err)
	}
	efds := make([]*EventFD, 3)
	for i := range efds {
		if efds[i], err = NewEventFD(); err != nil {
			t.Fatal(err)
		}
		defer efds[i].Close()
	}
	if err := p.cl.SetIRQEventFDs(device.IRQMSIX, 0, efds[:2]); err != nil {
		t.Fatal(err)
	}
	if err := p.cl.SetIRQEventFDs(device.IRQErr, 0, efds[2:]); err != nil {
		t.Fatal(err)
	}
	if err := p.cl.WriteRegion(device.RegionBAR0, 0x10, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}

	p.takeover(t)

	// The next message is answered by the new server, with the memory
	// and eventfds the client gave the old one.
	if err := p.cl.WriteRegion(device.RegionBAR0, 0x20, []byte{5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	if got := p.newDev.peek(device.RegionBAR0, 0x20, 4); string(got) != "\x05\x06\x07\x08" {
		t.Fatalf("new device got %x", got)
	}
	copy(mem.Data[0x1000:], "guest data")
	buf := make([]byte, 10)
	if err := p.newDev.mem0().Read(0x101000, buf); err != nil || string(buf) != "guest data" {
		t.Fatalf("guest memory after takeover: %q %v", buf, err)
	}
	if err := p.newDev.trigger(device.IRQMSIX, 1); err != nil {
		t.Fatal(err)
	}
	if n, err := efds[1].Wait(time.Second); n != 1 || err != nil {
		t.Fatalf("interrupt after takeover: %d %v", n, err)
	}
	if err := p.newDev.trigger(device.IRQErr, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := efds[2].Wait(time.Second); n != 1 {
		t.Fatal("error eventfd lost")
	}
	// Memory mapped without fd is reached by message from the new one.
	if err := p.newDev.worker(t).Read(0x400000, buf); err != nil {
		t.Fatalf("message DMA after takeover: %v", err)
	}
	if p.oldSrv.active != nil {
		t.Fatal("old server still holds the client")
	}
	if c, d, _ := p.oldDev.counts(); c != 1 || d != 1 {
		t.Fatalf("old device: %d connects, %d disconnects", c, d)
	}
	// A second takeover, back the other way round, works too.
	p.oldSrv, p.newSrv = p.newSrv, p.oldSrv
	p.oldDev, p.newDev = p.newDev, p.oldDev
	p.takeover(t)
	if err := p.cl.WriteRegion(device.RegionBAR0, 0x24, []byte{9}); err != nil {
		t.Fatal(err)
	}
	if got := p.newDev.peek(device.RegionBAR0, 0x24, 1); got[0] != 9 {
		t.Fatal("second takeover: write lost")
	}
}

// TestHandoverBetweenWriteAndReply: a REGION_WRITE sent while the old
// server is paused is answered by the new one; one whose first half the
// old server had read is completed and answered by the new one.
func TestHandoverBetweenWriteAndReply(t *testing.T) {
	leakcheck.FDs(t)
	p := newTakeoverPair(t)
	if _, err := p.cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	h, err := p.oldSrv.Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A posted write whose first half the old server reads before the
	// pause would leave it in the old server's buffer; here the old one
	// is paused, so raw bytes written now stay in the socket. Both cases
	// end in the new server: the buffered one is tested below.
	replied := make(chan error, 1)
	go func() { replied <- p.cl.WriteRegion(device.RegionBAR0, 0x30, []byte{0xaa, 0xbb}) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-replied:
		t.Fatalf("answered while paused: %v", err)
	default:
	}
	p.complete(t, h, export(t, h))
	if err := <-replied; err != nil {
		t.Fatal(err)
	}
	if got := p.newDev.peek(device.RegionBAR0, 0x30, 2); got[0] != 0xaa || got[1] != 0xbb {
		t.Fatalf("write not applied by the new server: %x", got)
	}
	if got := p.oldDev.peek(device.RegionBAR0, 0x30, 2); got[0] != 0 {
		t.Fatal("write applied by the old server too")
	}

	// Half a posted write read by the (new, now old) server, then a
	// takeover, then the other half.
	p.oldSrv, p.newSrv = p.newSrv, p.oldSrv
	p.oldDev, p.newDev = p.newDev, p.oldDev
	msg := make([]byte, HeaderSize+RegionRWSize+4)
	Header{MsgID: 500, Command: CmdRegionWrite, Flags: FlagNoReply, Size: uint32(len(msg))}.Encode(msg)
	RegionRW{Offset: 0x40, Region: device.RegionBAR0, Count: 4}.Encode(msg[HeaderSize:])
	copy(msg[HeaderSize+RegionRWSize:], "half")
	if _, err := unix.Write(p.clientFD, msg[:20]); err != nil {
		t.Fatal(err)
	}
	waitRead(t, p.oldSrv)
	h, err = p.oldSrv.Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	x := export(t, h)
	if len(x.Proto.Buffered) != 20 {
		t.Fatalf("%d bytes buffered, want the 20 sent", len(x.Proto.Buffered))
	}
	p.complete(t, h, x)
	if _, err := unix.Write(p.clientFD, msg[20:]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if err := p.cl.ReadRegion(device.RegionBAR0, 0x40, got); err != nil || string(got) != "half" {
		t.Fatalf("split write: %q %v", got, err)
	}
}

// TestHandoverDuringPostedWrites: a stream of posted writes, each to its
// own offset, handed over several times while it flows: every write is
// applied once, by one server, none lost.
func TestHandoverDuringPostedWrites(t *testing.T) {
	leakcheck.FDs(t)
	p := newTakeoverPair(t)
	if _, err := p.cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	// Each write puts its number at an offset of its own, so a write lost
	// or applied by both servers shows; the writer goes on until every
	// takeover is done and then some.
	const slots = 0xfff0 / 4 // below the fake's register that refuses writes
	var written atomic.Int64
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		var v [4]byte
		for i := 1; i < slots; i++ {
			select {
			case <-stop:
				return
			default:
			}
			binary.LittleEndian.PutUint32(v[:], uint32(i))
			if err := p.cl.WritePosted(device.RegionBAR0, uint64(i)*4, v[:]); err != nil {
				errc <- err
				return
			}
			written.Store(int64(i))
			// Paced, so the writes last across the takeovers.
			if i%32 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
		errc <- errors.New("the writer ran out of offsets before the takeovers were done")
	}()
	waitWritten := func(n int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d posted writes", n), func() bool { return written.Load() >= n })
	}
	devs := []*fakeDevice{p.oldDev, p.newDev}
	for i := 0; i < 6; i++ {
		waitWritten(written.Load() + 500)
		p.takeover(t)
		p.oldSrv, p.newSrv = p.newSrv, p.oldSrv
		p.oldDev, p.newDev = p.newDev, p.oldDev
	}
	waitWritten(written.Load() + 500)
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A read behind the writes: answered once they all are applied.
	if err := p.cl.ReadRegion(device.RegionBAR0, 0, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	n := int(written.Load())
	applied := make([]int, len(devs))
	for i := 1; i <= n; i++ {
		holders := 0
		for k, d := range devs {
			if binary.LittleEndian.Uint32(d.peek(device.RegionBAR0, uint64(i)*4, 4)) == uint32(i) {
				holders++
				applied[k]++
			}
		}
		if holders != 1 {
			t.Fatalf("write %d applied by %d servers, want 1", i, holders)
		}
	}
	if applied[0] == 0 || applied[1] == 0 {
		t.Fatalf("writes applied per server %v: the takeovers did not fall among the writes", applied)
	}
	t.Logf("%d posted writes across 6 takeovers, applied %v", n, applied)
}

// TestHandoverResume: a paused and exported connection that is not taken
// over goes on with the old server.
func TestHandoverResume(t *testing.T) {
	leakcheck.FDs(t)
	p := newTakeoverPair(t)
	if _, err := p.cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	h, err := p.oldSrv.Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	x, err := h.Export()
	if err != nil {
		t.Fatal(err)
	}
	// A successor that adopted and then failed discards its copies; the
	// socket stays up for the old server.
	c, err := p.newSrv.Adopt(dupAll(t, x, false))
	if err != nil {
		t.Fatal(err)
	}
	c.Discard()
	h.Resume()
	if err := p.cl.WriteRegion(device.RegionBAR0, 0x50, []byte{7}); err != nil {
		t.Fatal(err)
	}
	if got := p.oldDev.peek(device.RegionBAR0, 0x50, 1); got[0] != 7 {
		t.Fatal("old server did not resume")
	}
	// Pausing without a client has nothing to hand over.
	if h, err := NewServer(newFakeDevice(t), Options{}).Pause(context.Background()); h != nil || err != nil {
		t.Fatalf("idle server: %v %v", h, err)
	}
}

// TestAdoptRefusals: a handed-over connection meets the checks a client's
// own messages would, and nothing leaks when it is refused.
func TestAdoptRefusals(t *testing.T) {
	leakcheck.FDs(t)
	srv := newServer(t, newFakeDevice(t), Options{})
	mk := func() Adopted {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fds[1])
		return Adopted{FD: fds[0], Unmask: -1, Files: map[uint32]int{}}
	}
	notEventfd := func() int {
		fd, err := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	cases := map[string]func(a *Adopted){
		"xfer too big": func(a *Adopted) { a.Proto = handover.Proto{Negotiated: true, MaxXfer: 2 << 20} },
		"maps before version": func(a *Adopted) {
			a.Maps = []handover.Map{{IOVA: 0, Size: 4096, Flags: 3, File: -1}}
		},
		"irq not an eventfd": func(a *Adopted) {
			a.Proto.Negotiated, a.Proto.MaxXfer = true, 4096
			a.IRQs = []IRQFD{{Index: 2, Vector: 0, FD: notEventfd()}}
		},
		"irq vector outside": func(a *Adopted) {
			a.Proto.Negotiated, a.Proto.MaxXfer = true, 4096
			ev, _ := NewEventFD()
			a.IRQs = []IRQFD{{Index: 2, Vector: 8, FD: ev.fd}}
		},
		"map of a non-memory file": func(a *Adopted) {
			a.Proto.Negotiated, a.Proto.MaxXfer = true, 4096
			ev, _ := NewEventFD()
			a.Files[0] = ev.fd
			a.Maps = []handover.Map{{IOVA: 0, Size: 4096, Flags: 3, File: 0}}
		},
		"buffered fds beyond the bytes": func(a *Adopted) {
			a.Proto.Buffered = []byte("abc")
			a.Buffered = []BufferedFD{{Offset: 5, FD: notEventfd()}}
		},
	}
	for name, mutate := range cases {
		a := mk()
		mutate(&a)
		if _, err := srv.Adopt(a); err == nil {
			t.Errorf("%s: adopted", name)
		}
	}
	if srv.active != nil {
		t.Fatal("a refused adoption left a client")
	}
}

// TestListenerHandover: the listening socket passes to a successor, which
// accepts on the same path; the old one lets go without removing it.
func TestListenerHandover(t *testing.T) {
	leakcheck.FDs(t)
	path := t.TempDir() + "/vfu.sock"
	old, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	lfd, err := old.DupFD()
	if err != nil {
		t.Fatal(err)
	}
	if fl, err := unix.FcntlInt(uintptr(lfd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatal("duplicating the listener switched it to blocking mode")
	}
	dup, err := unix.FcntlInt(uintptr(lfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenerFromFD(dup, t.TempDir()+"/other.sock"); err == nil {
		t.Fatal("a listener bound elsewhere was taken")
	}
	ln, err := ListenerFromFD(lfd, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Detach(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the socket went with the old listener: %v", err)
	}
	c.Close()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("the successor's close left the socket file")
	}
	ev, _ := NewEventFD()
	if _, err := ListenerFromFD(ev.fd, ""); err == nil {
		t.Fatal("an eventfd was taken for a listener")
	}
}

// TestPreloadRefusesWhole: buffered descriptors beyond the reader's limits
// are refused before any is the reader's, so that the caller, which closes
// them on error, is the only one to; the handover format refuses the same.
func TestPreloadRefusesWhole(t *testing.T) {
	if handover.MaxBufferedFDSets != maxPendingFDSets || handover.MaxBufferedMsgFDs != maxRecvFDs {
		t.Fatal("the handover format's limits on buffered descriptors are not the reader's")
	}
	many := func(n int, offset func(i int) uint32) []BufferedFD {
		fds := make([]BufferedFD, n)
		for i := range fds {
			fds[i] = BufferedFD{Offset: offset(i), FD: 1000 + i}
		}
		return fds
	}
	for name, fds := range map[string][]BufferedFD{
		"too many for one message": many(maxRecvFDs+1, func(int) uint32 { return 0 }),
		"too many messages":        many(maxPendingFDSets+1, func(i int) uint32 { return uint32(i) }),
		"out of order":             many(3, func(i int) uint32 { return uint32(2 - i) }),
		"beyond the bytes":         many(2, func(i int) uint32 { return uint32(i * 100) }),
	} {
		rd := newReader(-1, 64, 1<<20)
		if err := rd.preload(make([]byte, 64), fds); err == nil {
			t.Fatalf("%s: preloaded", name)
		}
		if len(rd.pend) != 0 {
			t.Fatalf("%s: %d descriptor sets kept on error", name, len(rd.pend))
		}
	}
}

// TestPausedConnSendsNoDMA: a device goroutine's DMA message waits while
// the connection is paused for a handover (the successor may use the
// exported message ids, and reads the client's replies): sent after a
// resume, failed after a release, never sent during the pause.
func TestPausedConnSendsNoDMA(t *testing.T) {
	for _, release := range []bool{false, true} {
		p := newTakeoverPair(t)
		if _, err := p.cl.Negotiate(nil); err != nil {
			t.Fatal(err)
		}
		guest := make([]byte, 4096)
		if err := p.cl.MapMessage(0x40000, guest, DMAFlagRead|DMAFlagWrite); err != nil {
			t.Fatal(err)
		}
		g := p.oldDev.worker(t)
		h, err := p.oldSrv.Pause(context.Background())
		if err != nil || h == nil {
			t.Fatalf("pause: %v %v", h, err)
		}
		x, err := h.Export()
		if err != nil {
			t.Fatal(err)
		}
		p.oldSrv.mu.Lock()
		c := p.oldSrv.active
		p.oldSrv.mu.Unlock()
		dmaDone := make(chan error, 1)
		go func() { dmaDone <- g.Write(0x40000, []byte("zz")) }()
		time.Sleep(100 * time.Millisecond)
		if id := uint16(c.nextID.Load()); id != x.Proto.NextID {
			t.Fatalf("release %v: message id %d used during the pause, the successor's from %d", release, id, x.Proto.NextID)
		}
		select {
		case err := <-dmaDone:
			t.Fatalf("release %v: the DMA ended during the pause: %v", release, err)
		default:
		}
		if release {
			h.Release()
			select {
			case err := <-dmaDone:
				if err == nil {
					t.Fatal("a DMA after the release succeeded")
				}
			case <-time.After(2 * time.Second):
				t.Fatal("a DMA still waits after the release")
			}
			if id := uint16(c.nextID.Load()); id != x.Proto.NextID {
				t.Fatalf("message id %d used after the release", id)
			}
			continue
		}
		h.Resume()
		// The client serves the DMA message as it waits for its reply.
		if err := p.cl.WriteRegion(device.RegionBAR0, 0x50, []byte{7}); err != nil {
			t.Fatal(err)
		}
		if err := <-dmaDone; err != nil {
			t.Fatalf("the DMA after the resume: %v", err)
		}
	}
}

// Disabling INTx (the guest moved to MSI or MSI-X) drops its unmask
// eventfd, so a live upgrade does not pass the old one on.
func TestExportAfterINTxDisabledHasNoUnmask(t *testing.T) {
	p := newTakeoverPair(t)
	if _, err := p.cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	e, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	unmask := uint32(device.IRQDataEventFD) | uint32(device.IRQActionUnmask)
	if err := p.cl.SetIRQs(unmask, device.IRQINTx, 0, 1, nil, []int{e.FD()}); err != nil {
		t.Fatal(err)
	}
	for _, disable := range []bool{false, true} {
		if disable {
			if err := p.cl.SetIRQs(uint32(device.IRQDataNone)|uint32(device.IRQActionTrigger), device.IRQINTx, 0, 0, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		h, err := p.oldSrv.Pause(context.Background())
		if err != nil || h == nil {
			t.Fatalf("pause: %v %v", h, err)
		}
		x := export(t, h)
		if has := x.Unmask >= 0; has == disable {
			t.Errorf("INTx disabled %v: export carries an unmask eventfd: %v", disable, has)
		}
		h.Resume()
	}
}
