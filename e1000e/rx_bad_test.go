package e1000e

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"e1000e-vfu/device"
)

// Receive formats, long packets, overrun, and the receive-side bad inputs
// of the digest's table.

func testFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(i) ^ seed
	}
	copy(f, dpDstMAC)
	copy(f[6:], dpSrcMAC)
	f[12], f[13] = 0x88, 0xB5 // local experimental ether type
	return f
}

// serviceableRX checks that a frame is still received.
func serviceableRX(t *testing.T, r *dpRig) {
	t.Helper()
	r.w(RDH0, r.rxTail)
	idx := r.rxTail
	r.pushRX(1)
	f := testFrame(100, 0x77)
	r.n.Receive(f)
	if rxExtDesc(r.rxDesc(idx)).statusError()&rxdStatDD == 0 {
		t.Fatal("device no longer receives")
	}
	if !bytes.Equal(r.mem.get(r.rxBufAddr(idx), len(f)), f) {
		t.Fatal("received bytes differ")
	}
}

// CVE-2020-28916: descriptors with buffer address 0 are consumed without a
// write, and the walk ends.
func TestRXBufferAddressZero(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(RCTL, r.rd(RCTL)|rctlLPE)
	zero := make([]byte, rxDescSize)
	for i := 0; i < 8; i++ {
		r.mem.put(dpRxRing+uint64(i)*rxDescSize, zero)
	}
	r.rxTail = 8
	r.w(RDT0, 8)
	r.n.Receive(testFrame(5000, 1)) // three 2 KiB descriptors
	if h := r.rd(RDH0); h != 3 {
		t.Fatalf("RDH %d, want 3 descriptors consumed", h)
	}
	for i := uint32(0); i < 3; i++ {
		d := rxExtDesc(r.rxDesc(i))
		if d.statusError()&rxdStatDD == 0 || d.length() != 0 {
			t.Fatalf("descriptor %d: status %#x length %d, want DD and 0", i, d.statusError(), d.length())
		}
	}
	if !bytes.Equal(r.mem.get(0, 64), make([]byte, 64)) {
		t.Fatal("data written at guest address 0")
	}
	serviceableRX(t, r)
}

// (2017 fix): RDT beyond the ring.
func TestRXTailBeyondRing(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(RDT0, 0xFFFF)
	r.n.Receive(testFrame(64, 2))
	if h := r.rd(RDH0); h != 0 {
		t.Fatalf("RDH moved to %d", h)
	}
	r.w(RDT0, 0)
	r.n.mu.Lock()
	r.n.rx.reset() // drop the frame held for the broken ring
	r.n.mu.Unlock()
	serviceableRX(t, r)
}

// RX overrun: frames wait in a bounded backlog, RXO is raised, and beyond
// the backlog frames are missed (MPC).
func TestRXOverrunBacklog(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	for i := 0; i < rxBacklogMax+10; i++ {
		r.n.Receive(testFrame(64, byte(i)))
	}
	if got := r.stat(MPC); got != 10 {
		t.Errorf("MPC %d, want 10", got)
	}
	if r.rd(ICR)&ICR_RXO == 0 {
		t.Error("RXO not raised")
	}
	// Buffers arrive: the backlog drains in order.
	r.pushRX(dpRingDescs - 1)
	if h := r.rd(RDH0); h != dpRingDescs-1 {
		t.Fatalf("RDH %d after draining, want %d", h, dpRingDescs-1)
	}
	r.n.mu.Lock()
	left := r.n.rx.blN
	r.n.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d frames left in the backlog, want 1", left)
	}
	// Buffers are reused every 64 descriptors: the last 64 hold the last
	// frames, in order.
	for i := uint32(dpRingDescs - 65); i < dpRingDescs-1; i++ {
		want := testFrame(64, byte(i))
		if got := r.mem.get(r.rxBufAddr(i), 64); !bytes.Equal(got, want) {
			t.Fatalf("frame %d out of order", i)
		}
	}
}

