package e1000e

import (
	"bytes"
	"fmt"
)

// The config section: the model parameters and the MAC address of the NIC
// the state was saved from. A load refuses them unless they are this
// NIC's: its state layout follows the parameters, and the guest's view of
// its address must not change under it.

// configState is the NIC's configuration.
type configState struct {
	RXFilterSize int    `msgpack:"rx-filter-size"`
	MAC          []byte `msgpack:"mac"`
	HideMSIX     bool   `msgpack:"hide-msix,omitempty"`
	// Caps82574L is left out at its off value, false, so a stream of the
	// first layout is byte for byte what it was before the parameter.
	Caps82574L bool `msgpack:"caps-82574l,omitempty"`
}

// saveConfig fills a configState.
func (n *NIC) saveConfig() *configState {
	return &configState{RXFilterSize: n.rxFilter, MAC: n.perm[:], HideMSIX: n.hideMSIX, Caps82574L: n.caps82574l}
}

// Validate implements migration.Validator for config.
func (c *configState) Validate() error {
	if c.RXFilterSize < 0 || c.RXFilterSize > numRA {
		return fmt.Errorf("rx-filter-size %d is outside [0, %d]", c.RXFilterSize, numRA)
	}
	if len(c.MAC) != 6 || c.MAC[0]&1 != 0 {
		return fmt.Errorf("MAC %x is not a unicast address", c.MAC)
	}
	return nil
}

// checkConfig refuses a configuration other than this NIC's.
func (n *NIC) checkConfig(c *configState) error {
	if c.RXFilterSize != n.rxFilter {
		return fmt.Errorf("e1000e: config: rx-filter-size %d, this NIC %d", c.RXFilterSize, n.rxFilter)
	}
	if c.HideMSIX != n.hideMSIX {
		return fmt.Errorf("e1000e: config: hide-msix %v, this NIC %v", c.HideMSIX, n.hideMSIX)
	}
	if c.Caps82574L != n.caps82574l {
		return fmt.Errorf("e1000e: config: caps-82574l %v, this NIC %v", c.Caps82574L, n.caps82574l)
	}
	if !bytes.Equal(c.MAC, n.perm[:]) {
		return fmt.Errorf("e1000e: config: the state is of a NIC with MAC %x, this NIC has %x: start the destination with the source's MAC", c.MAC, n.perm[:])
	}
	return nil
}
