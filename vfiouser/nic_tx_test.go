package vfiouser

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/internal/leakcheck"
)

// A hostile transmit ring through the real socket: TSO packets of 64 KiB
// at MSS 1, which once made a single TDT write hold the NIC for seconds.
// The write does one budget of work on the connection's goroutine and the
// NIC's worker the rest, register reads are answered while it goes on,
// and everything is sent.

const (
	htBase    = 0x20000000
	htMemSize = 1 << 20
	htRing    = htBase
	htRingLen = 8192 // 512 descriptors
	htBuf     = htBase + 0x10000
	htPayload = 65000

	htTxdEOP    = 0x01000000
	htTxdIFCS   = 0x02000000
	htTxdRS     = 0x08000000
	htTxdDEXT   = 0x20000000
	htTxdTSE    = 0x04000000
	htTxdDTYPD  = 0x00100000
	htTxdDTYPC  = 0x00000000
	htTxdCmdIP  = 0x02000000
	htTxdCmdTCP = 0x01000000
	htPoptsIXSM = 0x01
	htPoptsTXSM = 0x02
)

// htBackend counts frames, and notes which goroutine sends those it
// probes: the connection's (under a message handler) or another.
type htBackend struct {
	mu     sync.Mutex
	frames int
	probes map[int]bool // frame number (from 1) -> sent on the connection's goroutine
}

func (b *htBackend) Send([]byte) error {
	b.mu.Lock()
	b.frames++
	if _, ok := b.probes[b.frames]; ok {
		b.probes[b.frames] = onConnGoroutine()
	}
	b.mu.Unlock()
	return nil
}
func (b *htBackend) Start(netdev.Receiver) error { return nil }
func (b *htBackend) Close() error                { return nil }

func (b *htBackend) sent() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.frames
}

// probe has the backend note who sends frames ns (counted from the
// backend's first).
func (b *htBackend) probe(ns ...int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probes = map[int]bool{}
	for _, n := range ns {
		b.probes[n] = false
	}
}

// sentOnConn reports whether probed frame n was sent on the connection's
// goroutine (false if it was not sent yet).
func (b *htBackend) sentOnConn(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.probes[n]
}

// onConnGoroutine reports whether the caller runs under a Conn's message
// handling: the goroutine that must answer the client's next request.
func onConnGoroutine() bool {
	buf := make([]byte, 64<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("vfiouser.(*Conn)."))
}

type htGuest struct {
	tb    testing.TB
	nic   *e1000e.NIC
	be    *htBackend
	s     *abuseServer
	cl    *Client
	leave func() // closes cl, once
	mem   *Memory
}

func newHTGuest(tb testing.TB) *htGuest {
	tb.Helper()
	be := &htBackend{}
	nic, err := e1000e.New(e1000e.Config{Backend: be})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nic.Close() })
	mem, err := NewMemory(htMemSize)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	s, cl, leave := serveNIC(tb, nic, Options{})
	g := &htGuest{tb: tb, nic: nic, be: be, s: s, cl: cl, leave: leave, mem: mem}
	if err := cl.Map(htBase, mem, 0, htMemSize, DMAFlagRead|DMAFlagWrite); err != nil {
		tb.Fatal(err)
	}
	var cmd [2]byte
	if err := cl.ReadRegion(device.RegionConfig, 4, cmd[:]); err != nil {
		tb.Fatal(err)
	}
	binary.LittleEndian.PutUint16(cmd[:], binary.LittleEndian.Uint16(cmd[:])|0x6)
	if err := cl.WriteRegion(device.RegionConfig, 4, cmd[:]); err != nil {
		tb.Fatal(err)
	}
	g.wr(e1000e.CTRL, e1000e.CTRL_RST|e1000e.CTRL_SLU)
	g.wr(e1000e.TDBAL0, htRing)
	g.wr(e1000e.TDBAH0, 0)
	g.wr(e1000e.TDLEN0, htRingLen)
	g.wr(e1000e.TDH0, 0)
	g.wr(e1000e.TDT0, 0)
	g.wr(e1000e.TCTL, e1000e.TCTL_EN)
	return g
}

// serveNIC serves nic on a socket and connects a negotiated client; leave
// closes that client (once; also at cleanup).
func serveNIC(tb testing.TB, nic *e1000e.NIC, opts Options) (*abuseServer, *Client, func()) {
	tb.Helper()
	s := serveAbuse(tb, nic, opts)
	cl := s.dial(tb)
	leave := sync.OnceFunc(func() { cl.Close() })
	tb.Cleanup(leave)
	return s, cl, leave
}

func (g *htGuest) wr(reg, v uint32) {
	g.tb.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := g.cl.WriteRegion(device.RegionBAR0, uint64(reg), b[:]); err != nil {
		g.tb.Fatalf("BAR0 write at %#x: %v", reg, err)
	}
}

func (g *htGuest) rd(reg uint32) (uint32, error) {
	var b [4]byte
	err := g.cl.ReadRegion(device.RegionBAR0, uint64(reg), b[:])
	return binary.LittleEndian.Uint32(b[:]), err
}