// Long packets span several descriptors; only the last has EOP; the FCS is
// appended unless RCTL.SECRC.
func TestRXLongPacket(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	f := testFrame(9000, 3)
	r.pushRX(8)
	r.n.Receive(f)
	if h := r.rd(RDH0); h != 0 {
		t.Fatalf("a 9000-byte frame without RCTL.LPE was stored (RDH %d)", h)
	}
	if r.stat(ROC) != 1 {
		t.Errorf("ROC %d, want 1", r.stat(ROC))
	}
	r.w(RCTL, r.rd(RCTL)|rctlLPE)
	r.n.Receive(f)
	want := append(append([]byte(nil), f...), binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(f))...)
	var got []byte
	for i := uint32(0); i < 5; i++ {
		d := rxExtDesc(r.rxDesc(i))
		st := d.statusError()
		if st&rxdStatDD == 0 || (st&rxdStatEOP != 0) != (i == 4) {
			t.Fatalf("descriptor %d: status %#x", i, st)
		}
		got = append(got, r.mem.get(r.rxBufAddr(i), d.length())...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("reassembled %d bytes differ from frame+FCS (%d)", len(got), len(want))
	}
	if r.stat(PRC1522) != 1 {
		t.Errorf("PRC1522 %d, want 1", r.stat(PRC1522))
	}
	// With SECRC the FCS is stripped.
	r.w(RCTL, r.rd(RCTL)|rctlSECRC)
	idx := r.rd(RDH0)
	r.pushRX(1)
	r.n.Receive(testFrame(100, 4))
	if l := rxExtDesc(r.rxDesc(idx)).length(); l != 100 {
		t.Errorf("length with SECRC %d, want 100", l)
	}
}

// Legacy descriptors (RFCTL.EXTEN clear): status byte at 12, errors at 13.
func TestRXLegacyDescriptor(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	r.w(RFCTL, 0)
	r.w(RXCSUM, rxcsumIPOFL|rxcsumTUOFL)
	r.w(CTRL, r.rd(CTRL)|CTRL_VME)
	f := buildTCP(t, false, 1, "", []byte("legacy rx"))
	tagged := make([]byte, 0, len(f)+4)
	tagged = append(tagged, f[:12]...)
	tagged = append(tagged, 0x81, 0x00, 0x00, 0x07)
	tagged = append(tagged, f[12:]...)
	r.pushRX(1)
	r.n.Receive(tagged)
	d := r.rxDesc(0)
	st := d[12]
	if st&(rxdStatDD|rxdStatEOP|rxdStatVP|rxdStatIPCS|rxdStatTCPCS) != rxdStatDD|rxdStatEOP|rxdStatVP|rxdStatIPCS|rxdStatTCPCS {
		t.Errorf("legacy status %#x", st)
	}
	if d[13] != 0 {
		t.Errorf("legacy errors %#x", d[13])
	}
	if v := binary.LittleEndian.Uint16(d[14:]); v != 7 {
		t.Errorf("legacy VLAN %d, want 7", v)
	}
	if l := int(binary.LittleEndian.Uint16(d[8:])); l != len(f)+4 {
		t.Errorf("legacy length %d, want %d", l, len(f)+4)
	}
	if r.rd(ICR)&ICR_RXT0 == 0 {
		t.Error("RXT0 not raised in INTx mode")
	}
}

