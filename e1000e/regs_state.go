package e1000e

import (
	"fmt"
	"sort"
)

// RegistersState is the MAC registers whose rows the registers section
// carries (home secRegisters), by register name: single registers in Regs,
// arrays (MTA, VFTA, RETA, RSSRK, ...) in Arrays. The rings, interrupts,
// STATUS, receive addresses and statistics travel in sections of their
// own; constants and computed registers in none.
type RegistersState struct {
	Regs   map[string]uint32   `msgpack:"regs"`
	Arrays map[string][]uint32 `msgpack:"arrays"`
}

// saveRegisters fills a RegistersState. Called with n.mu held.
func (n *NIC) saveRegisters() RegistersState {
	s := RegistersState{Regs: map[string]uint32{}, Arrays: map[string][]uint32{}}
	for i := range n.regs.rows {
		r := &n.regs.rows[i]
		if r.home != secRegisters {
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

// registersRow finds the row a name in the registers section stands for.
func registersRow(name string) (*regRow, error) {
	r, ok := rowByName(name)
	switch {
	case !ok || r.home == "":
		return nil, fmt.Errorf("e1000e: registers: unknown register %q", name)
	case r.home != secRegisters:
		return nil, fmt.Errorf("e1000e: registers: %s belongs in section %s", name, r.home)
	}
	return r, nil
}

// Validate checks a RegistersState from a migration stream: names of rows
// the registers section carries, exact array lengths, and each value as
// its row says (checkLoaded).
func (s *RegistersState) Validate() error {
	for _, name := range sortedKeys(s.Regs) {
		r, err := registersRow(name)
		if err != nil {
			return err
		}
		if r.n != 1 {
			return fmt.Errorf("e1000e: registers: %s is an array", name)
		}
		if err := r.checkLoaded(0, s.Regs[name]); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(s.Arrays) {
		r, err := registersRow(name)
		if err != nil {
			return err
		}
		a := s.Arrays[name]
		if r.n == 1 {
			return fmt.Errorf("e1000e: registers: %s is not an array", name)
		}
		if uint32(len(a)) != r.n {
			return fmt.Errorf("e1000e: registers: %s has %d entries, want %d", name, len(a), r.n)
		}
		for i, v := range a {
			if err := r.checkLoaded(uint32(i), v); err != nil {
				return fmt.Errorf("%w (entry %d)", err, i)
			}
		}
	}
	return nil
}

// checkLoaded refuses a value for dword i of the row that no guest write
// could have produced: bits the part does not implement (outside the
// mask, write-1-to-clear and legacy bits) away from their reset value, or
// what the row's own check rules out.
func (r *regRow) checkLoaded(i, v uint32) error {
	if fixed := ^(r.maskAt(i) | r.w1c | r.legacy); v&fixed != r.reset&fixed {
		return fmt.Errorf("e1000e: registers: %s = %#x: read-only or self-clearing bits differ from reset", r.name, v)
	}
	if r.check != nil {
		if err := r.check(v); err != nil {
			return fmt.Errorf("e1000e: registers: %s = %#x: %w", r.name, v, err)
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
