package device

import (
	"fmt"
	"math/bits"
)

// BARKind is the kind of address space a BAR decodes.
type BARKind uint8

// BAR kinds. The zero value means "no BAR".
const (
	BARNone BARKind = iota
	BARMem32
	BARMem64 // takes two BAR registers: this one and the next
	BARIO
)

// BAR describes one base address register.
type BAR struct {
	Kind         BARKind
	Size         uint64 // a power of two: at least 16 for memory, 4 to 256 for I/O
	Prefetchable bool   // memory BARs only
}

// Low bits of BAR registers, read-only.
const (
	barIOSpace      = 0x1
	barMemType64    = 0x4
	barPrefetchable = 0x8
)

// AddBAR declares BAR index (0-5). Its type bits are read-only and its
// address bits below the size read as zero, so software sizes it by writing
// all ones and reading back. A 64-bit BAR also occupies index+1.
func (c *ConfigSpace) AddBAR(index int, b BAR) error {
	if index < 0 || index > 5 {
		return fmt.Errorf("BAR index %d out of 0-5", index)
	}
	if c.bars[index].Kind != BARNone || (index > 0 && c.bars[index-1].Kind == BARMem64) {
		return fmt.Errorf("BAR %d already declared", index)
	}
	if b.Size == 0 || bits.OnesCount64(b.Size) != 1 {
		return fmt.Errorf("BAR %d size %#x is not a power of two", index, b.Size)
	}
	off := CfgBAR0 + 4*index
	switch b.Kind {
	case BARMem32:
		if b.Size < 16 || b.Size > 1<<31 {
			return fmt.Errorf("BAR %d: 32-bit memory size %#x out of 16 B-2 GiB", index, b.Size)
		}
		var low uint32
		if b.Prefetchable {
			low |= barPrefetchable
		}
		c.init32(off, low)
		c.setMask32(off, ^uint32(b.Size-1)&^0xF)
	case BARMem64:
		if index == 5 {
			return fmt.Errorf("BAR 5 cannot be 64-bit")
		}
		if c.bars[index+1].Kind != BARNone {
			return fmt.Errorf("BAR %d: upper half %d already declared", index, index+1)
		}
		if b.Size < 16 || b.Size > 1<<62 {
			return fmt.Errorf("BAR %d: 64-bit memory size %#x out of range", index, b.Size)
		}
		low := uint32(barMemType64)
		if b.Prefetchable {
			low |= barPrefetchable
		}
		mask := ^(b.Size - 1)
		c.init32(off, low)
		c.setMask32(off, uint32(mask)&^0xF)
		c.setMask32(off+4, uint32(mask>>32))
	case BARIO:
		if b.Size < 4 || b.Size > 256 {
			return fmt.Errorf("BAR %d: I/O size %#x out of 4-256", index, b.Size)
		}
		if b.Prefetchable {
			return fmt.Errorf("BAR %d: I/O cannot be prefetchable", index)
		}
		c.init32(off, barIOSpace)
		c.setMask32(off, ^uint32(b.Size-1)&^0x3)
	default:
		return fmt.Errorf("BAR %d: unknown kind %d", index, b.Kind)
	}
	c.bars[index] = b
	return nil
}

// BARInfo returns the declared BAR at index; Kind is BARNone for an absent
// BAR or the upper half of a 64-bit one.
func (c *ConfigSpace) BARInfo(index int) BAR {
	if index < 0 || index > 5 {
		return BAR{}
	}
	return c.bars[index]
}
