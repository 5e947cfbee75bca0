package vfiouser

import (
	"bytes"
	"testing"
)

// dmaModel is the simple model the table is compared with: a list of
// mappings, searched linearly, onto one backing file.
type dmaModel struct {
	maps []DMAMap
	file []byte
}

func (m *dmaModel) overlaps(addr, size uint64) bool {
	for _, x := range m.maps {
		if addr < x.Addr+x.Size && x.Addr < addr+size {
			return true
		}
	}
	return false
}

// byteAt returns the file offset of guest address a, if mapped with perm.
func (m *dmaModel) byteAt(a uint64, perm uint32) (int, bool) {
	for _, x := range m.maps {
		if a >= x.Addr && a < x.Addr+x.Size {
			return int(x.Offset + a - x.Addr), x.Flags&perm != 0
		}
	}
	return 0, false
}

// FuzzDMATable runs random map, unmap, read and write operations against
// the table and the model: both must agree on success and on the bytes.
func FuzzDMATable(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 3, 2, 0, 0, 10, 3, 1, 0, 4, 0, 2, 50})
	f.Add([]byte{0, 1, 0, 1, 3, 0, 2, 0, 1, 3, 2, 1, 15, 0, 40, 3, 0, 1, 0, 1})
	const pages = 16
	f.Fuzz(func(t *testing.T, ops []byte) {
		mem, err := NewMemory(pages * DMAPageSize)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		tab := NewDMATable(DMALimits{MaxMaps: 6, MaxTotal: 12 * DMAPageSize})
		defer tab.UnmapAll()
		model := &dmaModel{file: mem.Data}
		// Each operation takes 4 bytes; the loop is bounded by the input.
		for len(ops) >= 4 {
			op, a, b, c := ops[0]%4, uint64(ops[1]), uint64(ops[2]), ops[3]
			ops = ops[4:]
			switch op {
			case 0: // map: page a%24 for b%6 pages from file page c%16
				addr, size := (a%24)*DMAPageSize, (b%6)*DMAPageSize
				off := uint64(c%pages) * DMAPageSize
				flags := uint32(c>>4)%3 + 1
				err := tab.Map(DMAMap{Flags: flags, Offset: off, Addr: addr, Size: size}, mem.FD())
				want := size != 0 && off+size <= pages*DMAPageSize && !model.overlaps(addr, size) &&
					len(model.maps) < 6 && totalOf(model.maps)+size <= 12*DMAPageSize
				if (err == nil) != want {
					t.Fatalf("map [%#x+%#x] @%#x: %v, model says %v", addr, size, off, err, want)
				}
				if err == nil {
					model.maps = append(model.maps, DMAMap{Flags: flags, Offset: off, Addr: addr, Size: size})
				}
			case 1: // unmap
				addr, size := (a%24)*DMAPageSize, (b%6)*DMAPageSize
				err := tab.Unmap(addr, size, 0, nil)
				idx := -1
				for i, x := range model.maps {
					if x.Addr == addr && x.Size == size {
						idx = i
					}
				}
				if (err == nil) != (idx >= 0) {
					t.Fatalf("unmap [%#x+%#x]: %v, model has %d", addr, size, err, idx)
				}
				if idx >= 0 {
					model.maps = append(model.maps[:idx], model.maps[idx+1:]...)
				}
			case 2, 3: // read or write of c bytes at byte address a*b*37
				addr := (a*256 + b) * 37 % (26 * DMAPageSize)
				n := int(c) * 41
				write := op == 3
				perm := DMAFlagRead
				if write {
					perm = DMAFlagWrite
				}
				ok := true
				for i := range n {
					if _, p := model.byteAt(addr+uint64(i), perm); !p {
						ok = false
						break
					}
				}
				buf := make([]byte, n)
				for i := range buf {
					buf[i] = byte(i) ^ c
				}
				var err error
				if write {
					err = tab.Write(addr, buf)
				} else {
					err = tab.Read(addr, buf)
				}
				if (err == nil) != ok {
					t.Fatalf("access write=%v [%#x+%d]: %v, model says %v", write, addr, n, err, ok)
				}
				if err != nil {
					continue
				}
				want := make([]byte, n)
				for i := range n {
					o, _ := model.byteAt(addr+uint64(i), perm)
					want[i] = model.file[o]
				}
				if !bytes.Equal(buf, want) {
					t.Fatalf("access write=%v [%#x+%d]: bytes differ", write, addr, n)
				}
			}
		}
	})
}

func totalOf(maps []DMAMap) uint64 {
	var t uint64
	for _, m := range maps {
		t += m.Size
	}
	return t
}
