package e1000e

import (
	"testing"
	"time"

	"e1000e-vfu/device"
)

func TestICRReadClearRules(t *testing.T) {
	t.Run("IMS zero clears", func(t *testing.T) {
		n, _ := newNICWith(t, device.IRQModeINTx, Config{})
		n.WriteReg(ICS, ICR_TXDW|ICR_RXT0)
		if got := n.ReadReg(ICR); got != ICR_TXDW|ICR_RXT0|ICR_INT_ASSERTED {
			t.Fatalf("ICR = %#x", got)
		}
		if got := n.ReadReg(ICR); got != 0 {
			t.Fatalf("ICR not cleared with IMS=0: %#x", got)
		}
	})
	t.Run("masked causes clear too", func(t *testing.T) {
		n, irq := newNICWith(t, device.IRQModeINTx, Config{})
		n.WriteReg(IMS, ICR_LSC)
		n.WriteReg(ICS, ICR_TXDW)
		if irq.snapshot().intx {
			t.Fatal("INTx asserted for a masked cause")
		}
		if got := n.ReadReg(ICR); got != ICR_TXDW|ICR_INT_ASSERTED {
			t.Fatalf("ICR = %#x, want TXDW with INT_ASSERTED", got)
		}
		if got := n.ReadReg(ICR); got != 0 {
			t.Fatalf("ICR not cleared: %#x", got)
		}
	})
	t.Run("asserted clears and lowers INTx", func(t *testing.T) {
		n, irq := newNICWith(t, device.IRQModeINTx, Config{})
		n.WriteReg(IMS, ICR_TXDW)
		n.WriteReg(ICS, ICR_TXDW|ICR_RXT0)
		if s := irq.snapshot(); !s.intx || s.rises != 1 {
			t.Fatalf("INTx %v rises %d", s.intx, s.rises)
		}
		if got := n.ReadReg(ICS); got != ICR_TXDW|ICR_RXT0|ICR_INT_ASSERTED {
			t.Fatalf("ICS mirror = %#x", got)
		}
		if got := n.ReadReg(ICR); got != ICR_TXDW|ICR_RXT0|ICR_INT_ASSERTED {
			t.Fatalf("ICR = %#x", got)
		}
		if got := n.ReadReg(ICR); got != 0 {
			t.Fatalf("ICR after read = %#x", got)
		}
		if irq.snapshot().intx {
			t.Fatal("INTx still asserted")
		}
		if n.ReadReg(IAC) != 1 {
			t.Fatal("IAC did not count the assertion")
		}
	})
	t.Run("IAME auto-masks", func(t *testing.T) {
		n, _ := newNICWith(t, device.IRQModeMSI, Config{})
		n.WriteReg(CTRL_EXT, CTRL_EXT_IAME)
		n.WriteReg(IAM, ICR_RXT0)
		n.WriteReg(IMS, ICR_RXT0|ICR_TXDW)
		n.WriteReg(ICS, ICR_RXT0)
		n.ReadReg(ICR)
		if got := n.ReadReg(IMS); got != ICR_TXDW {
			t.Fatalf("IMS = %#x after IAME read, want TXDW", got)
		}
	})
	t.Run("write 1 clears, OTHER clears its causes", func(t *testing.T) {
		n, _ := newNICWith(t, device.IRQModeMSIX, Config{})
		n.WriteReg(IMS, ICR_TXQ0)
		n.WriteReg(ICS, ICR_LSC|ICR_RXO|ICR_TXDW)
		n.WriteReg(ICR, ICR_TXDW)
		if got := n.ReadReg(ICS); got&ICR_TXDW != 0 || got&ICR_LSC == 0 {
			t.Fatalf("ICS %#x", got)
		}
		n.WriteReg(ICR, ICR_OTHER)
		if got := n.ReadReg(ICS); got&(ICR_LSC|ICR_RXO|ICR_OTHER) != 0 {
			t.Fatalf("OTHER write left %#x", got)
		}
	})
}

