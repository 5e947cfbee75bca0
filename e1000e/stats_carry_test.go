package e1000e

import "testing"

// TestAddStat64: addStat carries into the high dword exactly for the
// table's two-dword statistics rows, and saturates the others at 32 bits.
func TestAddStat64(t *testing.T) {
	n := newStateNIC(t, -1)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range regTable {
		if r.home != secStats {
			continue
		}
		d := r.off >> 2
		n.mac[d] = 0xFFFFFFFF
		if r.n == 2 {
			n.mac[d+1] = 0
		}
		n.addStat(r.off, 2)
		switch {
		case r.n == 2 && (n.mac[d] != 1 || n.mac[d+1] != 1):
			t.Errorf("%s: %#x:%#x after a carry, want 1:1", r.name, n.mac[d+1], n.mac[d])
		case r.n == 1 && n.mac[d] != 0xFFFFFFFF:
			t.Errorf("%s: %#x, want saturated at 32 bits", r.name, n.mac[d])
		}
	}
}