// Packet split: two ring slots per 32-byte descriptor, the header in
// buffer 0, the payload in buffers 1-3; no buffer is written past its size.
func TestRXPacketSplit(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(RFCTL, rfctlEXTEN)
	r.w(RCTL, r.rd(RCTL)|rctlDTYPPS|rctlLPE|rctlSECRC)
	r.w(PSRCTL, 2|1<<8|1<<16|1<<24) // 256 B header buffer, three 1 KiB buffers
	const canary = 0xEE
	bufAddr := func(desc, j int) uint64 { return dpRxBuf + uint64(desc)*0x2000 + uint64(j)*0x800 }
	for desc := 0; desc < 4; desc++ {
		d := make([]byte, rxPSDescSize)
		for j := 0; j < 4; j++ {
			binary.LittleEndian.PutUint64(d[8*j:], bufAddr(desc, j))
			r.mem.put(bufAddr(desc, j), bytes.Repeat([]byte{canary}, 0x800))
		}
		r.mem.put(dpRxRing+uint64(desc)*rxPSDescSize, d)
	}
	r.w(RDT0, 8)                                                            // four descriptors = eight slots
	f := buildTCP(t, false, 1, "", bytes.Repeat([]byte("0123456789"), 400)) // 4054 bytes
	r.n.Receive(f)
	if h := r.rd(RDH0); h != 4 {
		t.Fatalf("RDH %d, want 4 (two descriptors of two slots)", h)
	}
	d0 := rxPSDesc(r.mem.get(dpRxRing, rxPSDescSize))
	d1 := rxPSDesc(r.mem.get(dpRxRing+rxPSDescSize, rxPSDescSize))
	if hs := d0.hdrStatus(); hs&rxdPSHdrStatHDRSP == 0 || int(hs&rxdPSHdrStatLenMask) != 54 {
		t.Fatalf("header status %#x, want HDRSP and 54", hs)
	}
	if d0.statusError()&rxdStatEOP != 0 || d1.statusError()&(rxdStatEOP|rxdStatDD) != rxdStatEOP|rxdStatDD {
		t.Fatalf("EOP on the wrong descriptor: %#x %#x", d0.statusError(), d1.statusError())
	}
	var got []byte
	for desc, d := range []rxPSDesc{d0, d1} {
		for j := 0; j < 4; j++ {
			l := d.length(j)
			size := 1024
			if j == 0 {
				size = 256
			}
			if l > size {
				t.Fatalf("descriptor %d buffer %d: length %d over its size", desc, j, l)
			}
			b := r.mem.get(bufAddr(desc, j), 0x800)
			got = append(got, b[:l]...)
			if b[size] != canary {
				t.Fatalf("descriptor %d buffer %d written past its size", desc, j)
			}
		}
	}
	if d1.length(0) != 0 {
		t.Errorf("buffer 0 of the second descriptor holds %d bytes, want 0", d1.length(0))
	}
	if !bytes.Equal(got, f) {
		t.Fatalf("packet split reassembly differs (%d vs %d bytes)", len(got), len(f))
	}
}

// LP#1879531: IPv6 extension headers with RSS must not read out of bounds:
// truncated and overlong chains.
func TestRXIPv6ExtensionHeaders(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(MRQC, mrqcEnableRSS|mrqcFieldIPv6|mrqcFieldIPv6Ex|mrqcFieldTCPIPv6|mrqcFieldTCPv6)
	r.w(RXCSUM, rxcsumIPOFL|rxcsumTUOFL)
	base := buildTCP(t, true, 1, "", []byte("v6"))
	mk := func(chain []byte, trunc int) []byte {
		f := append([]byte(nil), base[:54]...)
		f[14+6] = 0 // hop-by-hop first
		f = append(f, chain...)
		f = append(f, base[54:]...)
		if trunc > 0 && trunc < len(f) {
			f = f[:trunc]
		}
		return f
	}
	var long []byte
	for i := 0; i < 20; i++ {
		long = append(long, 60, 0, 0, 0, 0, 0, 0, 0) // destination options, 8 bytes each
	}
	long = append(long, 6, 0, 0, 0, 0, 0, 0, 0)
	frames := [][]byte{
		mk([]byte{6, 0, 0, 0, 0, 0, 0, 0}, 0),    // one header, then TCP
		mk([]byte{6, 0xFF, 0, 0, 0, 0, 0, 0}, 0), // length past the end
		mk([]byte{44, 0, 0, 0, 0, 0, 0, 0}, 58),  // truncated in the chain
		mk(append([]byte{51, 0xFF}, make([]byte, 6)...), 0),
		mk(long, 0), // more headers than the parser follows
	}
	for i, f := range frames {
		idx := r.rxTail
		r.pushRX(1)
		r.n.Receive(f)
		if rxExtDesc(r.rxDesc(idx)).statusError()&rxdStatDD == 0 {
			t.Errorf("frame %d not received", i)
		}
	}
	serviceableRX(t, r)
}

