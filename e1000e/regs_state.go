package e1000e

import (
	"fmt"
	"sort"
)

// RegistersState is the MAC registers that hold state, by register name:
// single registers in Regs, arrays (MTA, RA, VFTA, RETA, RSSRK, ...) in
// Arrays. Statistics, interrupt registers (InterruptsState), STATUS
// (LinkState) and read-only registers are not in it.
type RegistersState struct {
	Regs   map[string]uint32   `msgpack:"regs"`
	Arrays map[string][]uint32 `msgpack:"arrays"`
}

// inRegistersState says whether a table row belongs to RegistersState.
func inRegistersState(r *regRow) bool {
	switch {
	case r.off >= CRCERRS && r.off <= ICRXOC: // statistics
		return false
	case r.wr == wrReadOnly, r.rd == rdWriteOnly:
		return false
	case r.wr == wrPlain && r.wmask == 0 && r.w1c == 0:
		return false // nothing a guest can change
	}
	switch r.off {
	case STATUS, ICR, ICS, IMS, IVAR, EIAC, IAM, ITR, EITR0:
		return false
	}
	return true
}

// rowByName finds a table row by name.
func rowByName(name string) (*regRow, bool) {
	for i := range regTable {
		if regTable[i].name == name {
			return &regTable[i], true
		}
	}
	return nil, false
}

// saveRegisters fills a RegistersState. Called with n.mu held.
func (n *NIC) saveRegisters() RegistersState {
	s := RegistersState{Regs: map[string]uint32{}, Arrays: map[string][]uint32{}}
	for i := range regTable {
		r := &regTable[i]
		if !inRegistersState(r) {
			continue
		}
		d := r.off / 4
		if r.n == 1 {
			s.Regs[r.name] = n.mac[d]
			continue
		}
		s.Arrays[r.name] = append([]uint32(nil), n.mac[d:d+r.n]...)
	}
	return s
}

// Validate checks a RegistersState from a migration stream: known names,
// exact array lengths, read-only bits at their reset values, and the
// invariants of the registers with hooks.
func (s *RegistersState) Validate() error {
	for _, name := range sortedKeys(s.Regs) {
		r, ok := rowByName(name)
		if !ok || !inRegistersState(r) || r.n != 1 {
			return fmt.Errorf("e1000e: registers: unknown register %q", name)
		}
		if err := checkRegValue(r, s.Regs[name]); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(s.Arrays) {
		r, ok := rowByName(name)
		if !ok || !inRegistersState(r) || r.n == 1 {
			return fmt.Errorf("e1000e: registers: unknown array %q", name)
		}
		a := s.Arrays[name]
		if uint32(len(a)) != r.n {
			return fmt.Errorf("e1000e: registers: %s has %d entries, want %d", name, len(a), r.n)
		}
		for i, v := range a {
			if err := checkRegValue(r, v); err != nil {
				return fmt.Errorf("%w (entry %d)", err, i)
			}
		}
	}
	return nil
}

// checkRegValue refuses a value no guest write could have produced.
func checkRegValue(r *regRow, v uint32) error {
	bad := func(why string) error {
		return fmt.Errorf("e1000e: registers: %s = %#x: %s", r.name, v, why)
	}
	switch r.wr {
	case wrPlain:
		if fixed := ^(r.wmask | r.wmaskOdd | r.w1c | r.legacy); v&fixed != r.reset&fixed {
			return bad("read-only bits differ from the hardware's")
		}
	case wrCTRL:
		if v&CTRL_RST != 0 {
			return bad("reset in progress")
		}
	case wrEECD:
		if v&(EECD_PRES|EECD_AUTO_RD) != EECD_PRES|EECD_AUTO_RD || v&eecdFlash != 0 || v&eecdSizeEx != 0 {
			return bad("NVM presence or size bits")
		}
	case wrCTRLExt:
		if v&(CTRL_EXT_ASDCHK|CTRL_EXT_EE_RST) != 0 {
			return bad("self-clearing bits set")
		}
	default:
		if fixed := ^r.wmask; r.wmask != 0 && v&fixed != r.reset&fixed && r.wr != wrMDIC && r.wr != wrEERD && r.wr != wrEEWR {
			return bad("bits outside the write mask")
		}
	}
	return nil
}

// restoreRegisters applies a validated RegistersState; registers it does
// not name keep their reset values. Called with n.mu held.
func (n *NIC) restoreRegisters(s *RegistersState) {
	for name, v := range s.Regs {
		r, _ := rowByName(name)
		n.mac[r.off/4] = r.dropLegacy(0, v)
	}
	for name, a := range s.Arrays {
		r, _ := rowByName(name)
		for i, v := range a[:r.n] {
			n.mac[r.off/4+uint32(i)] = r.dropLegacy(uint32(i), v)
		}
	}
}

// dropLegacy returns v, a value for dword i of the row from a migration
// stream, with the bits an older server kept but the part does not
// implement put back to their reset values.
func (r *regRow) dropLegacy(i, v uint32) uint32 {
	drop := r.legacy &^ r.maskAt(i)
	return v&^drop | r.reset&drop
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
