package e1000e

import (
	"time"

	"e1000e-vfu/device"
)

// Interrupter delivers the NIC's interrupts. The NIC calls it with its
// mutex held, so an implementation must not call back into the NIC.
type Interrupter interface {
	// Mode is the interrupt mode the guest enabled. In IRQModeNone (INTx
	// disabled in the command register, neither MSI nor MSI-X enabled)
	// the NIC works as in INTx mode: it keeps the line's level, and
	// calls SetINTx, which must not signal while INTx is disabled.
	Mode() device.IRQMode
	// MSIX signals vector (0-4); a masked vector becomes pending.
	MSIX(vector int)
	// MSI signals the single MSI vector.
	MSI()
	// SetINTx drives the INTx line level.
	SetINTx(level bool)
	// ClearMSIXPending clears the pending bit of a vector (PBACLR).
	ClearMSIXPending(vector int)
}

// Timer resolutions.
const (
	itrUnit   = 256 * time.Nanosecond  // ITR and EITR intervals
	delayUnit = 1024 * time.Nanosecond // RDTR, RADV, RAID, TIDV, TADV
)

// intrState is the runtime state of interrupt delivery, cleared on reset.
type intrState struct {
	// signalled are the causes already sent as MSI/MSI-X messages; a new
	// message goes out only for causes not yet signalled (edge semantics).
	signalled uint32
	// delayed are causes held back by the RX/TX delay timers.
	delayed uint32
	intx    bool           // current INTx level
	mode    device.IRQMode // the mode irqModeChanged last saw

	// A message that comes while its throttling interval runs is sent when
	// the interval ends.
	itrPending  bool
	eitrPending [numMSIXVecs]bool

	// unacked are the MSI-X vectors sent whose handler has not yet shown
	// it ran (by enabling one of the vector's causes in IMS, as every
	// handler of the Linux driver does last), and unackedMSI the same for
	// MSI (its handler reads ICR first). A migration stops the guest's
	// vCPUs before it stops the device, and a message the device sends in
	// between reaches the source VMM's interrupt eventfd after that VMM
	// has stopped delivering: on the destination it never arrives. For
	// the TX vector that is a hang: the driver's TX ring fills, the queue
	// stops, no descriptor is written back again and no message comes,
	// until the stack's watchdog resets the NIC. Quiesce therefore holds
	// these vectors, so that Resume sends them again; a repeated message
	// costs a handler that finds nothing to do.
	unacked    uint8
	unackedMSI bool
}

// timerSet holds the interrupt timers; they live as long as the NIC.
type timerSet struct {
	rdtr, radv, raid, tidv, tadv, itr *nicTimer
	eitr                              [numMSIXVecs]*nicTimer
}

func (n *NIC) initTimers() {
	n.timers = timerSet{
		rdtr: n.newTimer(n.delayFired),
		radv: n.newTimer(n.delayFired),
		raid: n.newTimer(n.delayFired),
		tidv: n.newTimer(n.delayFired),
		tadv: n.newTimer(n.delayFired),
		itr:  n.newTimer(n.itrFired),
	}
	for v := range n.timers.eitr {
		n.timers.eitr[v] = n.newTimer(func() { n.eitrFired(v) })
	}
}

// stopAllTimers stops every interrupt timer and forgets what they held.
func (n *NIC) stopAllTimers() {
	n.stopDelayTimers()
	n.timers.itr.stop()
	for _, e := range n.timers.eitr {
		e.stop()
	}
}

// allTimers lists every timer of the core, for pausing and state.
func (n *NIC) allTimers() [12]*nicTimer {
	t := &n.timers
	return [12]*nicTimer{t.rdtr, t.radv, t.raid, t.tidv, t.tadv, t.itr,
		t.eitr[0], t.eitr[1], t.eitr[2], t.eitr[3], t.eitr[4], n.autoneg}
}

// HoldTimers pauses the interrupt, moderation and autonegotiation timers,
// keeping the time each has left: no interrupt fires from a timer until
// ReleaseTimers. A quiesced device (migration) holds them.
func (n *NIC) HoldTimers() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.allTimers() {
		t.hold()
	}
}

// ReleaseTimers resumes the timers HoldTimers paused.
func (n *NIC) ReleaseTimers() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.allTimers() {
		t.release()
	}
}

// stopDelayTimers stops the receive and transmit delay timers (RDTR, RADV,
// RAID, TIDV, TADV), not the throttling ones.
func (n *NIC) stopDelayTimers() {
	t := &n.timers
	t.rdtr.stop()
	t.radv.stop()
	t.raid.stop()
	t.tidv.stop()
	t.tadv.stop()
}