func TestMSIXRouting(t *testing.T) {
	n, irq := newNICWith(t, device.IRQModeMSIX, Config{})
	n.WriteReg(IVAR, 0x800A0908)
	n.WriteReg(EIAC, ICR_RXQ0|ICR_TXQ0)
	n.WriteReg(IMS, ICR_RXQ0|ICR_TXQ0|ICR_OTHER|ICR_LSC)
	n.mu.Lock()
	n.raise(ICR_RXT0 | ICR_RXQ0)
	n.mu.Unlock()
	if s := irq.snapshot(); s.msix != [5]int{1, 0, 0, 0, 0} {
		t.Fatalf("vectors %v after RXQ0", s.msix)
	}
	// EIAC cleared RXQ0 at once, so a second RX event sends again.
	if n.ReadReg(ICS)&ICR_RXQ0 != 0 {
		t.Fatal("EIAC did not auto-clear RXQ0")
	}
	n.mu.Lock()
	n.raise(ICR_RXQ0)
	n.raise(ICR_TXQ0 | ICR_TXDW)
	n.mu.Unlock()
	if s := irq.snapshot(); s.msix != [5]int{2, 1, 0, 0, 0} {
		t.Fatalf("vectors %v", s.msix)
	}
	// OTHER is not auto-cleared: a second LSC while OTHER is pending
	// does not send again until the driver clears it.
	n.mu.Lock()
	n.raise(ICR_LSC)
	n.raise(ICR_LSC)
	n.mu.Unlock()
	if s := irq.snapshot(); s.msix[2] != 1 {
		t.Fatalf("OTHER vector fired %d times", s.msix[2])
	}
	n.ReadReg(ICR)
	n.mu.Lock()
	n.raise(ICR_LSC)
	n.mu.Unlock()
	if s := irq.snapshot(); s.msix[2] != 2 {
		t.Fatalf("OTHER vector fired %d times after ICR read", s.msix[2])
	}
	// An invalid IVAR entry sends nothing.
	n.WriteReg(IVAR, 0)
	n.WriteReg(IMS, ICR_TXQ1)
	n.mu.Lock()
	n.raise(ICR_TXQ1)
	n.mu.Unlock()
	if s := irq.snapshot(); s.msix[3] != 0 || s.msix[4] != 0 {
		t.Fatalf("invalid IVAR delivered: %v", s.msix)
	}
	// PBA_CLR: enabling a cause clears its vector's pending bit.
	n.WriteReg(IVAR, 0x800A0908)
	n.WriteReg(CTRL_EXT, CTRL_EXT_PBA_CLR)
	n.WriteReg(IMS, ICR_RXQ0)
	if s := irq.snapshot(); s.cleared[0] != 1 {
		t.Fatalf("pending bits cleared %v", s.cleared)
	}
	n.WriteReg(PBACLR, 0x6)
	if s := irq.snapshot(); s.cleared[1] != 1 || s.cleared[2] != 1 {
		t.Fatalf("PBACLR cleared %v", s.cleared)
	}
}

func TestMSIEdgeAndThrottle(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeMSI, Config{TimerClock: clk})
	n.WriteReg(IMS, ICR_TXDW|ICR_RXT0)
	n.mu.Lock()
	n.raise(ICR_TXDW)
	n.raise(ICR_TXDW) // already signalled: no second message
	n.mu.Unlock()
	if irq.snapshot().msi != 1 {
		t.Fatalf("MSI sent %d times", irq.snapshot().msi)
	}
	n.ReadReg(ICR)
	// ITR of 4000 x 256 ns = 1.024 ms: the second cause waits for it.
	n.WriteReg(ITR, 4000)
	n.mu.Lock()
	n.raise(ICR_RXT0)
	n.readReg(ICR)
	n.raise(ICR_TXDW)
	n.mu.Unlock()
	clk.advance(4000*itrUnit - 1)
	if early := irq.snapshot().msi; early != 2 {
		t.Fatalf("throttled MSI sent early: %d", early)
	}
	clk.advance(1)
	if irq.snapshot().msi != 3 {
		t.Fatalf("throttled MSI not sent when the interval ended: %d", irq.snapshot().msi)
	}
	clk.advance(time.Second)
	if irq.snapshot().msi != 3 {
		t.Fatalf("throttle timer fired more than once: %d", irq.snapshot().msi)
	}
}

