package e1000e

import (
	"testing"
	"time"

	"e1000e-vfu/device"
)

func TestStatsClearOnRead(t *testing.T) {
	n := newTestNIC(t)
	n.mu.Lock()
	n.addStat(GPRC, 3)
	n.addStat(GORCL, 0x1_0000_0005)
	n.addStat(TPT, 0xFFFFFFFF)
	n.addStat(TPT, 10) // saturates
	n.mu.Unlock()
	if got := n.ReadReg(GPRC); got != 3 {
		t.Fatalf("GPRC = %d", got)
	}
	if got := n.ReadReg(GPRC); got != 0 {
		t.Fatalf("GPRC not cleared: %d", got)
	}
	if got := n.ReadReg(TPT); got != 0xFFFFFFFF {
		t.Fatalf("TPT did not saturate: %#x", got)
	}
	if lo := n.ReadReg(GORCL); lo != 5 {
		t.Fatalf("GORCL = %d", lo)
	}
	if lo := n.ReadReg(GORCL); lo != 5 {
		t.Fatal("reading the low half cleared it")
	}
	if hi := n.ReadReg(GORCH); hi != 1 {
		t.Fatalf("GORCH = %d", hi)
	}
	if n.ReadReg(GORCL) != 0 || n.ReadReg(GORCH) != 0 {
		t.Fatal("reading the high half did not clear the pair")
	}
	n.mu.Lock()
	n.addStat(TOTL, ^uint64(0)-1)
	n.addStat(TOTL, 5)
	n.mu.Unlock()
	if n.ReadReg(TOTL) != 0xFFFFFFFF || n.ReadReg(TOTH) != 0xFFFFFFFF {
		t.Fatal("64-bit counter did not saturate")
	}
	n.WriteReg(GPTC, 7)
	if n.ReadReg(GPTC) != 0 {
		t.Fatal("statistics are writable")
	}
	// The administrator's view does not clear.
	n.mu.Lock()
	n.addStat(GPRC, 9)
	n.addStat(GORCL, 1<<33)
	n.mu.Unlock()
	for i := 0; i < 2; i++ {
		s := n.Stats()
		if s["GPRC"] != 9 || s["GORC"] != 1<<33 {
			t.Fatalf("Stats() = GPRC %d GORC %d", s["GPRC"], s["GORC"])
		}
		if _, ok := s["GORCH"]; ok {
			t.Fatal("Stats() lists a high half")
		}
	}
}

func TestNVMAndEERD(t *testing.T) {
	n := newTestNIC(t)
	n.WriteReg(EERD, 64<<eerdAddrShift|EERD_START)
	if v := n.ReadReg(EERD); v&EERD_DONE == 0 || v>>16 != 0xFFFF {
		t.Fatalf("EERD beyond NVM = %#x", v)
	}
	// EEWR writes a word; EERD reads it back.
	n.WriteReg(EEWR, 0xBEEF<<16|0x30<<eerdAddrShift|EERD_START)
	n.WriteReg(EERD, 0x30<<eerdAddrShift|EERD_START)
	if v := n.ReadReg(EERD); v>>16 != 0xBEEF {
		t.Fatalf("EEWR/EERD round trip %#x", v)
	}
	// EECD: read-only presence bits hold, REQ is granted.
	n.WriteReg(EECD, EECD_REQ|eecdFlash)
	v := n.ReadReg(EECD)
	if v&(EECD_PRES|EECD_AUTO_RD) != EECD_PRES|EECD_AUTO_RD || v&EECD_GNT == 0 || v&eecdFlash != 0 {
		t.Fatalf("EECD = %#x", v)
	}
	n.WriteReg(EECD, 0)
	if n.ReadReg(EECD)&EECD_GNT != 0 {
		t.Fatal("GNT held without REQ")
	}
}

func TestSoftwareResetKeepsAndRestores(t *testing.T) {
	n := newTestNIC(t)
	n.WriteReg(PBA, 0x10)
	n.WriteReg(RDBAL0, 0x1000)
	n.WriteReg(RA, 0)
	n.WriteReg(CTRL, CTRL_SLU|CTRL_RST)
	if n.ReadReg(PBA)&0xFFFF != 0x10 {
		t.Fatal("PBA lost in software reset")
	}
	if n.ReadReg(RDBAL0) != 0 {
		t.Fatal("RDBAL0 kept over software reset")
	}
	if n.ReadReg(RA+4)&RAH_AV == 0 || n.ReadReg(RA) == 0 {
		t.Fatal("RAR0 not reloaded from NVM")
	}
	// QEMU's own test: STATUS shows link up at 1000 Mb/s right after reset.
	st := n.ReadReg(STATUS)
	if st&STATUS_LU == 0 || st&STATUS_SPEED_MASK != STATUS_SPEED_1000 {
		t.Fatalf("STATUS %#x after reset", st)
	}
}

func TestSWSMSemaphore(t *testing.T) {
	n := newTestNIC(t)
	if n.ReadReg(SWSM)&SWSM_SMBI != 0 {
		t.Fatal("SMBI taken at reset")
	}
	if n.ReadReg(SWSM)&SWSM_SMBI == 0 {
		t.Fatal("first read did not take SMBI")
	}
	n.WriteReg(SWSM, 0)
	if n.ReadReg(SWSM)&SWSM_SMBI != 0 {
		t.Fatal("SMBI not released by write")
	}
	if n.ReadReg(FWSM) != 0 {
		t.Fatal("FWSM claims firmware")
	}
}

