package e1000e

import (
	"fmt"
	"time"
)

// LinkState is the carrier, what STATUS reports of the link, and the
// autonegotiation in progress with its time remaining.
type LinkState struct {
	Carrier bool   `msgpack:"carrier"`
	Status  uint32 `msgpack:"status"` // STATUS bits held: LU, ASDV, PHYRA
	// AutonegLeft is the nanoseconds left of a running autonegotiation;
	// absent (zero) when none runs.
	AutonegLeft int64 `msgpack:"autoneg_left,omitempty"`
	Autoneg     bool  `msgpack:"autoneg"`
}

// statusHeld are the STATUS bits stored rather than computed.
const statusHeld = STATUS_LU | STATUS_ASDV_1000 | STATUS_PHYRA

// maxAutonegLeft bounds a restored autonegotiation.
const maxAutonegLeft = 10 * time.Second

// saveLink fills a LinkState. Called with n.mu held.
func (n *NIC) saveLink() LinkState {
	s := LinkState{Carrier: n.linkUp, Status: n.mac[STATUS>>2] & statusHeld}
	if n.autoneg.running {
		s.Autoneg = true
		s.AutonegLeft = int64(n.autoneg.remaining())
	}
	return s
}

// Validate checks the STATUS bits and the autonegotiation time.
func (s *LinkState) Validate() error {
	if s.Status&^statusHeld != 0 {
		return fmt.Errorf("e1000e: link: STATUS %#x has computed bits", s.Status)
	}
	if s.AutonegLeft < 0 || time.Duration(s.AutonegLeft) > maxAutonegLeft {
		return fmt.Errorf("e1000e: link: autonegotiation with %v left", time.Duration(s.AutonegLeft))
	}
	if !s.Autoneg && s.AutonegLeft != 0 {
		return fmt.Errorf("e1000e: link: time left without autonegotiation")
	}
	return nil
}

// restoreLink applies a validated LinkState. The carrier is the source's:
// the destination's backend or administrator changes it with SetLink.
// Called with n.mu held.
func (n *NIC) restoreLink(s *LinkState) {
	n.linkUp = s.Carrier
	n.mac[STATUS>>2] = s.Status
	n.autoneg.stop()
	if s.Autoneg {
		n.autoneg.arm(time.Duration(s.AutonegLeft))
	}
}
