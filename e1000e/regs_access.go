package e1000e

import "e1000e-vfu/device"

// readReg performs a guest read of the BAR0 dword at off. Unknown offsets
// read as zero. Called with n.mu held.
func (n *NIC) readReg(off uint32) uint32 {
	d := (off >> 2) & (bar0Size/4 - 1)
	r := regIdx.row[d]
	if r == 0 {
		return 0
	}
	row := &regTable[r-1]
	c := regIdx.canon[d]
	v := n.mac[c]
	switch row.rd {
	case rdStatus:
		v = n.statusValue()
	case rdICR:
		return n.readICR()
	case rdICS:
		v = n.mac[ICR>>2]
	case rdSWSM:
		n.mac[c] = v | SWSM_SMBI
	case rdStatHigh:
		n.mac[c-1] = 0
		n.mac[c] = 0
	case rdWriteOnly:
		return 0
	}
	if row.rc {
		n.mac[c] = 0
	}
	return v
}

// writeReg performs a guest write of the BAR0 dword at off. Writes to
// unknown or read-only offsets are ignored. Called with n.mu held.
func (n *NIC) writeReg(off, v uint32) {
	d := (off >> 2) & (bar0Size/4 - 1)
	r := regIdx.row[d]
	if r == 0 {
		return
	}
	row := &regTable[r-1]
	c := regIdx.canon[d]
	old := n.mac[c]
	wmask := row.maskAt(uint32(c) - row.off>>2)
	masked := old&^wmask | v&wmask
	masked &^= v & row.w1c
	n.ringChanged(uint32(c)<<2, old, masked)

	switch row.wr {
	case wrPlain:
		n.mac[c] = masked
	case wrReadOnly:
	case wrCTRL:
		n.writeCTRL(v)
	case wrSTATUS:
		// Only PHYRA can be cleared by software.
		if v&STATUS_PHYRA == 0 {
			n.mac[c] &^= STATUS_PHYRA
		}
	case wrCTRLExt:
		// ASDCHK and EE_RST are self-clearing commands.
		n.mac[c] = v &^ (CTRL_EXT_ASDCHK | CTRL_EXT_EE_RST)
		if v&CTRL_EXT_EE_RST != 0 {
			n.loadFromNVM()
		}
	case wrEECD:
		n.writeEECD(v)
	case wrEERD:
		n.writeEERD(v)
	case wrEEWR:
		n.writeEEWR(v)
	case wrMDIC:
		n.writeMDIC(v)
	case wrICR:
		n.writeICR(v)
	case wrICS:
		n.raise(v)
	case wrIMS:
		n.writeIMS(v)
	case wrIMC:
		n.mac[IMS>>2] &^= v
		n.updateIRQ()
	case wrRCTL:
		n.mac[c] = masked
		if masked&RCTL_EN != 0 {
			n.kickRX()
		}
	case wrTCTL:
		n.mac[c] = masked
		if masked&TCTL_EN != 0 {
			n.kickTX()
		}
	case wrRDT:
		n.mac[c] = masked
		n.kickRX()
	case wrTDT:
		n.mac[c] = masked
		n.kickTX()
	case wrRDTR:
		n.mac[c] = masked
		if v&RDTR_FPD != 0 && n.timers.rdtr.running {
			n.raise(0)
		}
	case wrTIDV:
		n.mac[c] = masked
		if v&TIDV_FPD != 0 && n.timers.tidv.running {
			n.raise(0)
		}
	case wrPBACLR:
		n.mac[c] = masked
		if n.irq.Mode() == device.IRQModeMSIX {
			for vec := 0; vec < numMSIXVecs; vec++ {
				if masked&(1<<vec) != 0 {
					n.irq.ClearMSIXPending(vec)
				}
			}
		}
	case wrEITR:
		n.mac[c] = masked
	case wrSWSM:
		n.mac[c] = masked
	case wrRXDCTL:
		// The 82574 shares RXDCTL between the two queues.
		n.mac[c] = masked
		n.mac[RXDCTL1>>2] = masked
	}
}

// writeCTRL handles a CTRL write: RST resets the device and clears itself,
// PHY_RST flags the PHY reset for STATUS.PHYRA.
func (n *NIC) writeCTRL(v uint32) {
	if v&CTRL_RST != 0 {
		n.log.Debug("e1000e: software reset")
		n.resetLocked(true)
		// The reset also ends a GIO master disable and a PHY reset.
		n.mac[CTRL>>2] = v &^ (CTRL_RST | CTRL_GIO_MASTER_DISABLE | CTRL_PHY_RST)
		return
	}
	n.mac[CTRL>>2] = v
	if v&CTRL_PHY_RST != 0 {
		n.mac[STATUS>>2] |= STATUS_PHYRA
	}
}

// statusValue computes STATUS: stored link bits plus what CTRL implies.
func (n *NIC) statusValue() uint32 {
	ctrl := n.mac[CTRL>>2]
	v := n.mac[STATUS>>2]
	if ctrl&CTRL_GIO_MASTER_DISABLE == 0 {
		v |= STATUS_GIO_MASTER_ENABLE
	}
	if ctrl&CTRL_FRCDPX == 0 || ctrl&CTRL_FD != 0 {
		v |= STATUS_FD
	}
	speed := uint32(STATUS_SPEED_1000)
	if ctrl&CTRL_FRCSPD != 0 || n.mac[CTRL_EXT>>2]&CTRL_EXT_SPD_BYPS != 0 {
		switch ctrl & CTRL_SPD_SEL {
		case CTRL_SPD_10:
			speed = STATUS_SPEED_10
		case CTRL_SPD_100:
			speed = STATUS_SPEED_100
		}
	}
	return v&^STATUS_SPEED_MASK | speed
}
