package vfiouser

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/internal/leakcheck"
)

// The real NIC behind the real dispatcher, with guest memory shared without
// fd (QEMU's RAM when not share=on): every DMA is a message. The client
// holds those messages while it waits for a reply, as QEMU does under its
// big lock, so a server that answers a register read only after a DMA
// completes would stall for the DMA timeout.

const (
	nmBase    = 0x10000000
	nmRing    = nmBase
	nmRingLen = 4096 // 256 descriptors
	nmTxRing  = nmBase + 0x8000
	nmTxBufs  = nmBase + 0x9000 // 64-byte frames
	nmBufs    = nmBase + 0x10000
	nmBufSize = 2048
	nmMemSize = 0x10000 + nmRingLen/16*nmBufSize

	nmRCTLUPE  = 0x00000008
	nmRCTLMPE  = 0x00000010
	nmRFCTLExt = 0x00008000
	nmStatDD   = 0x01
	nmTxdEOP   = 0x01000000
	nmTxdRS    = 0x08000000
)

// nmBackend records the frames the NIC sends.
type nmBackend struct {
	mu     sync.Mutex
	frames [][]byte
}

func (b *nmBackend) Send(f []byte) error {
	b.mu.Lock()
	b.frames = append(b.frames, bytes.Clone(f))
	b.mu.Unlock()
	return nil
}
func (b *nmBackend) Start(netdev.Receiver) error { return nil }
func (b *nmBackend) Close() error                { return nil }

func (b *nmBackend) sent() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.frames
}

// nmGuest is a client driving the NIC with message-only memory, served on
// a socket (s) until the client leaves.
type nmGuest struct {
	tb    testing.TB
	be    *nmBackend
	nic   *e1000e.NIC
	s     *abuseServer
	conn  *Conn
	cl    *Client
	leave func() // closes cl, once
	guest []byte // the client's memory, guarded by cl.memMu
	rdt   uint32
}

func newNMGuest(tb testing.TB, dmaTimeout time.Duration) *nmGuest {
	tb.Helper()
	be := &nmBackend{}
	nic, err := e1000e.New(e1000e.Config{Backend: be})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nic.Close() })
	s, cl, leave := serveNIC(tb, nic, Options{DMATimeout: dmaTimeout})
	g := &nmGuest{tb: tb, be: be, nic: nic, s: s, conn: s.conn(), cl: cl, leave: leave, guest: make([]byte, nmMemSize)}
	cl.HoldDMAWhileWaiting(true)
	if err := cl.MapMessage(nmBase, g.guest, DMAFlagRead|DMAFlagWrite); err != nil {
		tb.Fatal(err)
	}
	var cmd [2]byte
	if err := cl.ReadRegion(device.RegionConfig, 4, cmd[:]); err != nil {
		tb.Fatal(err)
	}
	binary.LittleEndian.PutUint16(cmd[:], binary.LittleEndian.Uint16(cmd[:])|0x6) // memory, bus master
	if err := cl.WriteRegion(device.RegionConfig, 4, cmd[:]); err != nil {
		tb.Fatal(err)
	}
	g.wr(e1000e.CTRL, e1000e.CTRL_RST|e1000e.CTRL_SLU)
	g.wr(e1000e.RDBAL0, nmRing)
	g.wr(e1000e.RDBAH0, 0)
	g.wr(e1000e.RDLEN0, nmRingLen)
	g.wr(e1000e.RDH0, 0)
	g.wr(e1000e.RDT0, 0)
	g.wr(e1000e.RFCTL, nmRFCTLExt)
	g.wr(e1000e.RCTL, e1000e.RCTL_EN|nmRCTLUPE|nmRCTLMPE)
	g.wr(e1000e.TDBAL0, nmTxRing)
	g.wr(e1000e.TDBAH0, 0)
	g.wr(e1000e.TDLEN0, nmRingLen)
	g.wr(e1000e.TDH0, 0)
	g.wr(e1000e.TDT0, 0)
	g.wr(e1000e.TCTL, e1000e.TCTL_EN)
	return g
}

func (g *nmGuest) rd(reg uint32) (uint32, error) {
	var b [4]byte
	err := g.cl.ReadRegion(device.RegionBAR0, uint64(reg), b[:])
	return binary.LittleEndian.Uint32(b[:]), err
}

func (g *nmGuest) wr(reg, v uint32) {
	g.tb.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := g.cl.WriteRegion(device.RegionBAR0, uint64(reg), b[:]); err != nil {
		g.tb.Fatalf("BAR0 write at %#x: %v", reg, err)
	}
}

// recycle gives the NIC back every buffer it has filled.
func (g *nmGuest) recycle() error {
	rdh, err := g.rd(e1000e.RDH0)
	if err != nil {
		return err
	}
	const size = nmRingLen / 16
	g.post(int((rdh + size - 1 - g.rdt) % size))
	return nil
}

// post gives the NIC n more receive buffers (extended descriptors).
func (g *nmGuest) post(n int) {
	g.cl.memMu.Lock()
	for i := 0; i < n; i++ {
		slot := g.rdt
		d := g.guest[slot*16 : slot*16+16]
		clear(d)
		binary.LittleEndian.PutUint64(d, nmBufs+uint64(slot)*nmBufSize)
		g.rdt = (g.rdt + 1) % (nmRingLen / 16)
	}
	g.cl.memMu.Unlock()
	g.wr(e1000e.RDT0, g.rdt)
}

