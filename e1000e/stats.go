package e1000e

// addStat adds delta to a statistics register, saturating. The 64-bit
// counters (GORC, GOTC, TOR, TOT: the table's two-dword statistics rows,
// which TestAddStat64 holds this list to) are named by their low half and
// carry into the high half. A switch on constants, not a table lookup: it
// runs several times for every frame. Called with n.mu held.
func (n *NIC) addStat(off uint32, delta uint64) {
	d := (off >> 2) & (bar0Size/4 - 1)
	switch off {
	case GORCL, GOTCL, TORL, TOTL:
		v := uint64(n.mac[d]) | uint64(n.mac[d+1])<<32
		s := v + delta
		if s < v {
			s = ^uint64(0)
		}
		n.mac[d] = uint32(s)
		n.mac[d+1] = uint32(s >> 32)
	default:
		s := uint64(n.mac[d]) + delta
		if s > 0xFFFFFFFF || s < delta {
			s = 0xFFFFFFFF
		}
		n.mac[d] = uint32(s)
	}
}

// Stats returns the statistics counters by register name without clearing
// them (the guest's reads clear them; an administrator's must not). The
// 64-bit pairs appear once, under their name without the L/H suffix.
func (n *NIC) Stats() map[string]uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.saveStatsState().Counters
}
