package e1000e

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/device/netdev"
)

// The datapath tests drive a NIC as a guest driver would: registers through
// WriteReg, descriptors and buffers in an in-memory guest RAM, frames
// through a recording backend and interrupts through a recording
// interrupter.

// Guest memory layout of the test rig.
const (
	dpMemSize   = 4 << 20
	dpTxRing    = 0x10000
	dpRxRing    = 0x20000
	dpRingBytes = 4096 // QEMU's test uses 4 KiB rings
	dpTxBuf     = 0x100000
	dpRxBuf     = 0x200000
	dpRxBufStep = 0x4000 // one 16 KiB buffer per RX descriptor slot

	dpIVAR = 0x80000908 // RX queue 0 on vector 0, TX queue 0 on vector 1, write back every descriptor
)

var errUnmapped = errors.New("address not mapped")

// dpMem is guest RAM from address 0 to len(b); anything else is unmapped.
type dpMem struct {
	mu sync.Mutex
	b  []byte
}

func (m *dpMem) span(addr uint64, n int) ([]byte, error) {
	if addr > uint64(len(m.b)) || uint64(n) > uint64(len(m.b))-addr {
		return nil, errUnmapped
	}
	return m.b[addr : addr+uint64(n)], nil
}

func (m *dpMem) Read(addr uint64, p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.span(addr, len(p))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

func (m *dpMem) Write(addr uint64, p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.span(addr, len(p))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

func (m *dpMem) put(addr uint64, p []byte) {
	if err := m.Write(addr, p); err != nil {
		panic(err) // test setup bug
	}
}

func (m *dpMem) get(addr uint64, n int) []byte {
	p := make([]byte, n)
	if err := m.Read(addr, p); err != nil {
		panic(err)
	}
	return p
}

// dpBackend records sent frames; with count set it only counts them (for
// benchmarks that must not allocate).
type dpBackend struct {
	mu     sync.Mutex
	count  bool
	n      int
	bytes  int
	frames [][]byte
}

func (b *dpBackend) Send(frame []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	b.bytes += len(frame)
	if !b.count {
		b.frames = append(b.frames, append([]byte(nil), frame...))
	}
	return nil
}
func (b *dpBackend) Start(netdev.Receiver) error { return nil }
func (b *dpBackend) Close() error                { return nil }

func (b *dpBackend) take() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.frames
	b.frames = nil
	return f
}

// dpIRQ records interrupt deliveries.
type dpIRQ struct {
	mu   sync.Mutex
	mode device.IRQMode
	msix [numMSIXVecs]int
	msi  int
	intx bool
}

func (f *dpIRQ) Mode() device.IRQMode { f.mu.Lock(); defer f.mu.Unlock(); return f.mode }
func (f *dpIRQ) MSIX(v int)           { f.mu.Lock(); f.msix[v]++; f.mu.Unlock() }
func (f *dpIRQ) MSI()                 { f.mu.Lock(); f.msi++; f.mu.Unlock() }
func (f *dpIRQ) SetINTx(l bool) {
	f.mu.Lock()
	f.intx = l
	f.mu.Unlock()
}
func (f *dpIRQ) ClearMSIXPending(int) {}

func (f *dpIRQ) vec(v int) int { f.mu.Lock(); defer f.mu.Unlock(); return f.msix[v] }

// dpRig is a NIC set up the way QEMU's e1000e test sets it up.
type dpRig struct {
	t              testing.TB
	n              *NIC
	mem            *dpMem
	be             *dpBackend
	irq            *dpIRQ
	txTail, rxTail uint32
}

func newRig(t testing.TB, mode device.IRQMode, cfg Config) *dpRig {
	t.Helper()
	r := &dpRig{t: t, mem: &dpMem{b: make([]byte, dpMemSize)}, be: &dpBackend{}, irq: &dpIRQ{mode: mode}}
	cfg.Backend = r.be
	cfg.Interrupter = r.irq
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	r.n = n
	r.connect()
	// The procedure of QEMU's libqos e1000e driver.
	r.w(CTRL, CTRL_RST|CTRL_SLU)
	r.w(IVAR, dpIVAR)
	r.w(CTRL_EXT, CTRL_EXT_DRV_LOAD)
	r.w(TDBAL0, dpTxRing)
	r.w(TDBAH0, 0)
	r.w(TDLEN0, dpRingBytes)
	r.w(TDT0, 0)
	r.w(TDH0, 0)
	r.w(TCTL, TCTL_EN)
	r.w(RDBAL0, dpRxRing)
	r.w(RDBAH0, 0)
	r.w(RDLEN0, dpRingBytes)
	r.w(RDT0, 0)
	r.w(RDH0, 0)
	r.w(RFCTL, rfctlEXTEN)
	r.w(RCTL, RCTL_EN|rctlUPE|rctlMPE)
	r.w(IMS, 0xFFFFFFFF)
	// Unlike QEMU's test, auto-clear the queue causes on delivery as
	// Linux does: the core signals MSI-X on new causes only, so without
	// EIAC a second write-back would raise no message.
	r.w(EIAC, ICR_RXQ0|ICR_TXQ0)
	return r
}

// connect gives the NIC its guest memory and enables bus mastering, as the
// PCI glue does when a client connects and the guest sets the command
// register.
func (r *dpRig) connect() {
	r.n.mu.Lock()
	r.n.setMem(r.mem)
	r.n.busMasterOn = true
	r.n.mu.Unlock()
}

func (r *dpRig) w(off, v uint32)      { r.n.WriteReg(off, v) }
func (r *dpRig) rd(off uint32) uint32 { return r.n.ReadReg(off) }

// stat reads a statistics register without the read side effects.
func (r *dpRig) stat(off uint32) uint32 {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	return r.n.reg(off)
}

const dpRingDescs = dpRingBytes / txDescSize

// txDataDesc builds an extended data descriptor.
func txDataDesc(addr uint64, length int, cmd uint32, popts byte, special uint16) []byte {
	d := make([]byte, txDescSize)
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], cmd|txdCmdDEXT|txdDTYPD|uint32(length)&txdLenMask)
	d[13] = popts
	binary.LittleEndian.PutUint16(d[14:], special)
	return d
}