// slot returns a copy of descriptor slot and of its buffer's first n bytes.
func (g *nmGuest) slot(slot uint32, n int) (desc, buf []byte) {
	g.cl.memMu.RLock()
	defer g.cl.memMu.RUnlock()
	off := 0x10000 + int(slot)*nmBufSize
	return bytes.Clone(g.guest[slot*16 : slot*16+16]), bytes.Clone(g.guest[off : off+n])
}

func nmFrame(seq int) []byte {
	f := make([]byte, 100)
	copy(f, []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0, 0, 0, 0, 0x99, 0x88, 0xb5})
	for i := 14; i < len(f); i++ {
		f[i] = byte(seq + i)
	}
	return f
}

// TestNICMessageDMAReceive: frames from the backend reach guest buffers
// through message DMA while register reads go on, and every read is
// answered without any DMA waiting out its timeout. When the client goes,
// the next one is served, and nothing is left open or running.
func TestNICMessageDMAReceive(t *testing.T) {
	leakcheck.Check(t)
	g := newNMGuest(t, 2*time.Second)
	const frames = 200
	g.post(frames + 1)

	// The backend's goroutine delivers the frames.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < frames; i++ {
			g.nic.Receive(nmFrame(i))
		}
	}()
	reads := 0
	deadline := time.Now().Add(60 * time.Second)
	for {
		rdh, err := g.rd(e1000e.RDH0)
		if err != nil {
			t.Fatalf("register read %d not answered: %v", reads, err)
		}
		reads++
		if rdh == frames {
			break
		}
		if n := g.conn.DMATimeouts(); n != 0 {
			t.Fatalf("%d DMA messages waited out their timeout (RDH %d after %d reads)", n, rdh, reads)
		}
		if time.Now().After(deadline) {
			t.Fatalf("RDH %d after %d reads, want %d", rdh, reads, frames)
		}
	}
	wg.Wait()
	for i := 0; i < frames; i++ {
		want := nmFrame(i)
		desc, buf := g.slot(uint32(i), len(want))
		if desc[8]&nmStatDD == 0 {
			t.Fatalf("descriptor %d: status %#x without DD", i, desc[8])
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("frame %d not in its buffer", i)
		}
	}
	if n := g.conn.DMATimeouts(); n != 0 {
		t.Fatalf("%d DMA messages waited out their timeout", n)
	}
	if reads < 2 {
		t.Logf("only %d register reads overlapped the traffic", reads)
	}
	g.leaveForNext(t)
}

// leaveForNext closes the client and has the next one served.
func (g *nmGuest) leaveForNext(t *testing.T) {
	t.Helper()
	g.leave()
	g.s.nextClient(t, device.RegionBAR0, e1000e.STATUS)
}

// BenchmarkNICRegReadDuringMessageDMA measures a register read's round
// trip while frames are received through message DMA. The client holds
// the DMA while it waits, so a read is never slowed by serving DMA, only
// by the server; the worst case is reported.
func BenchmarkNICRegReadDuringMessageDMA(b *testing.B) {
	g := newNMGuest(b, 5*time.Second)
	const batch = 128
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	// The backend: a batch of frames at a time, as long as buffers last.
	go func() {
		defer wg.Done()
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			g.nic.Receive(nmFrame(seq))
			if seq%batch == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var worst time.Duration
	for i := 0; b.Loop(); i++ {
		if i%batch == 0 {
			if err := g.recycle(); err != nil {
				b.Fatal(err)
			}
		}
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
	if n := g.conn.DMATimeouts(); n != 0 {
		b.Errorf("%d DMA timeouts", n)
	}
}

// TestNICMessageDMATransmit: a TDT write with message-only memory is
// answered at once, and the worker sends the packets (before, the
// doorbell's handler could not send DMA at all, and nothing went out).
// Then the next client is served, and nothing is left open or running.
func TestNICMessageDMATransmit(t *testing.T) {
	leakcheck.Check(t)
	g := newNMGuest(t, 2*time.Second)
	const frames = 50
	g.cl.memMu.Lock()
	for i := 0; i < frames; i++ {
		buf := nmTxBufs + uint64(i)*64
		copy(g.guest[buf-nmBase:], nmFrame(i)[:64])
		d := g.guest[nmTxRing-nmBase+i*16 : nmTxRing-nmBase+i*16+16]
		clear(d)
		binary.LittleEndian.PutUint64(d, buf)
		binary.LittleEndian.PutUint32(d[8:], 64|nmTxdEOP|nmTxdRS) // legacy descriptor
	}
	g.cl.memMu.Unlock()
	g.wr(e1000e.TDT0, frames)
	reads := 0
	deadline := time.Now().Add(60 * time.Second)
	for {
		tdh, err := g.rd(e1000e.TDH0)
		if err != nil {
			t.Fatalf("register read %d not answered: %v", reads, err)
		}
		reads++
		if tdh == frames {
			break
		}
		if n := g.conn.DMATimeouts(); n != 0 {
			t.Fatalf("%d DMA messages waited out their timeout", n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("TDH %d after %d reads, want %d", tdh, reads, frames)
		}
	}
	sent := g.be.sent()
	if len(sent) != frames {
		t.Fatalf("%d frames sent, want %d", len(sent), frames)
	}
	for i, f := range sent {
		if !bytes.Equal(f, nmFrame(i)[:64]) {
			t.Fatalf("frame %d differs", i)
		}
	}
	g.cl.memMu.RLock()
	st := g.guest[nmTxRing-nmBase+(frames-1)*16+12]
	g.cl.memMu.RUnlock()
	if st&nmStatDD == 0 {
		t.Fatal("last descriptor not written back")
	}
	g.leaveForNext(t)
}
