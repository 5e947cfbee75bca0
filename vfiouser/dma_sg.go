package vfiouser

// Fragment is one piece of guest memory in a scatter-gather list, as a
// descriptor ring names them.
type Fragment struct {
	Addr, Len uint64
}

// ReadSG gathers the fragments, in order, into p, and returns the bytes
// copied: len(p) or the fragments' total, whichever is smaller. The loop is
// bounded by len(sg).
func (t *DMATable) ReadSG(sg []Fragment, p []byte) (int, error) {
	return t.sg(sg, p, false)
}

// WriteSG scatters p over the fragments, in order, and returns the bytes
// copied (marked dirty while logging).
func (t *DMATable) WriteSG(sg []Fragment, p []byte) (int, error) {
	return t.sg(sg, p, true)
}

func (t *DMATable) sg(sg []Fragment, p []byte, write bool) (int, error) {
	done := 0
	for _, f := range sg {
		if done == len(p) {
			break
		}
		n := uint64(len(p) - done)
		if f.Len < n {
			n = f.Len
		}
		seg := p[done : done+int(n)]
		if err := t.access(f.Addr, seg, write); err != nil {
			return done, err
		}
		done += int(n)
	}
	return done, nil
}
