package driver_test

import (
	"encoding/binary"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/device/announce"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/migration/driver"
	"e1000e-vfu/vfiouser"
)

// A side is one VMM with its NIC: an in-process vfio-user server over a
// socketpair, memfd guest memory mapped for the device, and a netdev pair
// whose far end collects the frames the NIC sends.
type side struct {
	nic  *e1000e.NIC
	dev  *e1000e.Migratable
	conn *vfiouser.Conn
	cl   *vfiouser.Client
	mem  *vfiouser.Memory
	peer *netdev.PairEnd
	sent *collector
}

const (
	guestIOVA = 0x100000
	guestSize = 1 << 20
)

// collector receives the frames the NIC transmits, and apart from them
// the RARP frames a destination announces itself with after migration.
type collector struct {
	mu     sync.Mutex
	frames [][]byte
	rarps  [][]byte
}

func (c *collector) Receive(f []byte) {
	c.mu.Lock()
	if len(f) >= 14 && binary.BigEndian.Uint16(f[12:]) == announce.EtherTypeRARP {
		c.rarps = append(c.rarps, append([]byte(nil), f...))
	} else {
		c.frames = append(c.frames, append([]byte(nil), f...))
	}
	c.mu.Unlock()
}

func (c *collector) announced() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.rarps...)
}

func (c *collector) all() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newSide(t testing.TB, opts e1000e.MigrationOptions) *side {
	t.Helper()
	return newSideFilters(t, opts, -1)
}