func TestRXDelayTimersAndFPD(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeINTx, Config{TimerClock: clk})
	n.WriteReg(IMS, ICR_RXT0|ICR_LSC)
	// RDTR = 0xFFFF units (~67 ms): the cause waits.
	n.WriteReg(RDTR, 0xFFFF)
	n.mu.Lock()
	n.raiseRX(ICR_RXT0)
	n.mu.Unlock()
	if irq.snapshot().intx || n.ReadReg(ICS) != 0 {
		t.Fatal("delayed RX cause delivered at once")
	}
	// FPD flushes at once.
	n.WriteReg(RDTR, 0xFFFF|RDTR_FPD)
	if !irq.snapshot().intx || n.ReadReg(ICS)&ICR_RXT0 == 0 {
		t.Fatal("FPD did not flush the delayed cause")
	}
	if n.ReadReg(RDTR) != 0xFFFF {
		t.Fatal("FPD bit stored")
	}
	n.ReadReg(ICR)

	// A short RDTR with RADV: fires exactly once.
	n.WriteReg(RDTR, 50)
	n.WriteReg(RADV, 100)
	n.mu.Lock()
	n.raiseRX(ICR_RXT0)
	n.mu.Unlock()
	clk.advance(50*delayUnit - 1)
	if s := irq.snapshot(); s.rises != 1 || s.intx {
		t.Fatalf("RDTR fired early: rises %d intx %v", s.rises, s.intx)
	}
	clk.advance(1)
	if irq.snapshot().rises != 2 {
		t.Fatalf("RDTR expiry: rises %d", irq.snapshot().rises)
	}
	n.ReadReg(ICR)
	clk.advance(time.Second) // RADV's end among it
	if s := irq.snapshot(); s.rises != 2 || s.intx {
		t.Fatalf("delay timer fired again: rises %d intx %v", s.rises, s.intx)
	}

	// A non-delayable cause carries the delayed ones with it.
	n.WriteReg(RDTR, 0xFFFF)
	n.mu.Lock()
	n.raiseRX(ICR_RXT0)
	n.raise(ICR_LSC)
	n.mu.Unlock()
	if got := n.ReadReg(ICR); got&(ICR_RXT0|ICR_LSC) != ICR_RXT0|ICR_LSC {
		t.Fatalf("ICR %#x: delayed cause not carried", got)
	}
}

func TestTXDelayOnlyWithIDE(t *testing.T) {
	n, irq := newNICWith(t, device.IRQModeMSI, Config{})
	n.WriteReg(IMS, ICR_TXDW)
	n.WriteReg(TIDV, 0xFFFF)
	n.mu.Lock()
	n.raiseTX(ICR_TXDW, true)
	n.mu.Unlock()
	if irq.snapshot().msi != 0 {
		t.Fatal("IDE cause delivered at once")
	}
	n.WriteReg(TIDV, 0xFFFF|TIDV_FPD)
	if irq.snapshot().msi != 1 {
		t.Fatal("TIDV FPD did not flush")
	}
	n.ReadReg(ICR)
	n.mu.Lock()
	n.raiseTX(ICR_TXDW, false)
	n.mu.Unlock()
	if irq.snapshot().msi != 2 {
		t.Fatal("cause without IDE was delayed")
	}
	// MSI-X ignores the delay timers even with IDE.
	n2, irq2 := newNICWith(t, device.IRQModeMSIX, Config{})
	n2.WriteReg(IVAR, 0x800A0908)
	n2.WriteReg(IMS, ICR_TXQ0)
	n2.WriteReg(TIDV, 0xFFFF)
	n2.mu.Lock()
	n2.raiseTX(ICR_TXQ0|ICR_TXDW, true)
	n2.mu.Unlock()
	if irq2.snapshot().msix[1] != 1 {
		t.Fatal("MSI-X TX vector delayed")
	}
}

