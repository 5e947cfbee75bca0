package e1000e

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/device"
)

// fakeIRQ records deliveries. It is called with the NIC's mutex held, so
// it has its own lock for the test goroutine to read it.
type fakeIRQ struct {
	mu      sync.Mutex
	mode    device.IRQMode
	msix    [numMSIXVecs]int
	msi     int
	intx    bool
	rises   int
	cleared [numMSIXVecs]int
}

func (f *fakeIRQ) Mode() device.IRQMode { f.mu.Lock(); defer f.mu.Unlock(); return f.mode }
func (f *fakeIRQ) MSIX(v int)           { f.mu.Lock(); f.msix[v]++; f.mu.Unlock() }
func (f *fakeIRQ) MSI()                 { f.mu.Lock(); f.msi++; f.mu.Unlock() }
func (f *fakeIRQ) SetINTx(l bool) {
	f.mu.Lock()
	if l && !f.intx {
		f.rises++
	}
	f.intx = l
	f.mu.Unlock()
}
func (f *fakeIRQ) ClearMSIXPending(v int) { f.mu.Lock(); f.cleared[v]++; f.mu.Unlock() }

func (f *fakeIRQ) snapshot() fakeIRQ {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeIRQ{mode: f.mode, msix: f.msix, msi: f.msi, intx: f.intx, rises: f.rises, cleared: f.cleared}
}

