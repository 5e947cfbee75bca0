package main

import (
	"bytes"
	encbin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/vfiouser"
)

// watchdog is how long any one server process may live in a test: past it
// the process is killed, which also ends every client call waiting on it.
const watchdog = 90 * time.Second

// logBuf collects a process's stderr; Wait on the command finishes the copy.
type logBuf = panictest.Log

// proc is a running serve process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *logBuf
	done chan struct{}
	err  error // from Wait, valid once done is closed
}

// startServe runs serve with args until the test ends; the test fails if
// the server logged a recovered panic.
func startServe(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, log: &logBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"serve"}, args...)...)
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := time.AfterFunc(watchdog, func() { p.cmd.Process.Kill() })
	go func() {
		p.err = p.cmd.Wait()
		kill.Stop()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		panictest.CheckLog(t, "serve", p.log.String())
		if t.Failed() {
			t.Logf("server log:\n%s", p.log.String())
		}
	})
	return p
}

// waitLog waits until the log holds want, or fails after d.
func (p *proc) waitLog(want string, d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := p.log.String()
		if strings.Contains(s, want) {
			return s
		}
		select {
		case <-p.done:
			p.t.Fatalf("server exited (%v) before logging %q", p.err, want)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q in the log within %v", want, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countLog counts the occurrences of s in the log.
func (p *proc) countLog(s string) int { return strings.Count(p.log.String(), s) }

// signal sends sig and returns the exit status, failing after d.
func (p *proc) signal(sig os.Signal, d time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	return p.wait(d)
}

// wait returns the exit status, failing after d.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("server still running %v later", d)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0
}

// Guest memory layout of the tests: one memfd region at a non-zero base.
const (
	memBase   = 0x10000000
	memSize   = 1 << 20
	txRing    = memBase + 0x0000
	rxRing    = memBase + 0x1000
	ringBytes = 4096 // 256 descriptors, as QEMU's e1000e test uses
	txBuf     = memBase + 0x2000
	rxBuf     = memBase + 0x4000

	// IVAR as QEMU's test and Linux set it: RX queue 0 on vector 0, TX
	// queue 0 on vector 1, write back every descriptor.
	ivarQ0 = 0x80000908

	// Extended TX data descriptor command bits.
	txdEOP  = 0x01000000
	txdRS   = 0x08000000
	txdDEXT = 0x20000000
	txdDTYP = 0x00100000

	rctlUPE = 0x00000008 // unicast promiscuous
	rctlMPE = 0x00000010 // multicast promiscuous
	rfctlEX = 0x00008000 // extended RX descriptors
	statDD  = 0x01
	statEOP = 0x02

	pciCommand   = 0x04
	pciBusMaster = 0x04
	pciMemory    = 0x02
	pciCapPtr    = 0x34
	numVectors   = 5
)

// guest is one client with its memory and interrupt eventfds, driving the
// NIC the way QEMU and the e1000e driver do, through the protocol.
type guest struct {
	t    *testing.T
	c    *vfiouser.Client
	mem  *vfiouser.Memory
	efds []*vfiouser.EventFD
	txN  uint32 // descriptors pushed to the TX ring
	rxN  uint32 // descriptors posted to the RX ring
}

// connect dials the server and negotiates. The previous client's teardown
// runs on the server's own goroutine, so a refusal right after it left is
// retried until the deadline.
func connect(t *testing.T, sock string, d time.Duration) *guest {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := vfiouser.Dial(sock)
		if err == nil {
			if _, err = c.Negotiate(nil); err == nil {
				g := &guest{t: t, c: c}
				t.Cleanup(g.close)
				return g
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("connecting to %s: %v", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *guest) close() {
	if g.c != nil {
		g.c.Close()
		g.c = nil
	}
	if g.mem != nil {
		g.mem.Close()
		g.mem = nil
	}
	for _, e := range g.efds {
		e.Close()
	}
	g.efds = nil
}

func (g *guest) cfgRead(off uint64, n int) uint32 {
	g.t.Helper()
	b := make([]byte, 4)
	if err := g.c.ReadRegion(device.RegionConfig, off, b[:n]); err != nil {
		g.t.Fatalf("config read at %#x: %v", off, err)
	}
	return encbin.LittleEndian.Uint32(b)
}

func (g *guest) cfgWrite(off uint64, n int, v uint32) {
	g.t.Helper()
	b := make([]byte, 4)
	encbin.LittleEndian.PutUint32(b, v)
	if err := g.c.WriteRegion(device.RegionConfig, off, b[:n]); err != nil {
		g.t.Fatalf("config write at %#x: %v", off, err)
	}
}

func (g *guest) rd(reg uint32) uint32 {
	g.t.Helper()
	var b [4]byte
	if err := g.c.ReadRegion(device.RegionBAR0, uint64(reg), b[:]); err != nil {
		g.t.Fatalf("BAR0 read at %#x: %v", reg, err)
	}
	return encbin.LittleEndian.Uint32(b[:])
}

func (g *guest) wr(reg, v uint32) {
	g.t.Helper()
	var b [4]byte
	encbin.LittleEndian.PutUint32(b[:], v)
	if err := g.c.WriteRegion(device.RegionBAR0, uint64(reg), b[:]); err != nil {
		g.t.Fatalf("BAR0 write at %#x: %v", reg, err)
	}
}

// findCap walks the capability list for id, bounded by the list's size.
func (g *guest) findCap(id uint32) uint64 {
	g.t.Helper()
	off := uint64(g.cfgRead(pciCapPtr, 1) &^ 3)
	for i := 0; i < 48 && off != 0; i++ {
		if g.cfgRead(off, 1) == id {
			return off
		}
		off = uint64(g.cfgRead(off+1, 1) &^ 3)
	}
	g.t.Fatalf("no capability %#x", id)
	return 0
}

// checkIdentity checks what QEMU reads first: the device info, the region
// sizes and the PCI ids.
func (g *guest) checkIdentity() {
	g.t.Helper()
	info, err := g.c.GetInfo()
	if err != nil {
		g.t.Fatal(err)
	}
	if info.NumRegions <= device.RegionConfig || info.NumIRQs < device.IRQMSIX+1 {
		g.t.Fatalf("device info %+v: too few regions or IRQ indexes", info)
	}
	ri, _, f, err := g.c.RegionInfo(device.RegionConfig)
	if f != nil {
		f.Close()
	}
	if err != nil || ri.Size < 256 {
		g.t.Fatalf("config region %+v: %v", ri, err)
	}
	ri, _, f, err = g.c.RegionInfo(device.RegionBAR0)
	if f != nil {
		f.Close()
	}
	if err != nil || ri.Size != 128<<10 {
		g.t.Fatalf("BAR0 region %+v, want 128 KiB: %v", ri, err)
	}
	if v, d := g.cfgRead(0, 2), g.cfgRead(2, 2); v != 0x8086 || d != 0x10d3 {
		g.t.Fatalf("PCI ids %04x:%04x, want 8086:10d3", v, d)
	}
}

// setup resets the device, shares fresh memory, enables bus mastering and
// MSI-X with one eventfd per vector, and programs the rings as QEMU's
// e1000e test does.
func (g *guest) setup() {
	g.t.Helper()
	if err := g.c.Reset(); err != nil {
		g.t.Fatal(err)
	}
	g.mapMemory()
	g.enablePCI()
	g.program()
}

// mapMemory shares fresh guest memory with the device.
func (g *guest) mapMemory() {
	g.t.Helper()
	mem, err := vfiouser.NewMemory(memSize)
	if err != nil {
		g.t.Fatal(err)
	}
	g.mem = mem
	if err := g.c.Map(memBase, mem, 0, memSize, vfiouser.DMAFlagRead|vfiouser.DMAFlagWrite); err != nil {
		g.t.Fatal(err)
	}
}

// enablePCI sets Bus Master and MSI-X with one eventfd per vector, as
// QEMU does when the guest enables them (or restores them after a
// migration).
func (g *guest) enablePCI() {
	g.t.Helper()
	g.cfgWrite(pciCommand, 2, g.cfgRead(pciCommand, 2)|pciMemory|pciBusMaster)
	for range numVectors {
		e, err := vfiouser.NewEventFD()
		if err != nil {
			g.t.Fatal(err)
		}
		g.efds = append(g.efds, e)
	}
	if err := g.c.SetIRQEventFDs(device.IRQMSIX, 0, g.efds); err != nil {
		g.t.Fatal(err)
	}
	g.cfgWrite(g.findCap(device.CapIDMSIX)+2, 2, 0x8000) // MSI-X enable
}

// program sets the NIC up as QEMU's e1000e test does.
func (g *guest) program() {
	g.t.Helper()
	g.wr(e1000e.CTRL, e1000e.CTRL_RST|e1000e.CTRL_SLU)
	g.wr(e1000e.IVAR, ivarQ0)
	g.wr(e1000e.CTRL_EXT, e1000e.CTRL_EXT_DRV_LOAD)
	g.wr(e1000e.TDBAL0, txRing)
	g.wr(e1000e.TDBAH0, 0)
	g.wr(e1000e.TDLEN0, ringBytes)
	g.wr(e1000e.TDH0, 0)
	g.wr(e1000e.TDT0, 0)
	g.wr(e1000e.TCTL, e1000e.TCTL_EN)
	g.wr(e1000e.RDBAL0, rxRing)
	g.wr(e1000e.RDBAH0, 0)
	g.wr(e1000e.RDLEN0, ringBytes)
	g.wr(e1000e.RDH0, 0)
	g.wr(e1000e.RDT0, 0)
	g.wr(e1000e.RFCTL, rfctlEX)
	g.wr(e1000e.RCTL, e1000e.RCTL_EN|rctlUPE|rctlMPE)
	g.wr(e1000e.IMS, 0xFFFFFFFF)
	// Auto-clear the queue causes on delivery, as Linux does, so every
	// write-back raises a new message.
	g.wr(e1000e.EIAC, e1000e.ICR_RXQ0|e1000e.ICR_TXQ0)
	g.txN, g.rxN = 0, 0
}

// at returns guest memory at a guest address; the memfd is shared, so
// this is what the device wrote.
func (g *guest) at(addr uint64, n int) []byte {
	off := addr - memBase
	return g.mem.Data[off : off+uint64(n)]
}

// transmit queues one frame with RS|EOP in an extended data descriptor and
// checks the TX vector fires and the descriptor is written back done.
func (g *guest) transmit(frame []byte) {
	g.t.Helper()
	slot := g.txN % (ringBytes / 16)
	copy(g.at(txBuf, len(frame)), frame)
	d := g.at(txRing+uint64(slot)*16, 16)
	clear(d)
	encbin.LittleEndian.PutUint64(d, txBuf)
	encbin.LittleEndian.PutUint32(d[8:], uint32(len(frame))|txdDTYP|txdDEXT|txdRS|txdEOP)
	g.txN++
	g.wr(e1000e.TDT0, g.txN%(ringBytes/16))
	if n, err := g.efds[1].Wait(5 * time.Second); err != nil || n == 0 {
		g.t.Fatalf("TX vector 1: %d, %v", n, err)
	}
	if st := d[12]; st&statDD == 0 {
		g.t.Fatalf("TX descriptor status %#x without DD", st)
	}
}

// postRX gives the NIC one receive buffer in an extended descriptor.
func (g *guest) postRX() (desc []byte, buf uint64) {
	slot := g.rxN % (ringBytes / 16)
	buf = rxBuf + uint64(slot)*2048
	desc = g.at(rxRing+uint64(slot)*16, 16)
	clear(desc)
	encbin.LittleEndian.PutUint64(desc, buf)
	g.rxN++
	g.wr(e1000e.RDT0, g.rxN%(ringBytes/16))
	return desc, buf
}

// waitRX waits for the RX vector and checks the descriptor holds frame
// (plus the FCS, which RCTL.SECRC clear keeps).
func (g *guest) waitRX(desc []byte, buf uint64, frame []byte) {
	g.t.Helper()
	// As a driver does, take a message as a reason to look at the ring,
	// not as proof of a frame: after a migration the NIC repeats the
	// messages the guest had not handled yet.
	deadline := time.Now().Add(5 * time.Second)
	var st uint32
	for {
		if n, err := g.efds[0].Wait(time.Until(deadline)); err != nil || n == 0 {
			g.t.Fatalf("RX vector 0: %d, %v (status %#x)", n, err, st)
		}
		if st = encbin.LittleEndian.Uint32(desc[8:]); st&statDD != 0 {
			break
		}
	}
	if st&(statDD|statEOP) != statDD|statEOP {
		g.t.Fatalf("RX status %#x, want DD|EOP", st)
	}
	if l := int(encbin.LittleEndian.Uint16(desc[12:])); l != len(frame)+4 {
		g.t.Fatalf("RX length %d, want %d (frame and FCS)", l, len(frame)+4)
	}
	if got := g.at(buf, len(frame)); !bytes.Equal(got, frame) {
		g.t.Fatalf("RX buffer %x, want %x", got, frame)
	}
}

// testFrame is a 64-byte frame to mac from a locally administered address.
func testFrame(dst net.HardwareAddr, seq byte) []byte {
	f := make([]byte, 64)
	copy(f, dst)
	copy(f[6:], []byte{0x02, 0, 0, 0, 0, 0x99})
	f[12], f[13] = 0x88, 0xb5 // local experimental EtherType
	for i := 14; i < len(f); i++ {
		f[i] = seq + byte(i)
	}
	return f
}

// readStreamFrame reads one frame of QEMU's stream protocol: a 4-byte
// big-endian length, then the frame.
func readStreamFrame(c net.Conn, d time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	n := encbin.BigEndian.Uint32(hdr[:])
	if n > 65536 {
		return nil, fmt.Errorf("stream frame length %d", n)
	}
	f := make([]byte, n)
	_, err := io.ReadFull(c, f)
	return f, err
}

func writeStreamFrame(c net.Conn, f []byte) error {
	b := encbin.BigEndian.AppendUint32(nil, uint32(len(f)))
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write(append(b, f...))
	return err
}

// gone checks that nothing is left at path.
func gone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (%v)", path, err)
	}
}
