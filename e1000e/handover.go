package e1000e

// A live upgrade (serve --takeover) quiesces the NIC as a migration does,
// saves its state into the successor's NIC and resumes that one. These are
// the two things it needs beyond the migration API.

// INTxMasked reports the INTx line's mask as SET_IRQS and automasking left
// it: an interrupt the client has not acknowledged, which the successor
// must keep masked.
func (n *NIC) INTxMasked() bool { return n.pci.fn.IRQs.INTxMasked() }

// ResumeInPlace undoes Quiesce without the announcement that follows an
// incoming migration: after a live upgrade the guest's address is behind
// the same port as before, and the network has nothing to learn.
func (n *NIC) ResumeInPlace() {
	n.mu.Lock()
	n.mig.loaded = false
	n.mu.Unlock()
	n.resume()
}

// HoldINTxUnmask stops reading the client's INTx unmask eventfd until
// ResumeINTxUnmask: during a live upgrade the two processes share it, and
// exactly one of them may act on an unmask (see device.IRQs.HoldUnmask).
func (n *NIC) HoldINTxUnmask() { n.pci.fn.IRQs.HoldUnmask() }

// ResumeINTxUnmask reads the unmask eventfd again, picking up an unmask
// signalled while it was held.
func (n *NIC) ResumeINTxUnmask() { n.pci.fn.IRQs.ResumeUnmask() }