// newSideFilters builds a side whose NIC has rx-filter-size filters (0:
// started as version 1).
func newSideFilters(t testing.TB, opts e1000e.MigrationOptions, filters int) *side {
	t.Helper()
	a, b := netdev.NewPair()
	nic, err := e1000e.New(e1000e.Config{Backend: a, RXFilterSize: filters, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	dev, err := e1000e.NewMigratable(nic, opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &side{nic: nic, dev: dev, peer: b, sent: &collector{}}
	if err := a.Start(nic); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(s.sent); err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := vfiouser.NewServer(dev, vfiouser.Options{Logger: quiet})
	panictest.Check(t, "vfio-user server", srv) // after the cleanup below
	s.conn, err = srv.NewConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { s.conn.Serve(); close(served) }()
	s.cl = vfiouser.NewClient(fds[1])
	if _, err := s.cl.Negotiate(vfiouser.DefaultCapabilities()); err != nil {
		t.Fatal(err)
	}
	s.mem, err = vfiouser.NewMemory(guestSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cl.Map(guestIOVA, s.mem, 0, guestSize, vfiouser.DMAFlagRead|vfiouser.DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cl.Close()
		s.conn.Close()
		select {
		case <-served:
		case <-time.After(20 * time.Second):
			t.Error("the connection still serves 20 s after Close")
		}
		a.Close()
		b.Close()
		dev.Close()
		s.mem.Close()
	})
	return s
}

func (s *side) endpoint() driver.Endpoint {
	return driver.Endpoint{Client: s.cl, Mem: s.mem.Data, IOVA: guestIOVA}
}

// guest is a minimal e1000e driver working through one side's client and
// memory at a time, with legacy descriptors: a 64-entry TX ring and a
// 64-entry RX ring of 2 KiB buffers.
type guest struct {
	t      testing.TB
	s      *side
	rxNext uint32 // next RX descriptor to look at
	txTail uint32
	got    [][]byte
}

const (
	ringN    = 64
	txRing   = guestIOVA + 0x0000
	rxRing   = guestIOVA + 0x1000
	rxBufs   = guestIOVA + 0x10000 // ringN × 2 KiB
	txBufs   = guestIOVA + 0x50000 // ringN × 2 KiB
	bufSize  = 2048
	cmdEOP   = 0x01
	cmdIFCS  = 0x02
	cmdRS    = 0x08
	statDD   = 0x01
	rctlEN   = 0x2
	rctlUPE  = 0x8
	rctlBAM  = 0x8000
	rctlSEC  = 0x04000000
	tctlEN   = 0x2
	tctlPSP  = 0x8
	cmdBusMM = 0x6 // memory space and bus master
)

func (g *guest) mem(addr uint64) []byte { return g.s.mem.Data[addr-guestIOVA:] }

func (g *guest) wr(off uint32, v uint32) {
	g.t.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := g.s.cl.WriteRegion(device.RegionBAR0, uint64(off), b[:]); err != nil {
		g.t.Fatalf("register %#x: %v", off, err)
	}
}

func (g *guest) rd(off uint32) uint32 {
	g.t.Helper()
	var b [4]byte
	if err := g.s.cl.ReadRegion(device.RegionBAR0, uint64(off), b[:]); err != nil {
		g.t.Fatalf("register %#x: %v", off, err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (g *guest) init() {
	g.t.Helper()
	if err := g.s.cl.WriteRegion(device.RegionConfig, device.CfgCommand, []byte{cmdBusMM, 0}); err != nil {
		g.t.Fatal(err)
	}
	for i := uint64(0); i < ringN; i++ {
		d := g.mem(rxRing + 16*i)
		clear(d[:16])
		binary.LittleEndian.PutUint64(d, rxBufs+bufSize*i)
	}
	g.wr(e1000e.RDBAL0, rxRing)
	g.wr(e1000e.RDBAH0, 0)
	g.wr(e1000e.RDLEN0, ringN*16)
	g.wr(e1000e.RDH0, 0)
	g.wr(e1000e.RDT0, ringN-1)
	g.wr(e1000e.TDBAL0, txRing)
	g.wr(e1000e.TDBAH0, 0)
	g.wr(e1000e.TDLEN0, ringN*16)
	g.wr(e1000e.TDH0, 0)
	g.wr(e1000e.TDT0, 0)
	g.wr(e1000e.RCTL, rctlEN|rctlUPE|rctlBAM|rctlSEC)
	g.wr(e1000e.TCTL, tctlEN|tctlPSP)
}

// poll takes the frames the NIC wrote and gives their descriptors back.
func (g *guest) poll() int {
	n := 0
	for k := 0; k < ringN; k++ {
		d := g.mem(rxRing + 16*uint64(g.rxNext))
		if d[12]&statDD == 0 {
			break
		}
		l := binary.LittleEndian.Uint16(d[8:])
		buf := binary.LittleEndian.Uint64(d)
		g.got = append(g.got, append([]byte(nil), g.mem(buf)[:l]...))
		d[12] = 0
		g.wr(e1000e.RDT0, g.rxNext)
		g.rxNext = (g.rxNext + 1) % ringN
		n++
	}
	return n
}

// putTX writes one TX descriptor with data at the next tail slot, without
// bumping TDT.
func (g *guest) putTX(data []byte, cmd byte) {
	i := uint64(g.txTail)
	buf := txBufs + bufSize*i
	copy(g.mem(buf), data)
	d := g.mem(txRing + 16*i)
	clear(d[:16])
	binary.LittleEndian.PutUint64(d, buf)
	binary.LittleEndian.PutUint16(d[8:], uint16(len(data)))
	d[11] = cmd
	g.txTail = (g.txTail + 1) % ringN
}

func (g *guest) send(frame []byte) {
	g.putTX(frame, cmdEOP|cmdIFCS|cmdRS)
	g.wr(e1000e.TDT0, g.txTail)
}

// frame builds a sequence-numbered frame whose payload is derived from its
// number, so corruption shows.
func frame(dst []byte, seq uint32, size int) []byte {
	f := make([]byte, size)
	copy(f, dst)
	copy(f[6:], []byte{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc})
	binary.BigEndian.PutUint16(f[12:], 0x88b5) // local experimental ethertype
	binary.BigEndian.PutUint32(f[14:], seq)
	for i := 18; i < size; i++ {
		f[i] = byte(seq*7 + uint32(i))
	}
	return f
}

// checkSeq checks that frames carry sequence numbers 0..want-1 once each,
// in order, intact.
func checkSeq(t testing.TB, what string, frames [][]byte, want int, size int) {
	t.Helper()
	if len(frames) != want {
		t.Errorf("%s: %d frames, want %d", what, len(frames), want)
	}
	for i, f := range frames {
		if len(f) < 18 {
			t.Errorf("%s: frame %d is %d bytes", what, i, len(f))
			continue
		}
		seq := binary.BigEndian.Uint32(f[14:])
		if int(seq) != i {
			t.Errorf("%s: frame %d carries sequence %d", what, i, seq)
			return
		}
		exp := frame(f[:6], seq, size)
		if string(f[:size]) != string(exp) {
			t.Errorf("%s: frame %d corrupted", what, i)
			return
		}
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// logBuf collects a server's log lines.
type logBuf = panictest.Log
