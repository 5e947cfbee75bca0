package e1000e

import (
	"e1000e-vfu/device"
)

// migState is what the NIC keeps for migration: whether it is quiesced,
// the interrupts that wait for Resume, and reference images for saving
// only what differs from reset. Guarded by n.mu.
type migState struct {
	quiesced bool
	// inner is the real Interrupter while a quiet one stands in for it.
	inner Interrupter
	// held are the messages the NIC produced while quiesced (or that a
	// loaded state owes the guest); Resume sends them.
	held heldIRQ
	// pendingMSIX are MSI-X pending bits loaded from a state, set in the
	// function at Resume (setting one may deliver it).
	pendingMSIX uint8
	// loaded says a state was applied since the NIC last ran: when it
	// runs again (Resume) it announces the guest's addresses. A reset
	// clears it.
	loaded bool

	cfgRef *device.Function
	phyRef *[phyPages][phyRegs]uint16
}

// heldIRQ records interrupts withheld from the client.
type heldIRQ struct {
	msix uint8 // vectors
	msi  bool
}

// quietIRQ stands in for the Interrupter while the NIC is quiesced: it
// reports the real mode and records messages instead of sending them.
// Pending-bit clears are not interrupts and go through.
type quietIRQ struct {
	inner Interrupter
	held  *heldIRQ
}

func (q quietIRQ) Mode() device.IRQMode { return q.inner.Mode() }
func (q quietIRQ) MSIX(v int) {
	if v >= 0 && v < numMSIXVecs {
		q.held.msix |= 1 << v
	}
}
func (q quietIRQ) MSI()                   { q.held.msi = true }
func (q quietIRQ) SetINTx(bool)           {} // Resume drives the line from n.intr.intx
func (q quietIRQ) ClearMSIXPending(v int) { q.inner.ClearMSIXPending(v) }

// Quiesce stops the NIC for migration: once it returns the NIC does no DMA
// and raises no interrupt, and its timers stand still with the time they
// had left, until Resume. Register and config accesses are still served;
// frames from the backend wait in the receive FIFO.
//
// With guest memory reached by messages, a message sent before Quiesce may
// still be waiting for its reply (the client answers it only after our
// answer to the request that quiesces): Quiesce does not wait for it. The
// engine that sent it stops when it comes, sends nothing more and commits
// nothing, so the packet or frame stays in flight in the state and is done
// again after Resume, here or on the destination.
func (n *NIC) Quiesce() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mig.quiesced {
		return
	}
	n.mig.quiesced = true
	// An engine waiting for a message stops when it comes, committing
	// nothing (its packet or frame is in the state, in flight).
	n.datapathChanged()
	// A stopped NIC's announcement would point the switch back at a host
	// the guest is leaving.
	n.ann.Cancel()
	for _, t := range n.allTimers() {
		t.hold()
	}
	// Messages the guest has not handled yet may be lost on the way (see
	// intrState.unacked): Resume, here or on a destination, sends them
	// again.
	switch n.irq.Mode() {
	case device.IRQModeMSIX:
		n.mig.held.msix |= n.unackedMapped()
	case device.IRQModeMSI:
		n.mig.held.msi = n.mig.held.msi || n.intr.unackedMSI
	}
	n.mig.inner = n.irq
	n.irq = quietIRQ{inner: n.irq, held: &n.mig.held}
}

// Resume undoes Quiesce: the timers run on with the time they had left,
// withheld interrupts are sent, and transmit and receive pick up where the
// rings say. After a load it starts the announcement of the guest's
// addresses (announce.go).
func (n *NIC) Resume() {
	n.resume()
	n.announceAfterLoad()
}

func (n *NIC) resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.mig.quiesced {
		return
	}
	n.mig.quiesced = false
	n.irq = n.mig.inner
	n.mig.inner = nil
	for _, t := range n.allTimers() {
		t.release()
	}
	if !n.closed {
		n.deliverLocked()
	}
}

// deliverLocked sends what waited (the INTx level, withheld messages,
// loaded pending bits, causes not yet signalled) and kicks the datapath.
// Called with n.mu held and the NIC not quiesced.
func (n *NIC) deliverLocked() {
	held := n.mig.held
	n.mig.held = heldIRQ{}
	pend := n.mig.pendingMSIX
	n.mig.pendingMSIX = 0
	n.irq.SetINTx(n.intr.intx)
	for v := 0; v < numMSIXVecs; v++ {
		// A loaded pending bit is set by signalling the vector: the
		// function keeps it pending while masked, else delivers it.
		if (held.msix|pend)&(1<<v) != 0 {
			n.sendMSIX(v)
		}
	}
	if held.msi {
		n.sendMSI()
	}
	n.updateIRQ()
	n.kickTX()
	n.kickRX()
}

// Quiesced reports whether the NIC is quiesced for migration.
func (n *NIC) Quiesced() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mig.quiesced
}
