package e1000e

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
)

// What an engine does when what it works on may have changed while it let
// n.mu go for a guest memory message: it stops only for a change of its
// own ring (or of the whole device), commits nothing, has the worker take
// the work up again, and raises no interrupt once quiesced.

// txVec is the MSI-X vector of transmit queue 0 in the rig (dpIVAR).
const txVec = 1

// A receive register written while a transmit write-back waits (Linux
// rewrites RCTL on every receive-mode change) does not stop transmit: the
// packet is committed once, and the next doorbell sends only the next one.
func TestMessagedTXNotStoppedByRXRegisterWrite(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x44}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	// desc read, buffer read pass; the write-back waits.
	release := gatedStepAfter(t, h, m, 2)
	r.w(RCTL, r.rd(RCTL)) // an rx-mode change: same value written again
	r.w(RCTL, r.rd(RCTL)^rctlUPE)
	r.w(RDT0, r.rd(RDT0))
	release()
	finish(t, h, 10)
	sent := len(r.be.take())
	if hd, tl := r.rd(TDH0), r.rd(TDT0); hd != tl {
		t.Errorf("transmit stalled: TDH %d TDT %d with no worker turn left (sent %d)", hd, tl, sent)
	}
	// The guest's next doorbell (another packet) sends only that one.
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	finish(t, h, 10)
	sent += len(r.be.take())
	if sent != 2 {
		t.Errorf("%d frames for 2 packets", sent)
	}
}

// Nor does a transmit register stop receive.
func TestMessagedRXNotStoppedByTXRegisterWrite(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	r.pushRX(8)
	m := useMsgMem(r)
	r.n.Receive(rxTestFrame(3))
	release := gatedStep(t, h, m) // the descriptor read waits
	r.w(TDLEN0, dpRingBytes/2)
	r.w(TDBAL0, dpTxRing+0x1000)
	before, _ := m.counts()
	release()
	// Written in one go: descriptor read, buffer, write-back body and
	// status.
	if after, _ := m.counts(); after-before != 3 {
		t.Errorf("%d more accesses after the message: the frame was started over", after-before)
	}
	if hd := r.rd(RDH0); hd != 1 {
		t.Fatalf("RDH %d, want the frame delivered", hd)
	}
	if n := finish(t, h, 10); n != 0 {
		t.Errorf("%d more worker turns", n)
	}
}

// A step stopped by a change of its own ring, which leaves the ring as it
// was, is taken up again by the worker at once: the ring does not stall
// until the guest's next doorbell, and the packet goes out once.
func TestMessagedTXStaleStepResumes(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x55}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	release := gatedStep(t, h, m) // the descriptor read waits
	r.w(TDLEN0, dpRingBytes/2)
	r.w(TDLEN0, dpRingBytes)
	release()
	if h.waiting() == 0 {
		t.Fatal("a stopped step left no worker turn")
	}
	finish(t, h, 10)
	r.wantSentOnce(t, frame)
}

// The same for receive: the frame stays first in the FIFO and the worker
// writes it again at once.
func TestMessagedRXStaleFrameResumes(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	r.pushRX(8)
	m := useMsgMem(r)
	r.n.Receive(rxTestFrame(4))
	release := gatedStep(t, h, m)
	r.w(RDLEN0, dpRingBytes/2)
	r.w(RDLEN0, dpRingBytes)
	release()
	if hd := r.rd(RDH0); hd != 0 {
		t.Fatalf("RDH %d: a frame stopped half way was committed", hd)
	}
	if h.waiting() == 0 {
		t.Fatal("a stopped frame left no worker turn")
	}
	finish(t, h, 10)
	r.wantDeliveredOnce(t, rxTestFrame(4))
}

// Transmit disabled while a packet's write-back waits: the frame is out,
// so the write-backs finish and the packet is committed, and enabling
// transmit again does not send it twice.
func TestMessagedTXDisableDuringWriteBack(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x66}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	release := gatedStepAfter(t, h, m, 2) // the write-back waits
	r.w(TCTL, 0)
	release()
	if hd := r.rd(TDH0); hd != 1 {
		t.Fatalf("TDH %d: a packet sent was not committed", hd)
	}
	if r.txDesc(0)[12]&txdStatDD == 0 {
		t.Error("descriptor not written back")
	}
	r.w(TCTL, TCTL_EN)
	finish(t, h, 10)
	if got := r.be.take(); len(got) != 1 {
		t.Fatalf("%d frames, want 1", len(got))
	}
}