func TestPHYAccess(t *testing.T) {
	n, _ := newNICWith(t, device.IRQModeINTx, Config{})
	d := driver{t, n}
	// Wrong PHY address: ERROR.
	n.WriteReg(MDIC, 2<<mdicPHYShift|MDIC_OP_READ)
	if v := n.ReadReg(MDIC); v&MDIC_ERROR == 0 || v&MDIC_READY == 0 {
		t.Fatalf("MDIC to PHY 2 = %#x", v)
	}
	// Pages: copper status is on page 0; page 2 register 0x13 exists,
	// page 4 has nothing at 0x10, page 9 does not exist.
	if v, ok := d.readPHY(phyCopStat1); !ok || v&0x0400 == 0 {
		t.Fatalf("copper status %#x ok=%v", v, ok)
	}
	d.writePHY(phyPage, 2)
	if _, ok := d.readPHY(0x13); !ok {
		t.Fatal("page 2 register 0x13 unreadable")
	}
	if _, ok := d.readPHY(phyID1); !ok {
		t.Fatal("ID1 must answer on any page")
	}
	d.writePHY(phyPage, 4)
	if _, ok := d.readPHY(0x10); ok {
		t.Fatal("page 4 register 0x10 answered")
	}
	d.writePHY(phyPage, 9)
	if _, ok := d.readPHY(0x11); ok {
		t.Fatal("page 9 answered")
	}
	d.writePHY(phyPage, 0)
	if d.writePHY(phyID1, 1) {
		t.Fatal("ID1 writable")
	}
	// MDIC.INT_EN raises MDAC.
	n.WriteReg(MDIC, phyBMSR<<mdicRegShift|phyAddr<<mdicPHYShift|MDIC_OP_READ|MDIC_INT_EN)
	if n.ReadReg(ICR)&ICR_MDAC == 0 {
		t.Fatal("MDAC not raised")
	}
}

func TestLinkAndAutoneg(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeINTx, Config{AutonegDelay: 2 * time.Millisecond, TimerClock: clk})
	d := driver{t, n}
	n.WriteReg(IMS, ICR_LSC)
	n.SetLink(false)
	if n.ReadReg(STATUS)&STATUS_LU != 0 {
		t.Fatal("link still up")
	}
	if !irq.snapshot().intx {
		t.Fatal("no LSC on link down")
	}
	n.ReadReg(ICR)
	if v, _ := d.readPHY(phyBMSR); v&bmsrLinkUp != 0 {
		t.Fatal("BMSR shows link while down")
	}
	// Restarting autonegotiation without carrier does not bring the link up.
	d.writePHY(phyBMCR, 0x1140|bmcrRestartAN)
	clk.advance(time.Second)
	if n.LinkUp() {
		t.Fatal("link up without carrier")
	}
	n.SetLink(true)
	clk.advance(2*time.Millisecond - 1)
	if n.LinkUp() {
		t.Fatal("link up before autonegotiation ended")
	}
	clk.advance(1)
	if !n.LinkUp() {
		t.Fatal("link not up when autonegotiation ended")
	}
	if n.ReadReg(ICR)&ICR_LSC == 0 {
		t.Fatal("no LSC on link up")
	}
	if v, _ := d.readPHY(phyBMCR); v&bmcrRestartAN != 0 {
		t.Fatal("AN restart bit did not clear itself")
	}
	// Loopback modes are reported to the datapath.
	n.WriteReg(RCTL, 0x40)
	n.mu.Lock()
	lb := n.loopback()
	n.mu.Unlock()
	if !lb {
		t.Fatal("RCTL.LBM not reported as loopback")
	}
}

func TestIndirectAccessBAR2Regs(t *testing.T) {
	// Covered with the PCI glue; here only the register path it uses.
	n := newTestNIC(t)
	n.WriteReg(IMS, 0xFFFFFFFF)
	if got := n.ReadReg(IMS); got != imsValid {
		t.Fatalf("IMS accepted invalid bits: %#x", got)
	}
	n.WriteReg(IMC, 0xFFFFFFFF)
	if n.ReadReg(IMS) != 0 || n.ReadReg(IMC) != 0 {
		t.Fatal("IMC did not clear, or reads non-zero")
	}
}

// FuzzRegisterWrites writes random values at random offsets, reading in
// between: no panic, and the NIC keeps its invariants.
func FuzzRegisterWrites(f *testing.F) {
	f.Add([]byte{0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff})             // CTRL.RST
	f.Add([]byte{0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x20, 0x08})             // MDIC read
	f.Add([]byte{0x20, 0x28, 0x00, 0x00, 0xff, 0xff, 0x00, 0x80, 0x00, 0xc0}) // RDTR FPD
	f.Add([]byte{0x14, 0x00, 0x00, 0x00, 0x01, 0x10, 0x00, 0x00})             // EERD
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := New(Config{AutonegDelay: time.Millisecond, Interrupter: &fakeIRQ{mode: device.IRQMode(len(data) % 4)}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		for i := 0; i+8 <= len(data) && i < 8*256; i += 8 {
			off := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2]&1)<<16
			off &^= 3
			v := uint32(data[i+4]) | uint32(data[i+5])<<8 | uint32(data[i+6])<<16 | uint32(data[i+7])<<24
			if data[i+3]&1 == 0 {
				n.WriteReg(off, v)
			} else {
				n.ReadReg(off)
			}
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.mac[EECD>>2]&(EECD_PRES|EECD_AUTO_RD) != EECD_PRES|EECD_AUTO_RD {
			t.Fatal("EECD lost its read-only bits")
		}
		if n.mac[CTRL>>2]&CTRL_RST != 0 {
			t.Fatal("CTRL.RST stuck")
		}
		if n.phy[0][phyID1] != bmeID1 {
			t.Fatal("PHY id changed")
		}
	})
}
