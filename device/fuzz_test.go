package device

import (
	"encoding/binary"
	"testing"
)

// FuzzConfigWrite applies a sequence of writes, each of a 16-bit offset,
// a length and data, to the 82574L layout. No write may panic, change a
// read-only bit, or set a write-1-to-clear bit; out-of-range ones must fail.
func FuzzConfigWrite(f *testing.F) {
	f.Add([]byte{0x04, 0x00, 2, 0xFF, 0xFF})                   // command all ones
	f.Add([]byte{0x10, 0x00, 4, 0xFF, 0xFF, 0xFF, 0xFF})       // BAR sizing
	f.Add([]byte{0xA2, 0x00, 2, 0x00, 0xC0})                   // MSI-X enable + mask
	f.Add([]byte{0xD2, 0x00, 2, 0x71, 0x00})                   // MSI enable, MME 7
	f.Add([]byte{0xCC, 0x00, 2, 0x02, 0x00})                   // PM to D2
	f.Add([]byte{0x03, 0x00, 5, 1, 2, 3, 4, 5})                // straddles registers
	f.Add([]byte{0x04, 0x01, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0}) // AER status, short data
	f.Add([]byte{0xFE, 0x0F, 4, 1, 2, 3, 4})                   // past the end
	f.Fuzz(func(t *testing.T, in []byte) {
		cs := nicLayout(t)
		for n := 0; len(in) >= 3 && n < 64; n++ {
			off := int(binary.LittleEndian.Uint16(in))
			size := int(in[2])
			in = in[3:]
			size = min(size, len(in))
			p := in[:size]
			in = in[size:]

			before := cs.data
			err := cs.Write(uint64(off), p)
			if off+size > ConfigSize {
				if err == nil {
					t.Fatalf("write at %#x size %d beyond the space succeeded", off, size)
				}
				continue
			}
			if err != nil {
				t.Fatalf("write at %#x size %d: %v", off, size, err)
			}
			for i := range cs.data {
				ro := ^(cs.wmask[i] | cs.w1c[i])
				if (cs.data[i]^before[i])&ro != 0 {
					t.Fatalf("write at %#x size %d changed read-only bits of byte %#x: %#02x -> %#02x", off, size, i, before[i], cs.data[i])
				}
				if cs.data[i]&^before[i]&cs.w1c[i]&^cs.wmask[i] != 0 {
					t.Fatalf("write set write-1-to-clear bits of byte %#x", i)
				}
			}
		}
	})
}

// FuzzFunctionAccess drives random region reads and writes at a function:
// none may panic, and accesses beyond a region must fail.
func FuzzFunctionAccess(f *testing.F) {
	f.Add(uint8(RegionConfig), uint64(0), uint16(4), true, []byte{0xFF})
	f.Add(uint8(RegionBAR3), uint64(0x2000), uint16(8), false, []byte{})
	f.Add(uint8(RegionBAR3), uint64(0x1FFC), uint16(8), false, []byte{})
	f.Add(uint8(RegionBAR0), uint64(1<<17-1), uint16(2), true, []byte{1})
	f.Add(uint8(RegionMigration), uint64(0), uint16(1), false, []byte{})
	f.Fuzz(func(t *testing.T, idx uint8, off uint64, n uint16, write bool, fill []byte) {
		fn := NewFunction(nicLayout(t))
		r := &regs{mem: make([]byte, 128<<10)}
		fn.SetBARHandler(0, r)
		p := make([]byte, int(n)%9000)
		copy(p, fill)
		var err error
		if write {
			err = fn.WriteRegion(int(idx), off, p)
		} else {
			err = fn.ReadRegion(int(idx), off, p)
		}
		size := fn.regionSize(int(idx))
		inside := size != 0 && off <= size && uint64(len(p)) <= size-off
		if inside != (err == nil) {
			t.Fatalf("region %d at %#x size %d (region size %#x): err %v", idx, off, len(p), size, err)
		}
	})
}