// raise sets interrupt causes in ICR (with any delayed ones) and delivers
// what the masks allow. Called with n.mu held.
func (n *NIC) raise(causes uint32) {
	if d := n.intr.delayed; d != 0 {
		n.intr.delayed = 0
		causes |= d
	}
	n.stopDelayTimers()
	n.mac[ICR>>2] |= causes &^ ICR_INT_ASSERTED
	if n.irq.Mode() == device.IRQModeMSIX {
		// Every raise of a queue cause sends its vector's message, as on
		// QEMU's model, even when the driver does not auto-clear the
		// cause with EIAC (QEMU's own e1000e test does not). OTHER still
		// waits for the driver to clear it.
		n.intr.signalled &^= causes & (ICR_RXQ0 | ICR_RXQ1 | ICR_TXQ0 | ICR_TXQ1)
	}
	n.updateIRQ()
}

// raiseRX raises receive causes, holding back RXT0/RXQn (and ACK) while
// the receive delay timers run. The delays apply in INTx and MSI modes only,
// as on QEMU's model: Linux programs them for those modes.
func (n *NIC) raiseRX(causes uint32) {
	if causes == 0 || n.irq.Mode() == device.IRQModeMSIX {
		n.raise(causes)
		return
	}
	const ackDis = 0x1000 // RFCTL.ACK_DIS: no ACK-frame detection
	delayable := uint32(ICR_RXQ0 | ICR_RXQ1 | ICR_RXT0)
	if n.mac[RFCTL>>2]&ackDis == 0 {
		delayable |= ICR_ACK
	}
	n.intr.delayed |= causes & delayable
	rest := causes &^ delayable
	rdtr := n.mac[RDTR>>2] & 0xFFFF
	ack := n.intr.delayed&ICR_ACK != 0
	if rest != 0 || rdtr == 0 || (ack && n.mac[RAID>>2]&0xFFFF == 0) {
		n.raise(rest)
		return
	}
	t := &n.timers
	t.rdtr.arm(time.Duration(rdtr) * delayUnit)
	if radv := n.mac[RADV>>2] & 0xFFFF; radv != 0 && !t.radv.running {
		t.radv.arm(time.Duration(radv) * delayUnit)
	}
	if ack && !t.raid.running {
		t.raid.arm(time.Duration(n.mac[RAID>>2]&0xFFFF) * delayUnit)
	}
}

// raiseTX raises transmit causes; with ide (the descriptor's interrupt
// delay enable) TXDW/TXQE/TXQn wait for TIDV, bounded by TADV.
func (n *NIC) raiseTX(causes uint32, ide bool) {
	if causes == 0 || !ide || n.irq.Mode() == device.IRQModeMSIX {
		n.raise(causes)
		return
	}
	delayable := uint32(ICR_TXDW | ICR_TXQE | ICR_TXQ0 | ICR_TXQ1)
	n.intr.delayed |= causes & delayable
	rest := causes &^ delayable
	tidv := n.mac[TIDV>>2] & 0xFFFF
	if rest != 0 || tidv == 0 {
		n.raise(rest)
		return
	}
	t := &n.timers
	t.tidv.arm(time.Duration(tidv) * delayUnit)
	if tadv := n.mac[TADV>>2] & 0xFFFF; tadv != 0 && !t.tadv.running {
		t.tadv.arm(time.Duration(tadv) * delayUnit)
	}
}

// delayFired runs when any RX/TX delay timer ends: the delayed causes are
// raised and every delay timer stops.
func (n *NIC) delayFired() { n.raise(0) }

// updateIRQ recomputes INT_ASSERTED and delivers.
func (n *NIC) updateIRQ() {
	mode := n.irq.Mode()
	icr := n.mac[ICR>>2]
	if mode == device.IRQModeMSIX && icr&icrOtherCauses != 0 {
		icr |= ICR_OTHER
	}
	ims := n.mac[IMS>>2]
	causes := icr & ims &^ ICR_INT_ASSERTED
	n.mac[ICR>>2] = withAsserted(icr)

	switch mode {
	case device.IRQModeMSIX, device.IRQModeMSI:
		n.setINTx(false)
		edge := causes
		if mode == device.IRQModeMSIX && ims&ICR_OTHER != 0 {
			// Each cause OTHER summarises counts on its own, so a new
			// LSC signals even while an older RXO keeps OTHER set.
			edge |= icr & icrOtherCauses
		}
		n.intr.signalled &= edge
		fresh := edge &^ n.intr.signalled
		if fresh == 0 {
			break
		}
		n.intr.signalled |= fresh
		if mode == device.IRQModeMSIX {
			if fresh&icrOtherCauses != 0 {
				fresh |= ICR_OTHER
			}
			n.msixNotify(fresh)
		} else if !n.throttle(n.timers.itr, &n.intr.itrPending, ITR) {
			n.sendMSI()
		}
	default:
		// INTx, and None as well: with INTx disabled the level is still
		// kept (ICR's INT_ASSERTED, the Interrupt Status bit, which PCI
		// keeps regardless of Interrupt Disable); the function holds the
		// signal back until the guest enables INTx again.
		if causes == 0 {
			n.setINTx(false)
		} else if !n.intr.intx && !n.throttle(n.timers.itr, &n.intr.itrPending, ITR) {
			n.setINTx(true)
		}
	}
	// EIAC may have cleared causes: keep INT_ASSERTED consistent.
	n.mac[ICR>>2] = withAsserted(n.mac[ICR>>2])
}

