package e1000e

import (
	"testing"

	"e1000e-vfu/device"
)

// QEMU's own e1000e test programs MSI-X without EIAC: every RX and TX
// write-back must still send its vector's message, not only the first.
func TestMSIXQueueCausesSignalWithoutEIAC(t *testing.T) {
	n, irq := newNICWith(t, device.IRQModeMSIX, Config{})
	n.WriteReg(IVAR, 0x80000908)
	n.WriteReg(IMS, ICR_RXQ0|ICR_TXQ0|ICR_OTHER|ICR_LSC)
	for i := 1; i <= 3; i++ {
		n.mu.Lock()
		n.raise(ICR_RXQ0)
		n.raise(ICR_TXQ0)
		n.mu.Unlock()
		if s := irq.snapshot(); s.msix[0] != i || s.msix[1] != i {
			t.Fatalf("round %d: vectors %v", i, s.msix)
		}
	}
}

func TestRegisterResetValuesThatDriversRelyOn(t *testing.T) {
	n, _ := newNICWith(t, device.IRQModeMSIX, Config{})
	if got := n.ReadReg(VET); got != 0x8100 {
		t.Errorf("VET = %#x, want 0x8100", got)
	}
	// Linux sets PCSD (bit 13) with RSS to get the hash in the write-back.
	n.WriteReg(RXCSUM, 0x2300)
	if got := n.ReadReg(RXCSUM); got != 0x2300 {
		t.Errorf("RXCSUM = %#x after writing 0x2300", got)
	}
}
