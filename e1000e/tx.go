package e1000e

// txState is the transmit side's runtime state (offload context, a partly
// assembled packet).
type txState struct{}

// kickTX processes transmit descriptors. Called with n.mu held.
func (n *NIC) kickTX() {}

// resetRings drops ring runtime state on device reset. Called with n.mu held.
func (n *NIC) resetRings() {
	n.tx = txState{}
	n.rx = rxState{}
}
