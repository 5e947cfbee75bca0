package e1000e

import "fmt"

// StatsState is the statistics counters by name, as Stats reports them
// (64-bit counters under their name without the L/H suffix).
type StatsState struct {
	Counters map[string]uint64 `msgpack:"counters"`
}

// saveStatsState fills a StatsState. Called with n.mu held.
func (n *NIC) saveStatsState() StatsState {
	s := StatsState{Counters: map[string]uint64{}}
	for i := range regTable {
		r := &regTable[i]
		if r.off < CRCERRS || r.off > ICRXOC || r.rd == rdStatHigh {
			continue
		}
		v := uint64(n.mac[r.off/4])
		name := r.name
		if i+1 < len(regTable) && regTable[i+1].rd == rdStatHigh {
			v |= uint64(n.mac[r.off/4+1]) << 32
			name = name[:len(name)-1]
		}
		s.Counters[name] = v
	}
	return s
}

// statRow returns the row of a counter name and whether it is 64 bits.
func statRow(name string) (*regRow, bool, bool) {
	for i := range regTable {
		r := &regTable[i]
		if r.off < CRCERRS || r.off > ICRXOC || r.rd == rdStatHigh {
			continue
		}
		wide := i+1 < len(regTable) && regTable[i+1].rd == rdStatHigh
		if r.name == name || (wide && r.name == name+"L") {
			return r, wide, true
		}
	}
	return nil, false, false
}

// Validate checks names and widths.
func (s *StatsState) Validate() error {
	for _, name := range sortedKeys(s.Counters) {
		_, wide, ok := statRow(name)
		if !ok {
			return fmt.Errorf("e1000e: stats: unknown counter %q", name)
		}
		if !wide && s.Counters[name] > 0xFFFFFFFF {
			return fmt.Errorf("e1000e: stats: %s = %d exceeds 32 bits", name, s.Counters[name])
		}
	}
	return nil
}

// restoreStats applies a validated StatsState; unnamed counters are zero.
// Called with n.mu held.
func (n *NIC) restoreStats(s *StatsState) {
	for i := range regTable {
		r := &regTable[i]
		if r.off >= CRCERRS && r.off <= ICRXOC {
			n.mac[r.off/4] = 0
		}
	}
	for name, v := range s.Counters {
		r, wide, _ := statRow(name)
		d := r.off / 4
		n.mac[d] = uint32(v)
		if wide {
			n.mac[d+1] = uint32(v >> 32)
		}
	}
}
