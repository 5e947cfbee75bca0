package e1000e

// The 82574's PHY (a BME1000), reached through MDIC at address 1. Registers
// 0x00-0x0F and the page register 0x16 are the same on every page; the
// others depend on the page selected in 0x16.
const (
	phyPages = 8
	phyRegs  = 32
	phyAddr  = 1

	phyBMCR     = 0x00 // basic mode control
	phyBMSR     = 0x01 // basic mode status
	phyID1      = 0x02
	phyID2      = 0x03
	phyANAR     = 0x04 // autonegotiation advertisement
	phyANLPAR   = 0x05 // link partner ability
	phyANER     = 0x06 // autonegotiation expansion
	phyNPTX     = 0x07 // next page transmit
	phyLPNP     = 0x08 // link partner next page
	phyGCTRL    = 0x09 // 1000BASE-T control
	phyGSTAT    = 0x0A // 1000BASE-T status
	phyESTAT    = 0x0F // extended status
	phyCopCtl1  = 0x10 // copper specific control 1
	phyCopStat1 = 0x11 // copper specific status 1
	phyCopIntEn = 0x12 // copper interrupt enable
	phyCopStat2 = 0x13 // copper specific status 2 (interrupt status)
	phyCopCtl3  = 0x14 // copper specific control 3
	phyRxErr    = 0x15 // receive error counter
	phyPage     = 0x16 // page select
	phyOEMBits  = 0x19 // OEM bits (bit 10 restarts autonegotiation)
	phyBias1    = 0x1D
	phyBias2    = 0x1E
	phyCopCtl2  = 0x1A // copper specific control 2

	bmcrReset       = 0x8000
	bmcrLoopback    = 0x4000
	bmcrANEnable    = 0x1000
	bmcrPowerDown   = 0x0800
	bmcrRestartAN   = 0x0200
	bmcrReserved    = 0x003F
	bmsrLinkUp      = 0x0004
	bmsrANComplete  = 0x0020
	anlparLPAck     = 0x4000
	oemRestartAN    = 0x0400
	bmeID1          = 0x0141
	bmeID2          = 0x0CB1
	phyCapAnyPage   = 1
	phyCapRead      = 2
	phyCapWrite     = 4
	phyCapReadWrite = phyCapRead | phyCapWrite
)

// phyCaps says which PHY registers exist on which page and how they may be
// accessed. Index [0] holds the any-page registers too. Pure, never written.
var phyCaps = func() (c [phyPages][phyRegs]uint8) {
	any := func(r int, cap uint8) { c[0][r] = cap | phyCapAnyPage }
	any(phyBMCR, phyCapReadWrite)
	any(phyBMSR, phyCapRead)
	any(phyID1, phyCapRead)
	any(phyID2, phyCapRead)
	any(phyANAR, phyCapReadWrite)
	any(phyANLPAR, phyCapRead)
	any(phyANER, phyCapRead)
	any(phyNPTX, phyCapReadWrite)
	any(phyLPNP, phyCapRead)
	any(phyGCTRL, phyCapReadWrite)
	any(phyGSTAT, phyCapRead)
	any(phyESTAT, phyCapRead)
	any(phyPage, phyCapReadWrite)
	for _, r := range []int{phyCopCtl1, phyCopIntEn, phyCopCtl3, phyOEMBits, phyBias1, phyBias2, phyCopCtl2} {
		c[0][r] = phyCapReadWrite
	}
	for _, r := range []int{phyCopStat1, phyCopStat2, phyRxErr} {
		c[0][r] = phyCapRead
	}
	// Page 2: MAC specific control; page 3: LEDs; 5: 1000BASE-T skew and
	// pair swap; 6: CRC counters.
	c[2][0x10], c[2][0x12], c[2][0x13], c[2][0x15] = phyCapReadWrite, phyCapReadWrite, phyCapRead, phyCapReadWrite
	c[3][0x10], c[3][0x11], c[3][0x12], c[3][0x13] = phyCapReadWrite, phyCapReadWrite, phyCapReadWrite, phyCapReadWrite
	c[5][0x14], c[5][0x15] = phyCapRead, phyCapRead
	c[6][0x11] = phyCapRead
	return c
}()