// TestModeSwitchWhileDelayed: switching to MSI-X while a delay timer runs
// must neither crash nor lose the cause.
func TestModeSwitchWhileDelayed(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeMSI, Config{TimerClock: clk})
	n.WriteReg(IMS, ICR_RXT0|ICR_RXQ0)
	n.WriteReg(IVAR, 0x800A0908)
	n.WriteReg(RDTR, 200)
	n.mu.Lock()
	n.raiseRX(ICR_RXT0 | ICR_RXQ0)
	irq.mu.Lock()
	irq.mode = device.IRQModeMSIX
	irq.mu.Unlock()
	n.irqModeChanged()
	n.mu.Unlock()
	if irq.snapshot().msi != 0 {
		t.Fatal("delayed cause delivered before its timer")
	}
	clk.advance(200 * delayUnit)
	if irq.snapshot().msix[0] != 1 {
		t.Fatal("delayed cause lost over the mode switch")
	}
}

// TestLinuxMSISelfTest replays e1000_test_msi_interrupt: with the normal
// enable mask, an ICS of RXSEQ must produce an MSI, or the driver falls
// back to INTx.
func TestLinuxMSISelfTest(t *testing.T) {
	n, irq := newNICWith(t, device.IRQModeMSI, Config{})
	n.ReadReg(ICR)
	n.WriteReg(IMS, ICR_RXT0|ICR_TXDW|ICR_RXDMT0|ICR_RXSEQ|ICR_LSC)
	n.WriteReg(ICS, ICR_RXSEQ)
	if irq.snapshot().msi != 1 {
		t.Fatal("MSI self-test interrupt not delivered")
	}
	if n.ReadReg(ICR)&ICR_RXSEQ == 0 {
		t.Fatal("RXSEQ missing from ICR")
	}
}

// TestMSIXOtherCausesSignalEach replays Linux's e1000_msix_other, which
// re-enables only OTHER and LSC: an RXO left in ICR must not swallow a
// later LSC.
func TestMSIXOtherCausesSignalEach(t *testing.T) {
	n, irq := newNICWith(t, device.IRQModeMSIX, Config{})
	n.WriteReg(IVAR, 0x800A0908)
	n.WriteReg(IAM, ^uint32(eiacMask)|ICR_OTHER)
	n.WriteReg(CTRL_EXT, CTRL_EXT_EIAME|CTRL_EXT_PBA_CLR)
	n.WriteReg(EIAC, ICR_RXQ0|ICR_TXQ0)
	n.WriteReg(IMS, ICR_RXQ0|ICR_TXQ0|ICR_OTHER|ICR_LSC)
	n.mu.Lock()
	n.raise(ICR_RXO)
	n.mu.Unlock()
	if irq.snapshot().msix[2] != 1 {
		t.Fatal("RXO did not signal the other vector")
	}
	// The handler: read ICR, re-enable OTHER|LSC. RXO is not enabled, so
	// the read does not clear it.
	if icr := n.ReadReg(ICR); icr&ICR_RXO == 0 {
		t.Fatalf("ICR %#x", icr)
	}
	n.WriteReg(IMS, ICR_OTHER|ICR_LSC)
	if irq.snapshot().msix[2] != 1 {
		t.Fatal("re-enabling OTHER resent an old cause")
	}
	n.mu.Lock()
	n.raise(ICR_LSC)
	n.mu.Unlock()
	if irq.snapshot().msix[2] != 2 {
		t.Fatalf("LSC swallowed: other vector fired %d times", irq.snapshot().msix[2])
	}
}

// BenchmarkRaiseMSIX is the per-frame interrupt path in MSI-X mode: cause,
// IVAR routing, EIAC auto-clear.
func BenchmarkRaiseMSIX(b *testing.B) {
	n, _ := newNICWith(b, device.IRQModeMSIX, Config{})
	n.WriteReg(IVAR, 0x800A0908)
	n.WriteReg(EIAC, ICR_RXQ0|ICR_TXQ0)
	n.WriteReg(IMS, ICR_RXQ0|ICR_TXQ0|ICR_OTHER|ICR_LSC)
	b.ReportAllocs()
	for b.Loop() {
		n.mu.Lock()
		n.raiseRX(ICR_RXT0 | ICR_RXQ0)
		n.mu.Unlock()
	}
}