// withAsserted sets INT_ASSERTED when any cause is pending, as QEMU's model
// does (masked ones included), so that an ICR read clears every cause: a
// cause the driver does not enable must not stay in ICR, or Linux's MSI-X
// "other" handler, which re-enables only OTHER and LSC, is called again and
// again for it.
func withAsserted(icr uint32) uint32 {
	if icr&^ICR_INT_ASSERTED != 0 {
		return icr | ICR_INT_ASSERTED
	}
	return icr &^ ICR_INT_ASSERTED
}

func (n *NIC) setINTx(level bool) {
	if level == n.intr.intx {
		return
	}
	n.intr.intx = level
	if level {
		n.addStat(IAC, 1)
	}
	n.irq.SetINTx(level)
}

// throttle reports whether a message must wait for the running throttling
// interval (and records it as pending); otherwise it starts a new interval
// from the interval register at off and lets the message go.
func (n *NIC) throttle(t *nicTimer, pending *bool, off uint32) bool {
	if t.running {
		*pending = true
		return true
	}
	if iv := n.mac[off>>2] & 0xFFFF; iv != 0 {
		t.arm(time.Duration(iv) * itrUnit)
	}
	return false
}

// itrFired ends an ITR interval: a held-back MSI or INTx assertion goes out
// now and starts the next interval.
func (n *NIC) itrFired() {
	if !n.intr.itrPending {
		return
	}
	n.intr.itrPending = false
	switch n.irq.Mode() {
	case device.IRQModeMSI:
		n.throttle(n.timers.itr, &n.intr.itrPending, ITR)
		n.sendMSI()
	case device.IRQModeINTx, device.IRQModeNone: // None keeps the level too (updateIRQ)
		if n.mac[ICR>>2]&n.mac[IMS>>2]&^ICR_INT_ASSERTED != 0 && !n.intr.intx {
			n.throttle(n.timers.itr, &n.intr.itrPending, ITR)
			n.setINTx(true)
		}
	}
}

// eitrFired ends an EITR interval of vector v.
func (n *NIC) eitrFired(v int) {
	if !n.intr.eitrPending[v] {
		return
	}
	n.intr.eitrPending[v] = false
	if n.irq.Mode() != device.IRQModeMSIX {
		return
	}
	n.throttle(n.timers.eitr[v], &n.intr.eitrPending[v], EITR0+4*uint32(v))
	n.sendMSIX(v)
}

// sendMSIX sends vector v and counts it unacknowledged until its handler
// enables one of its causes again.
func (n *NIC) sendMSIX(v int) {
	n.intr.unacked |= 1 << v
	n.irq.MSIX(v)
}

// sendMSI sends the MSI message and counts it unacknowledged until ICR is
// read.
func (n *NIC) sendMSI() {
	n.intr.unackedMSI = true
	n.irq.MSI()
}

// msixCauses pairs each MSI-X cause with its IVAR field position.
var msixCauses = [...]struct {
	cause uint32
	shift uint
}{
	{ICR_RXQ0, 0}, {ICR_RXQ1, 4}, {ICR_TXQ0, 8}, {ICR_TXQ1, 12}, {ICR_OTHER, 16},
}

// msixNotify sends the vectors IVAR maps the fresh causes to, then applies
// the auto-clear (EIAC) and auto-mask (EIAME with IAM) rules.
func (n *NIC) msixNotify(fresh uint32) {
	ivar := n.mac[IVAR>>2]
	for _, mc := range msixCauses {
		if fresh&mc.cause == 0 {
			continue
		}
		field := ivar >> mc.shift & 0xF
		if field&ivarValid != 0 {
			v := int(field & ivarVector)
			if v < numMSIXVecs && !n.throttle(n.timers.eitr[v], &n.intr.eitrPending[v], EITR0+4*uint32(v)) {
				n.sendMSIX(v)
			}
		}
		if n.mac[CTRL_EXT>>2]&CTRL_EXT_EIAME != 0 {
			n.mac[IMS>>2] &^= n.mac[IAM>>2] & mc.cause
		}
		clear := n.mac[EIAC>>2] & mc.cause
		n.mac[ICR>>2] &^= clear
		n.intr.signalled &^= clear
	}
}