func newNICWith(t testing.TB, mode device.IRQMode, cfg Config) (*NIC, *fakeIRQ) {
	t.Helper()
	irq := &fakeIRQ{mode: mode}
	cfg.Interrupter = irq
	if cfg.AutonegDelay == 0 {
		cfg.AutonegDelay = 5 * time.Millisecond
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, irq
}

// driver mimics the register-level helpers of Linux's e1000e driver, with
// their bounded polling loops.
type driver struct {
	t *testing.T
	n *NIC
}

func (d driver) r(off uint32) uint32 { return d.n.ReadReg(off) }
func (d driver) w(off, v uint32)     { d.n.WriteReg(off, v) }
func (d driver) poll(off, mask, want uint32, tries int) bool {
	for i := 0; i < tries; i++ {
		if d.r(off)&mask == want {
			return true
		}
	}
	return false
}

// readNVM is e1000e_read_nvm_eerd.
func (d driver) readNVM(word uint32) uint16 {
	d.w(EERD, word<<eerdAddrShift|EERD_START)
	if !d.poll(EERD, EERD_DONE, EERD_DONE, 100000) {
		d.t.Fatalf("EERD for word %#x never completed", word)
	}
	return uint16(d.r(EERD) >> eerdDataShift)
}

// readPHY is e1000e_read_phy_reg_mdic, checking READY, ERROR and that the
// register field matches, as newer kernels do.
func (d driver) readPHY(reg uint32) (uint16, bool) {
	d.w(MDIC, reg<<mdicRegShift|phyAddr<<mdicPHYShift|MDIC_OP_READ)
	if !d.poll(MDIC, MDIC_READY, MDIC_READY, 640) {
		d.t.Fatalf("MDIC read of %#x not ready", reg)
	}
	v := d.r(MDIC)
	if v&MDIC_ERROR != 0 {
		return 0, false
	}
	if v&MDIC_REG_MASK>>mdicRegShift != reg {
		d.t.Fatalf("MDIC read offset error: %#x for %#x", v, reg)
	}
	return uint16(v), true
}

func (d driver) writePHY(reg uint32, v uint16) bool {
	d.w(MDIC, uint32(v)|reg<<mdicRegShift|phyAddr<<mdicPHYShift|MDIC_OP_WRITE)
	if !d.poll(MDIC, MDIC_READY, MDIC_READY, 640) {
		d.t.Fatalf("MDIC write of %#x not ready", reg)
	}
	return d.r(MDIC)&MDIC_ERROR == 0
}

// getSemaphore is e1000_get_hw_semaphore_82574.
func (d driver) getSemaphore() {
	ext := d.r(EXTCNF_CTRL)
	for i := 0; i < 10; i++ {
		ext |= EXTCNF_CTRL_MDIO_SW_OWNERSHIP
		d.w(EXTCNF_CTRL, ext)
		ext = d.r(EXTCNF_CTRL)
		if ext&EXTCNF_CTRL_MDIO_SW_OWNERSHIP != 0 {
			return
		}
	}
	d.t.Fatal("MDIO ownership semaphore not taken")
}

func (d driver) putSemaphore() {
	d.w(EXTCNF_CTRL, d.r(EXTCNF_CTRL)&^EXTCNF_CTRL_MDIO_SW_OWNERSHIP)
}

// TestLinuxProbeAndOpen replays the register sequence of the Linux e1000e
// driver's probe (reset_hw_82571, NVM checks, PHY id, MAC address) and open
// (init_hw, copper link setup, MSI-X configuration, irq enable), asserting
// what the driver asserts.
func TestLinuxProbeAndOpen(t *testing.T) {
	mac := []byte{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	// Autonegotiation must outlast the register sequence that follows its
	// restart, as QEMU's 500 ms does.
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeMSIX, Config{MAC: mac, RXFilterSize: -1, AutonegDelay: 300 * time.Millisecond, TimerClock: clk})
	d := driver{t, n}

	// e1000_init_nvm_params_82571: an EEPROM (not flash) of 64 words.
	eecd := d.r(EECD)
	if eecd>>15&3 == 3 {
		t.Fatalf("EECD %#x reports flash", eecd)
	}
	size := (eecd&eecdSizeEx)>>11 + 6
	if 1<<size != nvmWords {
		t.Fatalf("NVM size %d words, want %d", 1<<size, nvmWords)
	}

	// e1000_get_phy_id_82571 for the 82574.
	d.getSemaphore()
	id1, ok1 := d.readPHY(phyID1)
	id2, ok2 := d.readPHY(phyID2)
	d.putSemaphore()
	if !ok1 || !ok2 {
		t.Fatal("PHY id read failed")
	}
	if id := uint32(id1)<<16 | uint32(id2)&0xFFF0; id != 0x01410CB0 {
		t.Fatalf("PHY id %#x, want BME1000 0x01410CB0", id)
	}

	// e1000_reset_hw_82571.
	d.w(CTRL, d.r(CTRL)|CTRL_GIO_MASTER_DISABLE)
	if !d.poll(STATUS, STATUS_GIO_MASTER_ENABLE, 0, 800) {
		t.Fatal("GIO master never disabled")
	}
	d.w(IMC, 0xFFFFFFFF)
	d.w(RCTL, 0)
	d.w(TCTL, 0x8) // TCTL.PSP only
	d.getSemaphore()
	d.w(CTRL, d.r(CTRL)|CTRL_RST)
	d.putSemaphore()
	if !d.poll(EECD, EECD_AUTO_RD, EECD_AUTO_RD, 10) {
		t.Fatal("EECD.AUTO_RD never set after reset")
	}
	if d.r(CTRL)&CTRL_RST != 0 {
		t.Fatal("CTRL.RST did not clear itself")
	}
	if d.r(STATUS)&STATUS_GIO_MASTER_ENABLE == 0 {
		t.Fatal("GIO master still disabled after reset")
	}
	d.w(IMC, 0xFFFFFFFF)
	_ = d.r(ICR)
	if icr := d.r(ICR); icr != 0 {
		t.Fatalf("ICR %#x after reset and clear", icr)
	}

	// e1000e_validate_nvm_checksum_generic.
	var sum uint16
	for i := uint32(0); i < nvmChecksum+1; i++ {
		sum += d.readNVM(i)
	}
	if sum != nvmSum {
		t.Fatalf("NVM checksum %#x, want %#x", sum, nvmSum)
	}
	if d.readNVM(nvmDeviceID) != pciDeviceID || d.readNVM(nvmSubsysID) != pciDeviceID {
		t.Fatal("device id missing from NVM words 0x0B/0x0D")
	}
	if led := d.readNVM(nvmLEDSettings); led != 0xFFFF && led != 0 && led != 0xF746 {
		t.Fatalf("LED word %#x is not a default marker", led)
	}
	if d.readNVM(nvmInitCtrl2)&0x6000 == 0x2000 {
		t.Fatal("NVM claims manageability mode")
	}

	// e1000_read_mac_addr_generic: RAL0/RAH0.
	ral, rah := d.r(RA), d.r(RA+4)
	got := []byte{byte(ral), byte(ral >> 8), byte(ral >> 16), byte(ral >> 24), byte(rah), byte(rah >> 8)}
	if !bytes.Equal(got, mac) || rah&RAH_AV == 0 {
		t.Fatalf("RAR0 = %x (AV=%v), want %x", got, rah&RAH_AV != 0, mac)
	}

	// e1000_init_hw_82571 (parts): clear VFTA, RA 1-15 and MTA, read stats.
	for i := uint32(0); i < 128; i++ {
		d.w(VFTA+4*i, 0)
		d.w(MTA+4*i, 0)
	}
	for i := uint32(1); i < numRA; i++ {
		d.w(RA+8*i, 0)
		d.w(RA+8*i+4, 0)
	}
	for off := uint32(CRCERRS); off <= TSCTFC; off += 4 {
		_ = d.r(off)
	}

	// Copper link setup: PHY software reset, advertisement, AN restart.
	d.getSemaphore()
	bmcr, _ := d.readPHY(phyBMCR)
	d.writePHY(phyBMCR, bmcr|bmcrReset)
	if v, _ := d.readPHY(phyBMCR); v&bmcrReset != 0 {
		t.Fatal("BMCR reset did not clear itself")
	}
	if !d.writePHY(phyPage, 0) || !d.writePHY(phyCopCtl1, 0x0068) {
		t.Fatal("copper control write failed")
	}
	d.writePHY(phyANAR, 0x0DE1)
	d.writePHY(phyGCTRL, 0x0200)
	bmcr, _ = d.readPHY(phyBMCR)
	d.writePHY(phyBMCR, bmcr|bmcrANEnable|bmcrRestartAN)
	d.putSemaphore()
	d.w(CTRL_EXT, d.r(CTRL_EXT)|CTRL_EXT_DRV_LOAD)

	// e1000_configure_msix and e1000_irq_enable.
	//lint:ignore SA4016 each entry is valid bit|vector, vector 0 included, as the driver writes them
	ivar := uint32(0x8|0) | (0x8|1)<<8 | (0x8|2)<<16 | IVAR_INT_ON_ALL_WB
	d.w(IVAR, ivar)
	d.w(IAM, ^uint32(eiacMask)|ICR_OTHER)
	d.w(CTRL_EXT, d.r(CTRL_EXT)|CTRL_EXT_PBA_CLR|CTRL_EXT_EIAME)
	d.w(EIAC, ICR_RXQ0|ICR_TXQ0)
	d.w(IMS, ICR_RXQ0|ICR_TXQ0|ICR_OTHER|ICR_LSC)
	if got := d.r(IVAR); got != 0x800A0908 {
		t.Fatalf("IVAR %#x, want 0x800A0908", got)
	}
	if got := d.r(EIAC); got != 0x00500000 {
		t.Fatalf("EIAC %#x, want 0x00500000", got)
	}
	if got := d.r(IMS); got != 0x01500004 {
		t.Fatalf("IMS %#x, want 0x01500004", got)
	}

	// Autonegotiation completes: link up, LSC on the "other" vector 2.
	clk.advance(300 * time.Millisecond)
	if irq.snapshot().msix[2] != 1 {
		t.Fatalf("LSC: vector 2 fired %d times, want 1", irq.snapshot().msix[2])
	}
	// e1000_msix_other reads ICR and re-enables OTHER|LSC.
	icr := d.r(ICR)
	if icr&ICR_LSC == 0 || icr&ICR_OTHER == 0 {
		t.Fatalf("ICR %#x lacks LSC|OTHER", icr)
	}
	if d.r(IMS)&ICR_OTHER != 0 {
		t.Fatal("OTHER not auto-masked by EIAME/IAM")
	}
	d.w(IMS, ICR_OTHER|ICR_LSC)
	if d.r(ICR) != 0 {
		t.Fatal("ICR not cleared by the read")
	}
	// Watchdog: e1000e_phy_has_link_generic reads BMSR twice.
	d.readPHY(phyBMSR)
	bmsr, _ := d.readPHY(phyBMSR)
	if bmsr&bmsrLinkUp == 0 || bmsr&bmsrANComplete == 0 {
		t.Fatalf("BMSR %#x: link or AN incomplete", bmsr)
	}
	st := d.r(STATUS)
	if st&STATUS_LU == 0 || st&STATUS_SPEED_MASK != STATUS_SPEED_1000 || st&STATUS_FD == 0 {
		t.Fatalf("STATUS %#x: want link up, 1000 Mb/s, full duplex", st)
	}
	if lpa, _ := d.readPHY(phyANLPAR); lpa&anlparLPAck == 0 {
		t.Fatal("partner ability not acknowledged")
	}
	// The RX and TX vectors never fired.
	if s := irq.snapshot(); s.msix[0] != 0 || s.msix[1] != 0 {
		t.Fatalf("unexpected RX/TX vectors %v", s.msix)
	}
}
