package e1000e

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"e1000e-vfu/device"
)

// These tests replay QEMU's own e1000e test (tests/qtest/e1000e-test.c with
// its libqos driver) against the NIC: the same register setup, a 64-byte
// frame transmitted with RS|EOP|DEXT|DTYP_D, a 14-byte frame received into
// an extended descriptor, and 4096 rounds of both so the rings wrap.

// qemuTestTX sends one 64-byte frame and checks what the test checks: the
// TX vector fired, the descriptor is done, the frame reached the backend.
func qemuTestTX(t *testing.T, r *dpRig, round int) {
	t.Helper()
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = byte(i + round)
	}
	r.mem.put(dpTxBuf, payload)
	idx := r.txTail
	before := r.irq.vec(1)
	r.pushTX(txDataDesc(dpTxBuf, len(payload), txdCmdRS|txdCmdEOP, 0, 0))
	if got := r.irq.vec(1); got != before+1 {
		t.Fatalf("round %d: TX vector 1 fired %d times, want 1", round, got-before)
	}
	if st := r.txDesc(idx)[12]; st&txdStatDD == 0 {
		t.Fatalf("round %d: TX descriptor status %#x without DD", round, st)
	}
	frames := r.be.take()
	if len(frames) != 1 || !bytes.Equal(frames[0], payload) {
		t.Fatalf("round %d: backend got %d frames, want the 64-byte frame", round, len(frames))
	}
	if h := r.rd(TDH0); h != r.txTail {
		t.Fatalf("round %d: TDH %d, want %d", round, h, r.txTail)
	}
}

// qemuTestRX delivers a 14-byte frame before any buffer is posted (QEMU
// queues it), then posts one extended descriptor and checks the RX vector,
// DD|EOP and the bytes.
func qemuTestRX(t *testing.T, r *dpRig, round int) {
	t.Helper()
	frame := []byte("TEST\x00\x00\x00\x00\x00\x00\x08\x00ab")
	frame[5] = byte(round)
	before := r.irq.vec(0)
	r.n.Receive(frame)
	if got := r.irq.vec(0); got != before {
		t.Fatalf("round %d: RX vector fired with no buffer posted", round)
	}
	idx := r.rxTail
	buf := r.rxBufAddr(idx)
	r.pushRX(1)
	if got := r.irq.vec(0); got != before+1 {
		t.Fatalf("round %d: RX vector 0 fired %d times, want 1", round, got-before)
	}
	d := rxExtDesc(r.rxDesc(idx))
	if st := d.statusError(); st&(rxdStatDD|rxdStatEOP) != rxdStatDD|rxdStatEOP {
		t.Fatalf("round %d: RX status %#x, want DD|EOP", round, st)
	}
	// Padded to 60 bytes, plus the FCS (RCTL.SECRC is clear).
	if d.length() != 64 {
		t.Fatalf("round %d: RX length %d, want 64", round, d.length())
	}
	got := r.mem.get(buf, 64)
	want := make([]byte, 60)
	copy(want, frame)
	if !bytes.Equal(got[:60], want) {
		t.Fatalf("round %d: RX bytes %x, want %x", round, got[:60], want)
	}
	if fcs := binary.LittleEndian.Uint32(got[60:]); fcs != crc32.ChecksumIEEE(want) {
		t.Fatalf("round %d: FCS %#x, want %#x", round, fcs, crc32.ChecksumIEEE(want))
	}
}

func TestQEMUProcedureTX(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	qemuTestTX(t, r, 0)
	if r.stat(GPTC) != 1 || r.stat(TPT) != 1 || r.stat(GOTCL) != 68 || r.stat(PTC127) != 1 {
		t.Errorf("TX stats GPTC %d TPT %d GOTC %d PTC127 %d, want 1 1 68 1",
			r.stat(GPTC), r.stat(TPT), r.stat(GOTCL), r.stat(PTC127))
	}
}

func TestQEMUProcedureRX(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	qemuTestRX(t, r, 0)
	if r.stat(GPRC) != 1 || r.stat(TPR) != 1 || r.stat(GORCL) != 64 || r.stat(PRC64) != 1 {
		t.Errorf("RX stats GPRC %d TPR %d GORC %d PRC64 %d, want 1 1 64 1",
			r.stat(GPRC), r.stat(TPR), r.stat(GORCL), r.stat(PRC64))
	}
	if r.stat(RNBC) != 1 {
		t.Errorf("RNBC %d, want 1 (the frame waited for a buffer)", r.stat(RNBC))
	}
}

func TestQEMUProcedureMultipleTransfers(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	const rounds = 4096 // the ring of 256 descriptors wraps 16 times
	for i := 0; i < rounds; i++ {
		qemuTestTX(t, r, i)
		qemuTestRX(t, r, i)
	}
}
