package vfiouser

import (
	"fmt"
	"syscall"
)

// IRQSetSize is the fixed part of DEVICE_SET_IRQS.
const IRQSetSize = 20

// SET_IRQS flag groups: exactly one of each must be set.
const (
	irqSetDataMask   uint32 = 1 | 2 | 4
	irqSetActionMask uint32 = 8 | 16 | 32
)

// IRQSet is the fixed part of DEVICE_SET_IRQS; DATA_BOOL requests carry Count
// bytes after it, DATA_EVENTFD requests carry Count fds.
type IRQSet struct {
	Argsz, Flags, Index, Start, Count uint32
}

// Encode writes s into b[:IRQSetSize].
func (s IRQSet) Encode(b []byte) {
	_ = b[IRQSetSize-1]
	le.PutUint32(b[0:], s.Argsz)
	le.PutUint32(b[4:], s.Flags)
	le.PutUint32(b[8:], s.Index)
	le.PutUint32(b[12:], s.Start)
	le.PutUint32(b[16:], s.Count)
}

// DecodeIRQSet parses the fixed part of a DEVICE_SET_IRQS payload.
func DecodeIRQSet(p []byte) (IRQSet, error) {
	if len(p) < IRQSetSize {
		return IRQSet{}, fmt.Errorf("set irqs: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return IRQSet{Argsz: le.Uint32(p[0:]), Flags: le.Uint32(p[4:]), Index: le.Uint32(p[8:]),
		Start: le.Uint32(p[12:]), Count: le.Uint32(p[16:])}, nil
}