// txLegacyDesc builds a legacy descriptor.
func txLegacyDesc(addr uint64, length int, cmd uint32, css, cso int) []byte {
	d := make([]byte, txDescSize)
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], cmd|uint32(length)&0xFFFF|uint32(cso)<<16)
	d[13] = byte(css)
	return d
}

// txContextDesc builds a context descriptor.
func txContextDesc(c txContext, cmd uint32) []byte {
	d := make([]byte, txDescSize)
	d[0], d[1] = byte(c.ipcss), byte(c.ipcso)
	binary.LittleEndian.PutUint16(d[2:], uint16(c.ipcse))
	d[4], d[5] = byte(c.tucss), byte(c.tucso)
	binary.LittleEndian.PutUint16(d[6:], uint16(c.tucse))
	if c.tse {
		cmd |= txdCmdTSE
	}
	if c.ipv4 {
		cmd |= txdCmdIP
	}
	if c.tcp {
		cmd |= txdCmdTCP
	}
	binary.LittleEndian.PutUint32(d[8:], cmd|txdCmdDEXT|txdDTYPC|uint32(c.payLen)&txdLenMask)
	d[13] = byte(c.hdrLen)
	binary.LittleEndian.PutUint16(d[14:], uint16(c.mss))
	return d
}

// queueTX writes descriptors at the tail without moving TDT.
func (r *dpRig) queueTX(descs ...[]byte) {
	for _, d := range descs {
		r.mem.put(dpTxRing+uint64(r.txTail)*txDescSize, d)
		r.txTail = (r.txTail + 1) % dpRingDescs
	}
}

// pushTX writes descriptors and rings the doorbell.
func (r *dpRig) pushTX(descs ...[]byte) {
	r.queueTX(descs...)
	r.w(TDT0, r.txTail)
}

func (r *dpRig) txDesc(idx uint32) []byte {
	return r.mem.get(dpTxRing+uint64(idx%dpRingDescs)*txDescSize, txDescSize)
}

// pushRX gives the NIC count receive buffers (extended or legacy read
// format: the address in the first 8 bytes).
func (r *dpRig) pushRX(count int) {
	for i := 0; i < count; i++ {
		d := make([]byte, rxDescSize)
		binary.LittleEndian.PutUint64(d, r.rxBufAddr(r.rxTail))
		r.mem.put(dpRxRing+uint64(r.rxTail)*rxDescSize, d)
		r.rxTail = (r.rxTail + 1) % dpRingDescs
	}
	r.w(RDT0, r.rxTail)
}

func (r *dpRig) rxBufAddr(idx uint32) uint64 { return dpRxBuf + uint64(idx%64)*dpRxBufStep }

func (r *dpRig) rxDesc(idx uint32) []byte {
	return r.mem.get(dpRxRing+uint64(idx%dpRingDescs)*rxDescSize, rxDescSize)
}