// TestINTxThrottle: with ITR, an INTx assertion that comes while the
// interval runs waits for its end; one that is acknowledged meanwhile does
// not come at all.
func TestINTxThrottle(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeINTx, Config{TimerClock: clk})
	n.WriteReg(ITR, 4000)
	n.WriteReg(IMS, ICR_TXDW)
	n.mu.Lock()
	n.raise(ICR_TXDW) // asserts, starts the interval
	n.readReg(ICR)    // deasserts
	n.raise(ICR_TXDW) // held back
	held := irq.snapshot()
	n.mu.Unlock()
	if held.rises != 1 || held.intx {
		t.Fatalf("rises %d intx %v inside the interval", held.rises, held.intx)
	}
	clk.advance(4000 * itrUnit)
	if s := irq.snapshot(); s.rises != 2 || !s.intx {
		t.Fatalf("throttled INTx: rises %d intx %v when the interval ended", s.rises, s.intx)
	}

	n.mu.Lock()
	n.readReg(ICR)
	n.raise(ICR_TXDW) // held back: the assertion started a new interval
	n.readReg(ICR)    // and acknowledged before it ends
	n.mu.Unlock()
	clk.advance(time.Second)
	if s := irq.snapshot(); s.rises != 2 || s.intx {
		t.Fatalf("stale INTx assertion: rises %d (was 2) intx %v", s.rises, s.intx)
	}
}

// TestEITRThrottle: per-vector moderation in MSI-X mode.
func TestEITRThrottle(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeMSIX, Config{TimerClock: clk})
	n.WriteReg(IVAR, 0x800A0908)
	n.WriteReg(EIAC, ICR_RXQ0|ICR_TXQ0)
	n.WriteReg(IMS, ICR_RXQ0|ICR_TXQ0)
	n.WriteReg(EITR0, 4000) // vector 0 only
	n.mu.Lock()
	n.raise(ICR_RXQ0)
	n.raise(ICR_RXQ0)
	n.raise(ICR_RXQ0) // one held message, however many causes
	n.raise(ICR_TXQ0) // vector 1 is not throttled
	early := irq.snapshot()
	n.mu.Unlock()
	if early.msix[0] != 1 || early.msix[1] != 1 {
		t.Fatalf("vectors %v inside the interval", early.msix)
	}
	clk.advance(4000 * itrUnit)
	if s := irq.snapshot(); s.msix[0] != 2 {
		t.Fatalf("vector 0 fired %d times when its interval ended", s.msix[0])
	}
	clk.advance(time.Second)
	if s := irq.snapshot(); s.msix[0] != 2 {
		t.Fatalf("vector 0 fired %d times", s.msix[0])
	}
}

// TestIMSFlushesTimers: writing every cause to IMS with
// INT_TIMERS_CLEAR_ENA delivers what the delay timers hold.
func TestIMSFlushesTimers(t *testing.T) {
	n, irq := newNICWith(t, device.IRQModeMSI, Config{})
	n.WriteReg(CTRL_EXT, CTRL_EXT_INT_TIMERS_CLEAR_ENA)
	n.WriteReg(RDTR, 0xFFFF)
	n.mu.Lock()
	n.raiseRX(ICR_RXT0)
	n.mu.Unlock()
	n.WriteReg(IMS, ICR_RXT0)
	if irq.snapshot().msi != 0 {
		t.Fatal("partial IMS write flushed the timers")
	}
	n.WriteReg(IMS, 0xFFFFFFFF)
	if irq.snapshot().msi != 1 || n.ReadReg(ICR)&ICR_RXT0 == 0 {
		t.Fatal("full IMS write did not flush the delayed cause")
	}
}

func TestEERSTReloadsAndClears(t *testing.T) {
	n := newTestNIC(t)
	n.WriteReg(RA, 0)
	n.WriteReg(RA+4, 0)
	n.WriteReg(CTRL_EXT, CTRL_EXT_EE_RST|CTRL_EXT_DRV_LOAD)
	if v := n.ReadReg(CTRL_EXT); v != CTRL_EXT_DRV_LOAD {
		t.Fatalf("CTRL_EXT %#x: EE_RST did not clear itself", v)
	}
	if n.ReadReg(RA+4)&RAH_AV == 0 || n.ReadReg(RA) == 0 {
		t.Fatal("EE_RST did not reload RAR0")
	}
}
