package e1000e

import (
	"fmt"
	"time"
)

// InterruptsState is the interrupt logic: causes, masks, the MSI-X vector
// mapping, moderation settings, what is held back or already signalled,
// and each running timer's time remaining (never an absolute expiry).
type InterruptsState struct {
	ICR  uint32              `msgpack:"icr"`
	IMS  uint32              `msgpack:"ims"`
	IVAR uint32              `msgpack:"ivar"`
	EIAC uint32              `msgpack:"eiac"`
	IAM  uint32              `msgpack:"iam"`
	ITR  uint32              `msgpack:"itr"`
	EITR [numMSIXVecs]uint32 `msgpack:"eitr"`
	// Delayed are causes held by the RX/TX delay timers; Signalled the
	// causes already sent as MSI/MSI-X messages.
	Delayed     uint32            `msgpack:"delayed"`
	Signalled   uint32            `msgpack:"signalled"`
	INTx        bool              `msgpack:"intx"`
	ITRPending  bool              `msgpack:"itr_pending"`
	EITRPending [numMSIXVecs]bool `msgpack:"eitr_pending"`
	// Timers maps a running timer ("rdtr", "radv", "raid", "tidv",
	// "tadv", "itr", "eitr0".."eitr4") to nanoseconds left.
	Timers map[string]int64 `msgpack:"timers"`
}

// Longest times a timer can have left: 16 bits of its unit.
const (
	maxDelayLeft = 0xFFFF * delayUnit
	maxITRLeft   = 0xFFFF * itrUnit
)

// intrTimers names the interrupt timers in state order.
func (n *NIC) intrTimers() map[string]*nicTimer {
	t := &n.timers
	m := map[string]*nicTimer{"rdtr": t.rdtr, "radv": t.radv, "raid": t.raid,
		"tidv": t.tidv, "tadv": t.tadv, "itr": t.itr}
	for v, e := range t.eitr {
		m[fmt.Sprintf("eitr%d", v)] = e
	}
	return m
}

// saveInterrupts fills an InterruptsState. Called with n.mu held.
func (n *NIC) saveInterrupts() InterruptsState {
	s := InterruptsState{
		ICR: n.mac[ICR>>2], IMS: n.mac[IMS>>2], IVAR: n.mac[IVAR>>2],
		EIAC: n.mac[EIAC>>2], IAM: n.mac[IAM>>2], ITR: n.mac[ITR>>2],
		Delayed: n.intr.delayed, Signalled: n.intr.signalled, INTx: n.intr.intx,
		ITRPending: n.intr.itrPending, EITRPending: n.intr.eitrPending,
		Timers: map[string]int64{},
	}
	for v := range s.EITR {
		s.EITR[v] = n.mac[EITR0>>2+v]
	}
	for name, t := range n.intrTimers() {
		if t.running {
			s.Timers[name] = int64(t.remaining())
		}
	}
	return s
}

// Validate checks that each register holds only the bits its row in the
// register table implements, the signalled causes and the timer bounds.
// (ICR is not checked: an older server latched any bit ICS set.)
func (s *InterruptsState) Validate() error {
	type carried struct {
		name   string
		off, v uint32
	}
	regs := []carried{{"IMS", IMS, s.IMS}, {"IVAR", IVAR, s.IVAR}, {"EIAC", EIAC, s.EIAC}, {"IAM", IAM, s.IAM}, {"ITR", ITR, s.ITR}}
	for v, e := range s.EITR {
		regs = append(regs, carried{fmt.Sprintf("EITR%d", v), EITR0 + 4*uint32(v), e})
	}
	for _, r := range regs {
		if m := regTable[regIdx.row[r.off>>2]-1].mask; r.v&^m != 0 {
			return fmt.Errorf("e1000e: interrupts: %s %#x has bits the 82574L does not implement (%#x)", r.name, r.v, m)
		}
	}
	if s.Signalled&^(s.ICR|ICR_OTHER) != 0 {
		return fmt.Errorf("e1000e: interrupts: signalled causes %#x not in ICR %#x", s.Signalled, s.ICR)
	}
	for _, name := range sortedKeys(s.Timers) {
		left := time.Duration(s.Timers[name])
		limit := maxDelayLeft
		switch name {
		case "rdtr", "radv", "raid", "tidv", "tadv":
		case "itr", "eitr0", "eitr1", "eitr2", "eitr3", "eitr4":
			limit = maxITRLeft
		default:
			return fmt.Errorf("e1000e: interrupts: unknown timer %q", name)
		}
		if left < 0 || left > limit {
			return fmt.Errorf("e1000e: interrupts: timer %s has %v left (limit %v)", name, left, limit)
		}
	}
	return nil
}

// restoreInterrupts applies a validated InterruptsState. Timers start with
// the time they had left (held, if the NIC's timers are held). Called with
// n.mu held.
func (n *NIC) restoreInterrupts(s *InterruptsState) {
	n.mac[ICR>>2] = s.ICR
	n.mac[IMS>>2] = s.IMS
	n.mac[IVAR>>2] = s.IVAR
	n.mac[EIAC>>2] = s.EIAC
	n.mac[IAM>>2] = s.IAM
	n.mac[ITR>>2] = s.ITR
	for v, e := range s.EITR {
		n.mac[EITR0>>2+v] = e
	}
	n.intr.delayed = s.Delayed
	n.intr.signalled = s.Signalled
	n.intr.intx = s.INTx
	n.intr.itrPending = s.ITRPending
	n.intr.eitrPending = s.EITRPending
	n.intr.mode = n.irq.Mode()
	for name, t := range n.intrTimers() {
		t.stop()
		if left, ok := s.Timers[name]; ok {
			t.arm(time.Duration(left))
		}
	}
}