// resetPHY loads the PHY's reset values (those of QEMU's model, which the
// Linux driver is known to accept).
func (n *NIC) resetPHY() {
	n.phy = [phyPages][phyRegs]uint16{}
	p := &n.phy[0]
	p[phyBMCR] = 0x1140 // 1000 Mb/s, full duplex, autonegotiation enabled
	p[phyBMSR] = 0x794D // capabilities, link up, AN not yet complete
	p[phyID1] = bmeID1
	p[phyID2] = bmeID2
	p[phyANAR] = 0x0DE1
	p[phyANLPAR] = 0x07E0
	p[phyANER] = 0x0004
	p[phyNPTX] = 0x2001
	p[phyGCTRL] = 0x0F00
	p[phyGSTAT] = 0x3C00
	p[phyESTAT] = 0x3000
	p[phyCopCtl1] = 0x3360
	p[phyCopStat1] = 0xAC08 // 1000 Mb/s, full duplex, resolved, link
	n.phy[2][0x10] = 0x0088
	n.phy[2][0x15] = 0x1046
	n.phy[3][0x12] = 0x4005
}

// phyPageOf returns the page an access to reg goes to, or false when that
// page does not exist.
func (n *NIC) phyPageOf(reg int) (int, bool) {
	if phyCaps[0][reg]&phyCapAnyPage != 0 {
		return 0, true
	}
	page := int(n.phy[0][phyPage])
	return page, page < phyPages
}

// writeMDIC performs a PHY read or write at once and reports READY; a
// wrong PHY address or an absent register reports ERROR.
func (n *NIC) writeMDIC(v uint32) {
	reg := int(v & MDIC_REG_MASK >> mdicRegShift)
	data := uint16(v & MDIC_DATA_MASK)
	switch {
	case v&MDIC_PHY_MASK>>mdicPHYShift != phyAddr:
		v |= MDIC_ERROR
	case v&MDIC_OP_READ != 0:
		page, ok := n.phyPageOf(reg)
		if !ok || phyCaps[page][reg]&phyCapRead == 0 {
			v |= MDIC_ERROR
			break
		}
		v = v&^MDIC_DATA_MASK | uint32(n.phy[page][reg])
	case v&MDIC_OP_WRITE != 0:
		page, ok := n.phyPageOf(reg)
		if !ok || phyCaps[page][reg]&phyCapWrite == 0 {
			v |= MDIC_ERROR
			break
		}
		n.writePHY(page, reg, data)
	}
	n.mac[MDIC>>2] = v | MDIC_READY
	if v&MDIC_INT_EN != 0 {
		n.raise(ICR_MDAC)
	}
}

// writePHY stores a PHY register; BMCR reset and autonegotiation restart
// clear themselves, and a restart runs autonegotiation.
func (n *NIC) writePHY(page, reg int, v uint16) {
	if page != 0 {
		n.phy[page][reg] = v
		return
	}
	switch reg {
	case phyBMCR:
		n.phy[0][phyBMCR] = v &^ (bmcrReserved | bmcrReset | bmcrRestartAN)
		if v&bmcrRestartAN != 0 && n.haveAutoneg() {
			n.restartAutoneg()
		}
	case phyOEMBits:
		n.phy[0][phyOEMBits] = v &^ oemRestartAN
		if v&oemRestartAN != 0 && n.haveAutoneg() {
			n.restartAutoneg()
		}
	case phyPage:
		n.phy[0][phyPage] = v & 0xFF
	default:
		n.phy[0][reg] = v
	}
}

func (n *NIC) haveAutoneg() bool { return n.phy[0][phyBMCR]&bmcrANEnable != 0 }
