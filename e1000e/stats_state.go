package e1000e

import "fmt"

// StatsState is the statistics counters by name, as Stats reports them
// (64-bit counters under their name without the L/H suffix).
type StatsState struct {
	Counters map[string]uint64 `msgpack:"counters"`
}

// saveStatsState fills a StatsState from the rows the stats section
// carries. Called with n.mu held.
func (n *NIC) saveStatsState() StatsState {
	s := StatsState{Counters: map[string]uint64{}}
	for i := range n.regs.rows {
		r := &n.regs.rows[i]
		if r.home != secStats {
			continue
		}
		v := uint64(n.mac[r.off/4])
		if r.n == 2 {
			v |= uint64(n.mac[r.off/4+1]) << 32
		}
		s.Counters[r.name] = v
	}
	return s
}

// statRow returns the row of a counter name and whether it is 64 bits.
func statRow(name string) (*regRow, bool, bool) {
	r, ok := rowByName(name)
	if !ok || r.home != secStats {
		return nil, false, false
	}
	return r, r.n == 2, true
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
	for i := range n.regs.rows {
		r := &n.regs.rows[i]
		if r.home == secStats {
			clear(n.mac[r.off/4 : r.off/4+r.n])
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
