package e1000e

import (
	"bytes"
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
