package e1000e

import (
	"bytes"
	"testing"
	"time"

	"e1000e-vfu/device"
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
	r := newRig(t, device.IRQModeMSIX, Config{})
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
	clk := newFakeClock()
	r := newRig(t, device.IRQModeMSI, Config{TimerClock: clk})
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
	clk.advance(2 * time.Millisecond)
	if l2 := left(); l2 != l1 {
		t.Errorf("a held timer ran down from %d to %d ns", l1, l2)
	}
	r.n.Resume()
}

// linuxMSIX configures interrupts as Linux's e1000e driver does in MSI-X
// mode: RX and TX causes auto-cleared on delivery, OTHER auto-masked, and
// every handler enabling its causes in IMS again once it ran.
func (r *dpRig) linuxMSIX() {
	r.w(CTRL_EXT, r.rd(CTRL_EXT)|CTRL_EXT_EIAME|CTRL_EXT_PBA_CLR)
	r.w(IAM, ^uint32(ICR_RXQ0|ICR_RXQ1|ICR_TXQ0|ICR_TXQ1)|ICR_OTHER)
	r.w(EIAC, ICR_RXQ0|ICR_TXQ0)
}

// migrateTo saves the quiesced NIC of r and loads it into a fresh NIC with
// a copy of r's guest memory, which it returns quiesced, as a destination
// is until its VMM runs it.
func (r *dpRig) migrateTo(t *testing.T) *dpRig {
	t.Helper()
	r.n.Quiesce()
	b, err := migration.Save(nil, r.n, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newRig(t, r.irq.Mode(), Config{})
	copy(dst.mem.b, r.mem.b)
	dst.n.Quiesce()
	if err := migration.Load(b, dst.n, migration.Limits{}, nil); err != nil {
		t.Fatal(err)
	}
	dst.irq.mu.Lock()
	dst.irq.msix, dst.irq.msi = [numMSIXVecs]int{}, 0
	dst.irq.mu.Unlock()
	return dst
}

// A TX completion message sent just before a migration stops the NIC, and
// not yet handled by the guest (its vCPUs stopped first), is lost with the
// source VMM's eventfd. The destination sends it again when it runs,
// without any access from the guest; otherwise the driver's TX ring fills
// and only the stack's watchdog, resetting the NIC, gets it going again.
// A message the guest did handle (it enabled the vector's cause again) is
// not repeated.
func TestMigrationResendsUnhandledMessages(t *testing.T) {
	for _, handled := range []bool{false, true} {
		r := newRig(t, device.IRQModeMSIX, Config{})
		r.linuxMSIX()
		r.mem.put(dpTxBuf, bytes.Repeat([]byte{0x5a}, 100))
		r.pushTX(txLegacyDesc(dpTxBuf, 100, txdCmdEOP|txdCmdRS|txdCmdIDE, 0, 0))
		// MSI-X ignores the TX delay: the message goes with the write-back.
		if r.irq.vec(1) == 0 {
			t.Fatal("no TX message before the migration")
		}
		if handled {
			r.w(IMS, ICR_TXQ0) // the TX handler's last step
		}
		dst := r.migrateTo(t)
		dst.n.Resume()
		got := dst.irq.vec(1)
		switch {
		case !handled && got != 1:
			t.Errorf("unhandled TX message: the destination sent vector 1 %d times when it ran, want 1", got)
		case handled && got != 0:
			t.Errorf("handled TX message: the destination sent vector 1 %d times, want 0", got)
		}
		if other := dst.irq.vec(0) + dst.irq.vec(2); other != 0 {
			t.Errorf("handled=%v: the destination sent %d messages on other vectors", handled, other)
		}
	}
}

// The same for MSI: a message whose handler has not read ICR is sent again.
func TestMigrationResendsUnhandledMSI(t *testing.T) {
	r := newRig(t, device.IRQModeMSI, Config{})
	r.w(ICS, ICR_TXDW)
	if r.irq.total() != 1 {
		t.Fatalf("%d messages, want 1", r.irq.total())
	}
	dst := r.migrateTo(t)
	dst.n.Resume()
	if dst.irq.total() != 1 {
		t.Errorf("the destination sent %d MSI messages when it ran, want 1", dst.irq.total())
	}
	r2 := newRig(t, device.IRQModeMSI, Config{})
	r2.w(ICS, ICR_TXDW)
	r2.rd(ICR) // the handler ran
	dst2 := r2.migrateTo(t)
	dst2.n.Resume()
	if dst2.irq.total() != 0 {
		t.Errorf("after ICR was read the destination sent %d MSI messages, want 0", dst2.irq.total())
	}
}

// A vector the guest unmapped after its message went out is not repeated:
// no handler waits for it.
func TestMigrationForgetsStaleMessages(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.linuxMSIX()
	r.w(ICS, ICR_TXQ0) // vector 1 (dpIVAR maps TX queue 0 there)
	if r.irq.vec(1) == 0 {
		t.Fatal("no TX message")
	}
	r.w(IVAR, dpIVAR&^0xF00|0x800) // TX queue 0 now on vector 0
	dst := r.migrateTo(t)
	dst.n.Resume()
	if got := dst.irq.vec(1); got != 0 {
		t.Errorf("a message of an unmapped vector was repeated %d times", got)
	}
}
