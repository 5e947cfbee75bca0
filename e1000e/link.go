package e1000e

// Link state: the carrier comes from the backend or an administrator
// (SetLink); the PHY negotiates on top of it.

// SetLink sets the carrier. Link up restarts autonegotiation when it has
// not completed (the link comes up when it does); any change of STATUS
// raises LSC.
func (n *NIC) SetLink(up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || up == n.linkUp {
		return
	}
	n.linkUp = up
	old := n.mac[STATUS>>2]
	switch {
	case !up:
		n.autoneg.stop()
		n.linkDownRegs()
	case n.haveAutoneg() && n.phy[0][phyBMSR]&bmsrANComplete == 0:
		n.restartAutoneg()
	default:
		n.linkUpRegs()
		n.kickRX()
	}
	if n.mac[STATUS>>2] != old {
		n.raise(ICR_LSC)
	}
}

// LinkUp reports whether the guest sees the link up.
func (n *NIC) LinkUp() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mac[STATUS>>2]&STATUS_LU != 0
}

func (n *NIC) linkDownRegs() {
	n.mac[STATUS>>2] &^= STATUS_LU
	n.phy[0][phyBMSR] &^= bmsrLinkUp | bmsrANComplete
	n.phy[0][phyANLPAR] &^= anlparLPAck
}

func (n *NIC) linkUpRegs() {
	n.mac[STATUS>>2] |= STATUS_LU
	n.phy[0][phyBMSR] |= bmsrLinkUp
}

// restartAutoneg takes the link down and completes negotiation after the
// autonegotiation delay.
func (n *NIC) restartAutoneg() {
	n.linkDownRegs()
	n.autoneg.arm(n.autonegDelay)
}

// autonegDone completes autonegotiation (timer callback, n.mu held): with
// a carrier the link comes up with the partner's ability acknowledged,
// flow control is resolved on, and the guest gets LSC.
func (n *NIC) autonegDone() {
	if !n.linkUp {
		return
	}
	n.linkUpRegs()
	n.phy[0][phyANLPAR] |= anlparLPAck
	n.phy[0][phyBMSR] |= bmsrANComplete
	n.mac[CTRL>>2] |= CTRL_TFCE | CTRL_RFCE
	n.raise(ICR_LSC)
	n.kickRX()
}
