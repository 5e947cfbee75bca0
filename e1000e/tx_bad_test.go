package e1000e

import (
	"bytes"
	"testing"

	"e1000e-vfu/device"
)

// The bad inputs that bit QEMU's model (the digest's table), on the
// transmit side. Each must end quickly, drop what is bad, and leave the
// device able to send the next good frame.

// serviceableTX checks that a plain 64-byte frame still goes out.
func serviceableTX(t *testing.T, r *dpRig) {
	t.Helper()
	r.be.take()
	frame := bytes.Repeat([]byte{0x5A}, 64)
	r.mem.put(dpTxBuf+0x20000, frame)
	r.pushTX(txDataDesc(dpTxBuf+0x20000, 64, txdCmdEOP|txdCmdRS, 0, 0))
	got := r.be.take()
	if len(got) != 1 || !bytes.Equal(got[0], frame) {
		t.Fatalf("device no longer transmits: %d frames", len(got))
	}
}

func TestTXTailBeyondRing(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.mem.put(dpTxBuf, make([]byte, 64))
	r.queueTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS, 0, 0))
	r.w(TDT0, dpRingDescs+5) // beyond the ring
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames sent for a tail beyond the ring", n)
	}
	if h := r.rd(TDH0); h != 0 {
		t.Fatalf("TDH moved to %d", h)
	}
	r.w(TDT0, r.txTail) // a sane tail sends the queued frame
	if n := len(r.be.take()); n != 1 {
		t.Fatalf("%d frames after fixing the tail, want 1", n)
	}
	serviceableTX(t, r)
}

func TestTXHeadBeyondRing(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(TDH0, 0xFFFF)
	r.w(TDT0, 3)
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames sent with a head beyond the ring", n)
	}
	r.w(TDH0, 0)
	r.w(TDT0, 0)
	serviceableTX(t, r)
}

// CVE-2016-6834: TSO with MSS 0 must not loop on zero-length segments.
func TestTSOMSSZero(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	frame := buildTCP(t, false, 1, "", make([]byte, 3000))
	asTSO(frame, false)
	r.sendFragmented(frame, 4096, txdCmdTSE, txdPoptsIXSM|txdPoptsTXSM, 0, 0,
		txContextDesc(tsoContext(false, 3000, 0), 0))
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames sent for MSS 0", n)
	}
	if r.stat(TSCTFC) != 1 {
		t.Errorf("TSCTFC %d, want 1", r.stat(TSCTFC))
	}
	if r.rd(TDH0) != r.txTail {
		t.Error("descriptors of the dropped packet not consumed")
	}
	serviceableTX(t, r)
}

// CVE-2020-27617: TSO on a frame that is neither IPv4 nor IPv6.
func TestTSONonIP(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	frame := make([]byte, 4000)
	copy(frame, dpDstMAC)
	copy(frame[6:], dpSrcMAC)
	frame[12], frame[13] = 0x08, 0x06 // ARP
	r.sendFragmented(frame, 4096, txdCmdTSE, txdPoptsIXSM|txdPoptsTXSM, 0, 0,
		txContextDesc(tsoContext(false, 4000-54, 1000), 0))
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames sent for non-IP TSO", n)
	}
	serviceableTX(t, r)
	// Header length past the packet, offsets past the header: also dropped.
	short := buildTCP(t, false, 1, "", make([]byte, 10))
	c := tsoContext(false, 10, 4)
	c.hdrLen = 200
	r.sendFragmented(short, 4096, txdCmdTSE, txdPoptsTXSM, 0, 0, txContextDesc(c, 0))
	c = tsoContext(false, 10, 4)
	c.tucso = 60
	r.sendFragmented(short, 4096, txdCmdTSE, txdPoptsTXSM, 0, 0, txContextDesc(c, 0))
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames sent for inconsistent TSO contexts", n)
	}
	serviceableTX(t, r)
}

// CVE-2020-16092: more than 64 data descriptors without EOP.
func TestTXTooManyFragments(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.mem.put(dpTxBuf, make([]byte, 16))
	var descs [][]byte
	for i := 0; i < 100; i++ {
		descs = append(descs, txDataDesc(dpTxBuf, 16, txdCmdRS, 0, 0))
	}
	r.pushTX(descs...)
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames sent", n)
	}
	if h := r.rd(TDH0); h != r.txTail {
		t.Fatalf("TDH %d, want %d: the runaway descriptors must be consumed", h, r.txTail)
	}
	for i := uint32(0); i < 100; i++ {
		if r.txDesc(i)[12]&txdStatDD == 0 {
			t.Fatalf("descriptor %d not written back", i)
		}
	}
	// The packet's end arrives later: still part of the dropped packet.
	r.pushTX(txDataDesc(dpTxBuf, 16, txdCmdEOP|txdCmdRS, 0, 0))
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("the tail of the dropped packet was sent")
	}
	serviceableTX(t, r)
}

