package e1000e

import (
	"bytes"
	"testing"
	"time"

	"e1000e-vfu/migration"
)

func (f *dpIRQ) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.msi
	for _, c := range f.msix {
		t += c
	}
	return t
}

// TestQuiescedNoDMANoInterrupt: a quiesced NIC neither reads nor writes
// guest memory nor interrupts, whatever arrives; Resume catches up.
func TestQuiescedNoDMANoInterrupt(t *testing.T) {
	r := newRig(t, IRQModeMSIX, Config{})
	r.pushRX(8)
	r.n.Quiesce()
	if !r.n.Quiesced() {
		t.Fatal("not quiesced")
	}
	// A packet for transmit, frames from the network, a cause set by
	// software, a link change: all while quiesced.
	r.mem.put(dpTxBuf, bytes.Repeat([]byte{0x5a}, 100))
	r.pushTX(txLegacyDesc(dpTxBuf, 100, txdCmdEOP|txdCmdRS, 0, 0))
	snapshot := bytes.Clone(r.mem.b)
	frame := append([]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x08, 0x00}, make([]byte, 60)...)
	for i := 0; i < 3; i++ {
		r.n.Receive(frame)
	}
	r.w(ICS, ICR_RXQ0)
	r.n.SetLink(false)
	r.n.SetLink(true)
	if !bytes.Equal(snapshot, r.mem.b) {
		t.Error("a quiesced NIC wrote guest memory")
	}
	if n := r.irq.total(); n != 0 {
		t.Errorf("a quiesced NIC sent %d interrupts", n)
	}
	if f := r.be.take(); len(f) != 0 {
		t.Errorf("a quiesced NIC transmitted %d frames", len(f))
	}
	// Its state shows the held work.
	b, err := migration.Save(nil, r.n, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, secs, _ := migration.Split(b, migration.Limits{})
	found := false
	for _, s := range secs {
		found = found || s.Name == secRXFIFO
	}
	if !found {
		t.Error("frames received while quiesced are not in the state")
	}

	r.n.Resume()
	if f := r.be.take(); len(f) != 1 {
		t.Errorf("after Resume %d frames transmitted, want 1", len(f))
	}
	for i := uint32(0); i < 3; i++ {
		if r.rxDesc(i)[12]&rxdStatDD == 0 && r.rxDesc(i)[8]&rxdStatDD == 0 {
			t.Errorf("receive descriptor %d not written after Resume", i)
		}
	}
	if r.irq.total() == 0 {
		t.Error("no interrupt after Resume")
	}
}

// TestQuiescedTimersKeepTimeLeft: a state saved from a quiesced NIC holds
// a timer's time left, which does not run down while quiesced.
func TestQuiescedTimersKeepTimeLeft(t *testing.T) {
	r := newRig(t, IRQModeMSI, Config{})
	r.w(ITR, 0xFFFF) // about 16.8 ms intervals
	r.w(ICS, ICR_TXDW)
	r.n.Quiesce()
	left := func() int64 {
		r.n.mu.Lock()
		defer r.n.mu.Unlock()
		return r.n.saveInterrupts().Timers["itr"]
	}
	l1 := left()
	if l1 <= 0 {
		t.Fatalf("ITR timer not running (left %d)", l1)
	}
	time.Sleep(2 * time.Millisecond)
	if l2 := left(); l2 != l1 {
		t.Errorf("a held timer ran down from %d to %d ns", l1, l2)
	}
	r.n.Resume()
}
