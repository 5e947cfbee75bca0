package e1000e

import "e1000e-vfu/device"

// readReg performs a guest read of the BAR0 dword at off, as its row says.
// Unknown offsets read as zero. Called with n.mu held.
func (n *NIC) readReg(off uint32) uint32 {
	d := (off >> 2) & (bar0Size/4 - 1)
	r := n.regs.idx.row[d]
	if r == 0 {
		return 0
	}
	row := &n.regs.rows[r-1]
	c := uint32(n.regs.idx.canon[d])
	switch row.read {
	case readClears:
		v := n.mac[c]
		n.mac[c] = 0
		return v
	case readZero:
		return 0
	case readFunc:
		return row.readFn(n, c)
	}
	return n.mac[c]
}

// writeReg performs a guest write of the BAR0 dword at off: the store its
// row's write kind makes, then the row's effect. Writes to unknown offsets
// are ignored. Called with n.mu held.
func (n *NIC) writeReg(off, v uint32) {
	d := (off >> 2) & (bar0Size/4 - 1)
	r := n.regs.idx.row[d]
	if r == 0 {
		return
	}
	row := &n.regs.rows[r-1]
	c := uint32(n.regs.idx.canon[d])
	switch row.write {
	case writeStore:
		old := n.mac[c]
		m := row.maskAt(c - row.off>>2)
		nv := old&^m | v&m
		nv &^= v & row.w1c
		n.ringChanged(c<<2, old, nv)
		n.mac[c] = nv
	case writeSet:
		n.mac[row.target>>2] |= v & row.mask
	case writeClear:
		n.mac[row.target>>2] &^= v & row.mask
	}
	if row.effect != nil {
		row.effect(n, v)
	}
}

// writeCTRL is CTRL's effect: RST resets the device and clears itself,
// PHY_RST flags the PHY reset for STATUS.PHYRA.
func (n *NIC) writeCTRL(v uint32) {
	if v&CTRL_RST != 0 {
		n.log.Debug("e1000e: software reset")
		n.resetLocked(true)
		// The reset also ends a GIO master disable and a PHY reset.
		n.mac[CTRL>>2] = v &^ (CTRL_RST | CTRL_GIO_MASTER_DISABLE | CTRL_PHY_RST)
		return
	}
	if v&CTRL_PHY_RST != 0 {
		n.mac[STATUS>>2] |= STATUS_PHYRA
	}
}

// writeSTATUS is a STATUS write: only PHYRA can be cleared by software.
func (n *NIC) writeSTATUS(v uint32) {
	if v&STATUS_PHYRA == 0 {
		n.mac[STATUS>>2] &^= STATUS_PHYRA
	}
}

// readSTATUS computes STATUS: stored link bits plus what CTRL implies.
func (n *NIC) readSTATUS(uint32) uint32 {
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

// writeCTRLExt is CTRL_EXT's effect: EE_RST reloads from the NVM.
func (n *NIC) writeCTRLExt(v uint32) {
	if v&CTRL_EXT_EE_RST != 0 {
		n.loadFromNVM()
	}
}

// readSWSM takes the SMBI semaphore: the read that finds it clear owns it.
func (n *NIC) readSWSM(d uint32) uint32 {
	v := n.mac[d]
	n.mac[d] = v | SWSM_SMBI
	return v
}

// writeRCTL starts receiving when RCTL enables it.
func (n *NIC) writeRCTL(uint32) {
	if n.mac[RCTL>>2]&RCTL_EN != 0 {
		n.kickRX()
	}
}

// writeTCTL starts transmitting when TCTL enables it.
func (n *NIC) writeTCTL(uint32) {
	if n.mac[TCTL>>2]&TCTL_EN != 0 {
		n.kickTX()
	}
}

// writeRDT is a receive doorbell.
func (n *NIC) writeRDT(uint32) { n.kickRX() }

// writeTDT is a transmit doorbell.
func (n *NIC) writeTDT(uint32) { n.kickTX() }

// writeRDTR: FPD raises the causes the receive delay timers hold.
func (n *NIC) writeRDTR(v uint32) {
	if v&RDTR_FPD != 0 && n.timers.rdtr.running {
		n.raise(0)
	}
}

// writeTIDV: FPD raises the causes the transmit delay timers hold.
func (n *NIC) writeTIDV(v uint32) {
	if v&TIDV_FPD != 0 && n.timers.tidv.running {
		n.raise(0)
	}
}

// writeRXDCTL mirrors RXDCTL into queue 1's: the 82574 shares one.
func (n *NIC) writeRXDCTL(uint32) {
	n.mac[RXDCTL1>>2] = n.mac[RXDCTL>>2]
}

// writePBACLR clears the MSI-X pending bits of the vectors written 1.
func (n *NIC) writePBACLR(uint32) {
	if n.irq.Mode() != device.IRQModeMSIX {
		return
	}
	clr := n.mac[PBACLR>>2]
	for vec := 0; vec < numMSIXVecs; vec++ {
		if clr&(1<<vec) != 0 {
			n.irq.ClearMSIXPending(vec)
		}
	}
}