// A packet whose EOP is not yet in the ring waits; nothing is consumed.
func TestTXPartialPacketWaits(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	frame := bytes.Repeat([]byte{1, 2, 3, 4}, 100)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, 200, txdCmdRS, 0, 0))
	if n := len(r.be.take()); n != 0 || r.rd(TDH0) != 0 {
		t.Fatalf("incomplete packet: %d frames, TDH %d", n, r.rd(TDH0))
	}
	r.pushTX(txDataDesc(dpTxBuf+200, 200, txdCmdRS|txdCmdEOP, 0, 0))
	got := r.be.take()
	if len(got) != 1 || !bytes.Equal(got[0], frame) {
		t.Fatalf("completed packet: %d frames", len(got))
	}
}

// CVE-2020-15859 / CVE-2023-3019: buffers pointing at the device's own BAR
// or at nothing. DMA only reaches guest RAM through GuestMemory, so such an
// address is an error that drops the packet.
func TestTXBufferUnmapped(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.pushTX(txDataDesc(0xFEBC0000, 64, txdCmdEOP|txdCmdRS, 0, 0)) // a typical BAR0 address
	r.pushTX(txDataDesc(^uint64(0)-8, 64, txdCmdEOP|txdCmdRS, 0, 0))
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames from unmapped buffers", n)
	}
	if r.rd(TDH0) != r.txTail {
		t.Fatal("descriptors with unmapped buffers not consumed")
	}
	serviceableTX(t, r)
	// A ring in unmapped memory: nothing happens, nothing breaks.
	r.w(TDBAL0, 0xFEBC0000)
	r.w(TDT0, (r.txTail+1)%dpRingDescs)
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames from an unmapped ring", n)
	}
}

// 2023 fuzzer: checksum offload with a payload shorter than the checksum
// field, a TCP header shorter than 20 bytes, and offsets past the end.
// 2026: a sub-60-byte frame with IP checksum insertion.
func TestTXChecksumShortPackets(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(TCTL, r.rd(TCTL)|tctlPSP)
	for _, c := range []struct {
		name string
		len  int
		ctx  txContext
	}{
		{"checksum field past the end", 40, txContext{ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50}},
		{"checksum field straddles the end", 51, txContext{ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50}},
		{"start past the end", 20, txContext{ipcss: 200, ipcso: 210, tucss: 250, tucso: 255, tucse: 0xFFFF}},
		{"end before start", 60, txContext{ipcss: 30, ipcso: 24, ipcse: 10, tucss: 50, tucso: 40, tucse: 20}},
		{"sub-60 IPv4 with IXSM", 34, txContext{ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50}},
	} {
		frame := buildTCP(t, false, 1, "", nil)[:c.len]
		r.sendFragmented(frame, 4096, 0, txdPoptsIXSM|txdPoptsTXSM, 0, 0, txContextDesc(c.ctx, 0))
		got := r.be.take()
		if len(got) != 1 {
			t.Fatalf("%s: %d frames, want 1", c.name, len(got))
		}
		if len(got[0]) != max(c.len, ethMinFrame) {
			t.Errorf("%s: frame of %d bytes, want %d (padded)", c.name, len(got[0]), max(c.len, ethMinFrame))
		}
	}
	// The sub-60 frame's IP checksum is right despite the padding.
	frame := buildTCP(t, false, 1, "", nil)[:34]
	frame[14+10], frame[14+11] = 0, 0
	r.sendFragmented(frame, 4096, 0, txdPoptsIXSM, 0, 0, txContextDesc(txContext{ipcss: 14, ipcso: 24, ipcse: 33}, 0))
	got := r.be.take()
	p := parseFrame(got[0], etherTypeVLAN)
	if !p.ipv4 || !ipv4HeaderOK(got[0], &p) {
		t.Error("IP checksum of a short frame is wrong")
	}
	serviceableTX(t, r)
}

// CVE-2021-3416: loopback must not recurse; frames go to the receive ring
// and not to the backend.
func TestLoopbackNoRecursion(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(RCTL, r.rd(RCTL)|rctlLBMMAC)
	r.pushRX(8)
	frame := bytes.Repeat([]byte{0x33}, 100)
	copy(frame, r.n.MAC())
	r.mem.put(dpTxBuf, frame)
	for i := 0; i < 3; i++ {
		r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	}
	if n := len(r.be.take()); n != 0 {
		t.Fatalf("%d frames reached the backend in loopback", n)
	}
	if h := r.rd(RDH0); h != 3 {
		t.Fatalf("RDH %d, want 3 looped frames", h)
	}
	if !bytes.Equal(r.mem.get(r.rxBufAddr(2), len(frame)), frame) {
		t.Fatal("looped frame differs")
	}
}

// The TX walk is bounded by the ring: a ring full of context descriptors
// is consumed in one turn.
func TestTXRingOfContexts(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	var descs [][]byte
	for i := 0; i < dpRingDescs-1; i++ {
		descs = append(descs, txContextDesc(txContext{mss: i}, txdCmdRS))
	}
	r.pushTX(descs...)
	if h := r.rd(TDH0); h != dpRingDescs-1 {
		t.Fatalf("TDH %d, want %d", h, dpRingDescs-1)
	}
	serviceableTX(t, r)
}