// fill writes pkts TSO packets (a context and a data descriptor each) of
// an IPv4/TCP frame with htPayload bytes at MSS 1, and returns the
// descriptors used.
func (g *htGuest) fill(pkts int) uint32 {
	frame := make([]byte, 54+htPayload)
	copy(frame, []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	ip := frame[14:34]
	ip[0] = 0x45
	ip[8] = 64
	ip[9] = 6 // TCP
	tcp := frame[34:54]
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	copy(g.mem.Data[htBuf-htBase:], frame)
	ctx := make([]byte, 16)
	ctx[0], ctx[1] = 14, 24 // IPCSS, IPCSO
	binary.LittleEndian.PutUint16(ctx[2:], 33)
	ctx[4], ctx[5] = 34, 50 // TUCSS, TUCSO
	binary.LittleEndian.PutUint32(ctx[8:], htTxdDEXT|htTxdDTYPC|htTxdTSE|htTxdCmdIP|htTxdCmdTCP|htPayload)
	ctx[13] = 54                               // HDRLEN
	binary.LittleEndian.PutUint16(ctx[14:], 1) // MSS
	data := make([]byte, 16)
	binary.LittleEndian.PutUint64(data, htBuf)
	binary.LittleEndian.PutUint32(data[8:], htTxdDEXT|htTxdDTYPD|htTxdTSE|htTxdEOP|htTxdRS|htTxdIFCS|uint32(len(frame)))
	data[13] = htPoptsIXSM | htPoptsTXSM
	for p := 0; p < pkts; p++ {
		copy(g.mem.Data[htRing-htBase+2*p*16:], ctx)
		copy(g.mem.Data[htRing-htBase+(2*p+1)*16:], data)
	}
	return uint32(2 * pkts)
}

// The doorbell's handler sends the ring's first packet itself, on the
// connection's goroutine, and stops at its budget (checked between
// packets): the second packet's first frame is sent by the NIC's worker.
// Without the budget the handler would send all of the ring's frames
// before the client's next request is read. When the client goes, the
// next one is served, and nothing is left open or running.
func TestNICHostileTXRing(t *testing.T) {
	leakcheck.Check(t)
	g := newHTGuest(t)
	const pkts = 200
	descs := g.fill(pkts)
	segs := (htPayload + 63) / 64 // MSS 1 is taken as 64
	g.be.probe(1, segs+1)
	g.wr(e1000e.TDT0, descs)
	reads := 0
	deadline := time.Now().Add(120 * time.Second)
	for {
		tdh, err := g.rd(e1000e.TDH0)
		if err != nil {
			t.Fatalf("register read %d not answered: %v", reads, err)
		}
		reads++
		if tdh == descs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TDH %d after %d reads, want %d", tdh, reads, descs)
		}
	}
	if f := g.be.sent(); f != pkts*segs {
		t.Fatalf("%d frames sent, want %d", f, pkts*segs)
	}
	if !g.be.sentOnConn(1) {
		t.Fatal("the first frame was not sent on the connection's goroutine: the doorbell did no work itself, or the probe does not see that goroutine")
	}
	if g.be.sentOnConn(segs + 1) {
		t.Fatalf("frame %d (the second packet's first) was sent on the connection's goroutine: the doorbell went past its budget", segs+1)
	}
	// The NIC is still the guest's: a plain frame goes out after it.
	copy(g.mem.Data[htBuf-htBase:], make([]byte, 64))
	d := g.mem.Data[htRing-htBase+int(descs)*16:]
	clear(d[:16])
	binary.LittleEndian.PutUint64(d, htBuf)
	binary.LittleEndian.PutUint32(d[8:], htTxdEOP|htTxdRS|64)
	before := g.be.sent()
	g.wr(e1000e.TDT0, descs+1)
	if f := g.be.sent(); f != before+1 {
		t.Fatalf("%d frames for the plain packet, want 1", f-before)
	}
	g.leave()
	g.s.nextClient(t, device.RegionBAR0, e1000e.STATUS)
}

// BenchmarkNICRegReadDuringHostileTX measures a register read's round
// trip through the socket while the NIC works through hostile rings (the
// rings are re-armed directly, not through the socket).
func BenchmarkNICRegReadDuringHostileTX(b *testing.B) {
	g := newHTGuest(b)
	descs := g.fill(200)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if g.nic.ReadReg(e1000e.TDH0) == g.nic.ReadReg(e1000e.TDT0) {
				g.nic.WriteReg(e1000e.TDH0, 0)
				g.nic.WriteReg(e1000e.TDT0, descs)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var worst time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := g.rd(e1000e.STATUS); err != nil {
			b.Fatal(err)
		}
		if d := time.Since(t0); d > worst {
			worst = d
		}
	}
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(worst.Microseconds()), "worst-µs")
	b.ReportMetric(float64(g.be.sent())/float64(b.N), "frames/read")
}