// Quiesce while a later packet of the turn waits for a message: the
// packets committed before had their interrupt raised before the lock was
// let go, so nothing changes once quiesced (registers, held interrupts),
// and the interrupt is in the state (held, as not yet handled) for the
// destination. The packet in flight goes out once after Resume.
func TestMessagedTXNoInterruptAfterQuiesce(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x22}, 80)
	r.mem.put(dpTxBuf, frame)
	// Packet 1: one descriptor (read desc, read buf, write-back = 3
	// accesses). Packet 2: its descriptor read waits.
	r.pushTX(txDataDesc(dpTxBuf, 80, txdCmdEOP|txdCmdRS, 0, 0), txDataDesc(dpTxBuf, 80, txdCmdEOP|txdCmdRS, 0, 0))
	release := gatedStepAfter(t, h, m, 3)
	r.n.Quiesce()
	r.n.mu.Lock()
	macBefore := r.n.mac
	heldBefore := r.n.mig.held
	r.n.mu.Unlock()
	sentBefore := r.irq.vec(txVec)
	release()
	r.n.mu.Lock()
	macAfter := r.n.mac
	heldAfter := r.n.mig.held
	r.n.mu.Unlock()
	for i := range macBefore {
		if macBefore[i] != macAfter[i] {
			t.Errorf("register %#x changed while quiesced: %#x -> %#x", i*4, macBefore[i], macAfter[i])
		}
	}
	if heldBefore != heldAfter {
		t.Errorf("held interrupts changed while quiesced: %+v -> %+v", heldBefore, heldAfter)
	}
	if sentBefore != 1 || heldBefore.msix&(1<<txVec) == 0 {
		t.Errorf("packet 1's interrupt: sent %d times before Quiesce, held %+v; want sent and held", sentBefore, heldBefore)
	}
	if r.irq.vec(txVec) != sentBefore {
		t.Error("an interrupt was sent while quiesced")
	}
	if got := r.be.take(); len(got) != 1 {
		t.Fatalf("%d frames before Resume, want packet 1", len(got))
	}
	if hd := r.rd(TDH0); hd != 1 {
		t.Fatalf("TDH %d, want packet 2 in flight", hd)
	}
	r.n.Resume()
	finish(t, h, 10)
	if got := r.be.take(); len(got) != 1 {
		t.Fatalf("%d frames after Resume, want packet 2 once", len(got))
	}
	if hd := r.rd(TDH0); hd != 2 {
		t.Fatalf("TDH %d after Resume", hd)
	}
	if r.irq.vec(txVec) <= sentBefore {
		t.Error("no interrupt after Resume")
	}
}

// Quiesce while a packet's write-back waits, then Resume: the packet was
// not committed (its descriptors are in flight in the state), so it goes
// out again; this is the one case where a frame is sent twice, as the
// real part may resend a packet it was stopped in the middle of.
func TestMessagedTXQuiesceDuringWriteBack(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x77}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	release := gatedStepAfter(t, h, m, 2)
	r.n.Quiesce()
	release()
	r.n.mu.Lock()
	in, ok := r.n.saveTXInflight()
	r.n.mu.Unlock()
	if !ok || in.Head != 0 || in.Count != 1 {
		t.Fatalf("in flight %+v, want the packet", in)
	}
	r.n.Resume()
	finish(t, h, 10)
	if got := r.be.take(); len(got) != 2 {
		t.Errorf("%d frames, want the packet twice (sent, stopped, sent again)", len(got))
	}
	if hd := r.rd(TDH0); hd != 1 {
		t.Fatalf("TDH %d after Resume, want 1", hd)
	}
	if r.txDesc(0)[12]&txdStatDD == 0 {
		t.Error("descriptor not written back")
	}
}

// A state saved while a step waits, after a reset, holds the reset
// context, not the one in force when the step began; after a load, the
// loaded one.
func TestMessagedTXSavedContextAfterReset(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x33}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txContextDesc(txContext{ipcss: 14, mss: 999}, 0), txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0),
		txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	// context desc read+wb, data desc read, buf read, wb: then the next
	// packet's descriptor read waits, with the mss 999 context committed.
	release := gatedStepAfter(t, h, m, 5)
	r.w(CTRL, CTRL_RST)
	r.n.mu.Lock()
	ctx := r.n.saveTXContext()
	r.n.mu.Unlock()
	release()
	if ctx.MSS != 0 {
		t.Errorf("state saved after a reset holds the pre-reset context (MSS %d)", ctx.MSS)
	}
	r.n.mu.Lock()
	mss := r.n.tx.ctx.mss
	r.n.mu.Unlock()
	if mss != 0 {
		t.Errorf("context MSS %d after the step ended, want the reset context", mss)
	}
}

func TestMessagedTXSavedContextAfterLoad(t *testing.T) {
	src := newRig(t, device.IRQModeMSIX, Config{})
	src.pushTX(txContextDesc(txContext{ipcss: 14, mss: 1234}, 0))
	src.n.Quiesce()
	st, err := migration.Save(nil, src.n, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}

	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	r.pushTX(txContextDesc(txContext{ipcss: 14, mss: 999}, 0), txDataDesc(dpTxBuf, 80, txdCmdEOP|txdCmdRS, 0, 0))
	// The context descriptor's read passes, its write-back waits.
	release := gatedStepAfter(t, h, m, 1)
	if err := migration.Load(st, r.n, migration.Limits{}, nil); err != nil {
		release()
		t.Fatal(err)
	}
	r.n.mu.Lock()
	ctx := r.n.saveTXContext()
	r.n.mu.Unlock()
	release()
	if ctx.MSS != 1234 {
		t.Errorf("state saved after a load holds MSS %d, want the loaded 1234", ctx.MSS)
	}
	r.n.mu.Lock()
	mss := r.n.tx.ctx.mss
	r.n.mu.Unlock()
	if mss != 1234 {
		t.Errorf("context MSS %d after the step ended, want the loaded 1234", mss)
	}
}

