package e1000e

import (
	"testing"

	"e1000e-vfu/device"
)

// The causes the datapath raises and how it hands them to the core's
// moderation: descriptors with IDE wait for TIDV, frames for RDTR, and a
// flush (FPD) releases them. No timer has to run: FPD is deterministic.

func rawICR(r *dpRig) uint32 {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	return r.n.reg(ICR)
}

func TestTXInterruptDelay(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	r.w(TIDV, 0xFFFF)
	r.mem.put(dpTxBuf, testFrame(64, 1))
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS|txdCmdIDE, 0, 0))
	if len(r.be.take()) != 1 {
		t.Fatal("frame not sent")
	}
	if rawICR(r)&ICR_TXDW != 0 {
		t.Fatal("TXDW raised at once although the descriptor asked for a delay")
	}
	r.w(TIDV, 0xFFFF|TIDV_FPD)
	if icr := rawICR(r); icr&(ICR_TXDW|ICR_TXQE) != ICR_TXDW|ICR_TXQE {
		t.Fatalf("ICR %#x after the flush, want TXDW|TXQE", icr)
	}
	// Without IDE the cause is immediate.
	r.rd(ICR)
	r.mem.put(dpTxBuf, testFrame(64, 2))
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS, 0, 0))
	if rawICR(r)&ICR_TXDW == 0 {
		t.Fatal("TXDW not raised without IDE")
	}
}

func TestTXNoWriteBackWithoutRS(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	r.w(IVAR, 0) // no write-back on every descriptor
	r.mem.put(dpTxBuf, testFrame(64, 1))
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP, 0, 0))
	if r.txDesc(0)[12]&txdStatDD != 0 {
		t.Fatal("DD written without RS")
	}
	if rawICR(r)&ICR_TXDW != 0 {
		t.Fatal("TXDW without a write-back")
	}
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS, 0, 0))
	if r.txDesc(1)[12]&txdStatDD == 0 || rawICR(r)&ICR_TXDW == 0 {
		t.Fatal("RS descriptor not written back")
	}
}

func TestRXInterruptDelay(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	r.w(RDTR, 0xFFFF)
	r.pushRX(2)
	r.n.Receive(testFrame(64, 1))
	if rxExtDesc(r.rxDesc(0)).statusError()&rxdStatDD == 0 {
		t.Fatal("frame not written")
	}
	if rawICR(r)&ICR_RXT0 != 0 {
		t.Fatal("RXT0 raised at once although RDTR delays it")
	}
	r.w(RDTR, 0xFFFF|RDTR_FPD)
	if rawICR(r)&ICR_RXT0 == 0 {
		t.Fatal("RXT0 not raised by the flush")
	}
}

func TestMSIXQueueCauses(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.mem.put(dpTxBuf, testFrame(64, 1))
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS, 0, 0))
	r.pushRX(1)
	r.n.Receive(testFrame(64, 1))
	// EIAC auto-clears RXQ0/TXQ0 on delivery: the vectors tell.
	if r.irq.vec(0) != 1 || r.irq.vec(1) != 1 {
		t.Fatalf("vectors rx %d tx %d, want 1 and 1", r.irq.vec(0), r.irq.vec(1))
	}
	if icr := rawICR(r); icr&(ICR_RXT0|ICR_TXDW) != 0 {
		t.Fatalf("ICR %#x: RXT0/TXDW are the non-MSI-X causes", icr)
	}
}

// A doorbell that completes nothing must not release delayed causes.
func TestTXIdleDoorbellKeepsDelay(t *testing.T) {
	r := newRig(t, device.IRQModeINTx, Config{})
	r.w(TIDV, 0xFFFF)
	r.mem.put(dpTxBuf, testFrame(64, 1))
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS|txdCmdIDE, 0, 0))
	// Half a packet: the doorbell finds no end and completes nothing.
	r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdIDE, 0, 0))
	if rawICR(r)&ICR_TXDW != 0 {
		t.Fatal("an idle doorbell released the delayed TXDW")
	}
}
