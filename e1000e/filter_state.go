package e1000e

import "fmt"

// The filters section: the exact-match receive address table, whose size
// rx-filter-size sets (the section is absent when it is 0). MTA and VFTA
// travel in registers: they filter at every rx-filter-size.

// raEntry is one receive address: its RAL and RAH.
type raEntry struct {
	Index uint8  `msgpack:"index"`
	Low   uint32 `msgpack:"low"`
	High  uint32 `msgpack:"high"`
}

// filtersState lists the receive addresses that are not zero.
type filtersState struct {
	RA []raEntry `msgpack:"ra"`
}

// saveFilters fills a filtersState. Called with n.mu held.
func (n *NIC) saveFilters() *filtersState {
	s := &filtersState{RA: []raEntry{}}
	for i := 0; i < numRA; i++ {
		lo, hi := n.mac[RA>>2+2*i], n.mac[RA>>2+2*i+1]
		if lo|hi != 0 {
			s.RA = append(s.RA, raEntry{Index: uint8(i), Low: lo, High: hi})
		}
	}
	return s
}

// Validate implements migration.Validator.
func (s *filtersState) Validate() error {
	if len(s.RA) > numRA {
		return fmt.Errorf("%d receive addresses", len(s.RA))
	}
	seen := 0
	for _, e := range s.RA {
		if e.Index >= numRA {
			return fmt.Errorf("receive address %d beyond %d", e.Index, numRA)
		}
		if seen&(1<<e.Index) != 0 {
			return fmt.Errorf("receive address %d twice", e.Index)
		}
		seen |= 1 << e.Index
	}
	return nil
}

// restoreFilters applies a validated section, or none (nil: the table
// stays as reset left it). Called with n.mu held.
func (n *NIC) restoreFilters(s *filtersState) {
	if s == nil {
		return
	}
	for i := 0; i < 2*numRA; i++ {
		n.mac[RA>>2+i] = 0
	}
	for _, e := range s.RA {
		n.mac[RA>>2+2*int(e.Index)] = e.Low
		// RAH keeps only the bits the part implements; an older
		// server kept them all.
		n.mac[RA>>2+2*int(e.Index)+1] = e.High & rahMask
	}
}