// lateMsgMem is guest memory that the client maps without fd just after
// the NIC asked whether it needs messages: Messaged says no until an
// access through the table finds the new mapping, which the table refuses
// at once with EDEADLK (vfiouser's DMATable does so for memory without fd:
// only its Worker accessor sends messages and waits). From then on
// Messaged says yes.
type lateMsgMem struct {
	worker   *msgMem
	messaged atomic.Bool
	refused  atomic.Int32
}

func (m *lateMsgMem) Messaged() bool                    { return m.messaged.Load() }
func (m *lateMsgMem) Worker() device.GuestMemory        { return m.worker }
func (m *lateMsgMem) Read(addr uint64, _ []byte) error  { return m.refuse(addr) }
func (m *lateMsgMem) Write(addr uint64, _ []byte) error { return m.refuse(addr) }

func (m *lateMsgMem) refuse(addr uint64) error {
	m.messaged.Store(true)
	m.refused.Add(1)
	return fmt.Errorf("guest memory: %#x is mapped without fd: %w", addr, syscall.EDEADLK)
}

func useLateMsgMem(r *dpRig) *lateMsgMem {
	m := &lateMsgMem{worker: &msgMem{dpMem: r.mem, n: r.n}}
	r.n.mu.Lock()
	r.n.setMem(m)
	r.n.mu.Unlock()
	return m
}

// A doorbell that finds guest memory needing messages only on its first
// access (refused at once, never waited for with n.mu held) leaves the
// packet to the worker, which sends it once without the lock.
func TestTXMemoryTurnedMessagedGoesToWorker(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useLateMsgMem(r)
	frame := bytes.Repeat([]byte{0x88}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	if m.refused.Load() != 1 {
		t.Fatalf("%d accesses refused, want the doorbell's first", m.refused.Load())
	}
	if got := r.be.take(); len(got) != 0 {
		t.Fatalf("%d frames sent by the doorbell", len(got))
	}
	if h.waiting() != 1 {
		t.Fatalf("%d worker turns, want 1", h.waiting())
	}
	finish(t, h, 10)
	if a, under := m.worker.counts(); a == 0 || under != 0 {
		t.Fatalf("worker: %d accesses, %d with the lock held", a, under)
	}
	r.wantSentOnce(t, frame)
}

// The same for a frame from the backend: it waits in the FIFO, not
// counted as missed, and the worker writes it.
func TestRXMemoryTurnedMessagedGoesToWorker(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	r.pushRX(8)
	m := useLateMsgMem(r)
	r.n.Receive(rxTestFrame(9))
	if m.refused.Load() != 1 {
		t.Fatalf("%d accesses refused, want the first", m.refused.Load())
	}
	if hd := r.rd(RDH0); hd != 0 {
		t.Fatalf("RDH %d before the worker ran", hd)
	}
	finish(t, h, 10)
	r.wantDeliveredOnce(t, rxTestFrame(9))
	if mpc, rnbc := r.stat(MPC), r.stat(RNBC); mpc != 0 || rnbc != 0 {
		t.Errorf("MPC %d RNBC %d for a frame that was delivered", mpc, rnbc)
	}
	if _, under := m.worker.counts(); under != 0 {
		t.Fatalf("%d worker accesses with the lock held", under)
	}
}

// wantSentOnce checks that frame went out once, the ring is empty (TDH at
// TDT) and the transmit interrupt was raised.
func (r *dpRig) wantSentOnce(t *testing.T, frame []byte) {
	t.Helper()
	if got := r.be.take(); len(got) != 1 || !bytes.Equal(got[0], frame) {
		t.Fatalf("%d frames, want the packet once", len(got))
	}
	if hd, tl := r.rd(TDH0), r.rd(TDT0); hd != tl {
		t.Fatalf("TDH %d TDT %d", hd, tl)
	}
	if r.irq.vec(txVec) == 0 {
		t.Error("no transmit interrupt")
	}
}

// wantDeliveredOnce checks that frame, and only it, was written to the
// first receive buffer and committed (RDH 1).
func (r *dpRig) wantDeliveredOnce(t *testing.T, frame []byte) {
	t.Helper()
	if hd := r.rd(RDH0); hd != 1 {
		t.Fatalf("RDH %d, want the frame delivered once", hd)
	}
	if got := r.mem.get(r.rxBufAddr(0), len(frame)); !bytes.Equal(got, frame) {
		t.Fatal("frame not in its buffer")
	}
}
