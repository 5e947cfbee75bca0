package e1000e

import (
	"sync"
	"testing"

	"e1000e-vfu/device"
)

// Frames from the backend goroutine race with the guest's doorbells and
// register accesses; the NIC's mutex serialises them. Run with -race. The
// guest side reposts what it consumed, as a driver's cleanup does.
func TestConcurrentTXAndRX(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(RCTL, r.rd(RCTL)|rctlSECRC)
	r.pushRX(dpRingDescs - 1)
	const frames = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f := testFrame(128, 9)
		for i := 0; i < frames; i++ {
			r.n.Receive(f)
		}
	}()
	r.mem.put(dpTxBuf, testFrame(64, 1))
	sent := 0
	for i := 0; i < frames; i++ {
		r.pushTX(txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS, 0, 0))
		sent++
		// Give back every received buffer: RDT just behind RDH.
		h := r.rd(RDH0)
		r.w(RDT0, (h+dpRingDescs-1)%dpRingDescs)
	}
	wg.Wait()
	if got := len(r.be.take()); got != sent {
		t.Fatalf("%d frames sent, want %d", got, sent)
	}
	got := r.stat(GPRC) + r.stat(MPC)
	r.n.mu.Lock()
	waiting := uint32(r.n.rx.blN)
	r.n.mu.Unlock()
	if got+waiting != frames {
		t.Fatalf("received %d + missed %d + waiting %d, want %d in all", r.stat(GPRC), r.stat(MPC), waiting, frames)
	}
}