// RXDMT0 is raised when the free descriptors fall to the threshold.
func TestRXDescriptorMinimumThreshold(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	r.w(RCTL, r.rd(RCTL)|1<<rctlRDMTSSh) // a quarter of the ring: 64 slots
	r.pushRX(70)
	for i := 0; i < 5; i++ {
		r.n.Receive(testFrame(64, byte(i)))
	}
	if r.rd(ICR)&ICR_RXDMT0 != 0 {
		t.Fatal("RXDMT0 with 65 free descriptors")
	}
	r.n.Receive(testFrame(64, 9))
	if r.rd(ICR)&ICR_RXDMT0 == 0 {
		t.Fatal("RXDMT0 not raised at 64 free descriptors")
	}
}

// Bus Master off: frames wait; on enable the core kicks RX.
func TestRXWaitsForBusMaster(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.pushRX(1)
	r.n.mu.Lock()
	r.n.busMasterOn = false
	r.n.mu.Unlock()
	r.n.Receive(testFrame(64, 5))
	if rxExtDesc(r.rxDesc(0)).statusError() != 0 {
		t.Fatal("DMA with Bus Master disabled")
	}
	r.n.mu.Lock()
	r.n.busMasterOn = true
	r.n.kickRX()
	r.n.mu.Unlock()
	if rxExtDesc(r.rxDesc(0)).statusError()&rxdStatDD == 0 {
		t.Fatal("frame not delivered after Bus Master enable")
	}
}

// Without link, frames from the backend are lost; with link back they flow.
func TestRXNeedsLink(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.pushRX(1)
	r.n.SetLink(false)
	r.n.Receive(testFrame(64, 6))
	if rxExtDesc(r.rxDesc(0)).statusError() != 0 {
		t.Fatal("frame received without link")
	}
	r.n.mu.Lock()
	blN := r.n.rx.blN
	r.n.mu.Unlock()
	if blN != 0 {
		t.Fatal("frame kept for later without link")
	}
	r.n.mu.Lock()
	r.n.linkUpRegs()
	r.n.mu.Unlock()
	r.n.Receive(testFrame(64, 6))
	if rxExtDesc(r.rxDesc(0)).statusError()&rxdStatDD == 0 {
		t.Fatal("frame not received with link up")
	}
}

// A frame that arrives while older ones wait goes after them, and its
// arrival drains them when descriptors are free.
func TestRXBacklogOrder(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.n.Receive(testFrame(64, 10))
	r.n.Receive(testFrame(64, 11))
	r.mem.put(dpRxRing, make([]byte, 3*rxDescSize))
	for i := uint32(0); i < 3; i++ {
		d := make([]byte, rxDescSize)
		binary.LittleEndian.PutUint64(d, r.rxBufAddr(i))
		r.mem.put(dpRxRing+uint64(i)*rxDescSize, d)
	}
	// RDT moves without the doorbell's kick, as if written while DMA
	// was off.
	r.n.mu.Lock()
	r.n.setReg(RDT0, 3)
	r.n.mu.Unlock()
	r.rxTail = 3
	r.n.Receive(testFrame(64, 12))
	for i := uint32(0); i < 3; i++ {
		if got := r.mem.get(r.rxBufAddr(i), 64); !bytes.Equal(got, testFrame(64, byte(10+i))) {
			t.Fatalf("slot %d does not hold frame %d", i, 10+i)
		}
	}
}

// While quiesced for migration, frames wait without touching registers or
// guest memory; after Resume they are delivered.
func TestRXQuiesced(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.pushRX(4)
	r.n.Quiesce()
	r.n.Receive(testFrame(64, 1))
	r.n.Receive(testFrame(64, 2))
	if r.stat(RNBC) != 0 || rawICR(r)&ICR_RXO != 0 || r.stat(GPRC) != 0 {
		t.Fatalf("registers changed while quiesced: RNBC %d ICR %#x GPRC %d", r.stat(RNBC), rawICR(r), r.stat(GPRC))
	}
	if rxExtDesc(r.rxDesc(0)).statusError() != 0 {
		t.Fatal("DMA while quiesced")
	}
	r.n.Resume()
	if h := r.rd(RDH0); h != 2 {
		t.Fatalf("RDH %d after Resume, want 2", h)
	}
}