// unackedMapped are the unacknowledged vectors that IVAR still maps a
// cause to: a vector the guest has since unmapped has no handler left to
// repeat a message to, and no IMS write would ever acknowledge it.
func (n *NIC) unackedMapped() uint8 {
	var mapped uint8
	for _, mc := range msixCauses {
		if v := n.msixVector(mc.cause); v >= 0 {
			mapped |= 1 << v
		}
	}
	return n.intr.unacked & mapped
}

// msixVector returns the vector IVAR maps cause to, or -1.
func (n *NIC) msixVector(cause uint32) int {
	ivar := n.mac[IVAR>>2]
	for _, mc := range msixCauses {
		if mc.cause == cause {
			field := ivar >> mc.shift & 0xF
			if field&ivarValid != 0 && int(field&ivarVector) < numMSIXVecs {
				return int(field & ivarVector)
			}
		}
	}
	return -1
}

// readICR returns ICR and clears it when no cause is enabled (IMS is 0) or
// when INT_ASSERTED is set (any cause pending); with CTRL_EXT.IAME the read
// also masks the IAM causes.
func (n *NIC) readICR(uint32) uint32 {
	icr := n.mac[ICR>>2]
	n.intr.unackedMSI = false
	if n.mac[IMS>>2] == 0 {
		n.mac[ICR>>2] = 0
	}
	if icr&ICR_INT_ASSERTED != 0 {
		if n.mac[CTRL_EXT>>2]&CTRL_EXT_IAME != 0 {
			n.mac[IMS>>2] &^= n.mac[IAM>>2]
		}
		n.mac[ICR>>2] = 0
	}
	n.updateIRQ()
	return icr
}

// readICS returns ICR without clearing it.
func (n *NIC) readICS(uint32) uint32 { return n.mac[ICR>>2] }

// writeICS raises the causes written as 1: the table's set has latched
// them in ICR already, raise delivers them with the delayed ones.
func (n *NIC) writeICS(v uint32) { n.raise(v & imsValid) }

// writeIMC re-evaluates delivery after the table's clear of IMS bits.
func (n *NIC) writeIMC(uint32) { n.updateIRQ() }

// writeICR clears the causes written as 1; clearing OTHER clears the
// causes it summarises.
func (n *NIC) writeICR(v uint32) {
	icr := n.mac[ICR>>2]
	if icr&ICR_INT_ASSERTED != 0 && n.mac[CTRL_EXT>>2]&CTRL_EXT_IAME != 0 {
		n.mac[IMS>>2] &^= n.mac[IAM>>2]
	}
	icr &^= v
	if v&ICR_OTHER != 0 {
		icr &^= icrOtherCauses
	}
	n.mac[ICR>>2] = icr
	n.updateIRQ()
}

// writeIMS runs after the table's set has enabled the causes written as 1
// in IMS. With CTRL_EXT.PBA_CLR, enabling an MSI-X cause clears its
// vector's pending bit; enabling every cause with INT_TIMERS_CLEAR_ENA
// fires the delay timers at once.
func (n *NIC) writeIMS(v uint32) {
	valid := v & imsValid
	// Every handler ends with this write: only then look up its vectors.
	for _, mc := range msixCauses {
		if n.intr.unacked == 0 {
			break
		}
		if valid&mc.cause == 0 {
			continue
		}
		if vec := n.msixVector(mc.cause); vec >= 0 {
			n.intr.unacked &^= 1 << vec
		}
	}
	if valid&eiacMask != 0 && n.mac[CTRL_EXT>>2]&CTRL_EXT_PBA_CLR != 0 && n.irq.Mode() == device.IRQModeMSIX {
		for _, mc := range msixCauses {
			if valid&mc.cause != 0 {
				if vec := n.msixVector(mc.cause); vec >= 0 {
					n.irq.ClearMSIXPending(vec)
				}
			}
		}
	}
	if valid&imsCauses == imsCauses && n.mac[CTRL_EXT>>2]&CTRL_EXT_INT_TIMERS_CLEAR_ENA != 0 {
		n.mac[ICR>>2] |= n.intr.delayed
		n.intr.delayed = 0
		n.stopDelayTimers()
	}
	n.updateIRQ()
}

// irqModeChanged re-evaluates interrupts after the guest changed the MSI or
// MSI-X enable bits (the INTx line drops, MSI-X starts from ICR). The PCI
// glue calls it with n.mu held.
func (n *NIC) irqModeChanged() {
	// Only a real change of mechanism forgets what was signalled: a mask
	// toggle is the function's business (it delivers pending vectors).
	// Between None and INTx there is nothing to forget: only MSI and
	// MSI-X record messages.
	if m := n.irq.Mode(); m != n.intr.mode {
		n.intr.mode = m
		n.intr.signalled = 0
		// Messages of the old mechanism are not the new one's to repeat.
		n.intr.unacked, n.intr.unackedMSI = 0, false
	}
	n.updateIRQ()
}
