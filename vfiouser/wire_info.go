package vfiouser

import (
	"fmt"
	"syscall"
)

// Sizes of the info payloads.
const (
	DeviceInfoSize   = 16
	RegionInfoSize   = 32
	IRQInfoSize      = 16
	RegionIOFDsSize  = 16
	capHeaderSize    = 8
	sparseFixedSize  = 8 // nr_areas, reserved
	sparseAreaSize   = 16
	capTypeBodySize  = 8
	maxSparseAreas   = 64
	maxCapChainBytes = 4096
)

// Device info flags.
const (
	DeviceFlagReset uint32 = 1
	DeviceFlagPCI   uint32 = 2
)

// Region info flags beyond device.RegionFlags.
const RegionFlagCaps uint32 = 8

// Region capability ids.
const (
	CapSparseMMap uint16 = 1
	CapType       uint16 = 2
)

// DeviceInfo is the payload of DEVICE_GET_INFO.
type DeviceInfo struct {
	Argsz, Flags, NumRegions, NumIRQs uint32
}

// Encode writes d into b[:DeviceInfoSize].
func (d DeviceInfo) Encode(b []byte) { encode4(b, d.Argsz, d.Flags, d.NumRegions, d.NumIRQs) }

// DecodeDeviceInfo parses a DEVICE_GET_INFO payload.
func DecodeDeviceInfo(p []byte) (DeviceInfo, error) {
	a, f, n, i, err := decode4(p, "device info")
	return DeviceInfo{a, f, n, i}, err
}

// IRQInfo is the payload of DEVICE_GET_IRQ_INFO.
type IRQInfo struct {
	Argsz, Flags, Index, Count uint32
}

// Encode writes q into b[:IRQInfoSize].
func (q IRQInfo) Encode(b []byte) { encode4(b, q.Argsz, q.Flags, q.Index, q.Count) }

// DecodeIRQInfo parses a DEVICE_GET_IRQ_INFO payload.
func DecodeIRQInfo(p []byte) (IRQInfo, error) {
	a, f, x, c, err := decode4(p, "irq info")
	return IRQInfo{a, f, x, c}, err
}

// RegionIOFDs is the fixed part of DEVICE_GET_REGION_IO_FDS.
type RegionIOFDs struct {
	Argsz, Flags, Index, Count uint32
}

// Encode writes r into b[:RegionIOFDsSize].
func (r RegionIOFDs) Encode(b []byte) { encode4(b, r.Argsz, r.Flags, r.Index, r.Count) }

// DecodeRegionIOFDs parses a DEVICE_GET_REGION_IO_FDS payload.
func DecodeRegionIOFDs(p []byte) (RegionIOFDs, error) {
	a, f, x, c, err := decode4(p, "region io fds")
	return RegionIOFDs{a, f, x, c}, err
}

func encode4(b []byte, a, c, d, e uint32) {
	_ = b[15]
	le.PutUint32(b[0:], a)
	le.PutUint32(b[4:], c)
	le.PutUint32(b[8:], d)
	le.PutUint32(b[12:], e)
}

func decode4(p []byte, what string) (a, b, c, d uint32, err error) {
	if len(p) < 16 {
		return 0, 0, 0, 0, fmt.Errorf("%s: payload %d bytes: %w", what, len(p), syscall.EINVAL)
	}
	return le.Uint32(p[0:]), le.Uint32(p[4:]), le.Uint32(p[8:]), le.Uint32(p[12:]), nil
}

// RegionInfo is the fixed part of DEVICE_GET_REGION_INFO.
type RegionInfo struct {
	Argsz, Flags, Index, CapOffset uint32
	Size, Offset                   uint64
}

// Encode writes r into b[:RegionInfoSize].
func (r RegionInfo) Encode(b []byte) {
	_ = b[RegionInfoSize-1]
	le.PutUint32(b[0:], r.Argsz)
	le.PutUint32(b[4:], r.Flags)
	le.PutUint32(b[8:], r.Index)
	le.PutUint32(b[12:], r.CapOffset)
	le.PutUint64(b[16:], r.Size)
	le.PutUint64(b[24:], r.Offset)
}

// DecodeRegionInfo parses the fixed part of a DEVICE_GET_REGION_INFO payload.
func DecodeRegionInfo(p []byte) (RegionInfo, error) {
	if len(p) < RegionInfoSize {
		return RegionInfo{}, fmt.Errorf("region info: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return RegionInfo{
		Argsz: le.Uint32(p[0:]), Flags: le.Uint32(p[4:]), Index: le.Uint32(p[8:]),
		CapOffset: le.Uint32(p[12:]), Size: le.Uint64(p[16:]), Offset: le.Uint64(p[24:]),
	}, nil
}

// RegionCaps is the decoded capability chain of a region info reply.
type RegionCaps struct {
	Sparse        []SparseArea // nil when no SPARSE_MMAP capability
	HasType       bool
	Type, Subtype uint32
}

// SparseArea is one mappable area of a region.
type SparseArea struct {
	Offset, Size uint64
}

// encodeRegionCaps appends the capability chain for caps to b, where b
// already holds the fixed region info (its length is the offset of the first
// capability). It returns the new buffer and the offset of the first
// capability, 0 when there is none.
func encodeRegionCaps(b []byte, caps RegionCaps) ([]byte, uint32) {
	first := uint32(0)
	prevNext := -1
	link := func() {
		off := uint32(len(b))
		if prevNext >= 0 {
			le.PutUint32(b[prevNext:], off)
		} else {
			first = off
		}
		prevNext = len(b) + 4
	}
	if caps.Sparse != nil {
		link()
		var h [capHeaderSize + sparseFixedSize]byte
		le.PutUint16(h[0:], CapSparseMMap)
		le.PutUint16(h[2:], 1)
		le.PutUint32(h[8:], uint32(len(caps.Sparse)))
		b = append(b, h[:]...)
		for _, a := range caps.Sparse {
			var e [sparseAreaSize]byte
			le.PutUint64(e[0:], a.Offset)
			le.PutUint64(e[8:], a.Size)
			b = append(b, e[:]...)
		}
	}
	if caps.HasType {
		link()
		var h [capHeaderSize + capTypeBodySize]byte
		le.PutUint16(h[0:], CapType)
		le.PutUint16(h[2:], 1)
		le.PutUint32(h[8:], caps.Type)
		le.PutUint32(h[12:], caps.Subtype)
		b = append(b, h[:]...)
	}
	return b, first
}

// DecodeRegionCaps walks the capability chain of a region info reply p
// (starting with the fixed part) from offset first. The walk is bounded: each
// capability must lie inside p, offsets must increase, and the chain holds at
// most a few entries. Unknown capabilities are skipped.
func DecodeRegionCaps(p []byte, first uint32) (RegionCaps, error) {
	var caps RegionCaps
	off := uint64(first)
	for n := 0; off != 0; n++ {
		if n >= 16 {
			return caps, fmt.Errorf("region caps: chain too long: %w", syscall.EINVAL)
		}
		if off < RegionInfoSize || off+capHeaderSize > uint64(len(p)) {
			return caps, fmt.Errorf("region caps: capability at %d outside %d bytes: %w", off, len(p), syscall.EINVAL)
		}
		id := le.Uint16(p[off:])
		next := uint64(le.Uint32(p[off+4:]))
		body := p[off+capHeaderSize:]
		switch id {
		case CapSparseMMap:
			if len(body) < sparseFixedSize {
				return caps, fmt.Errorf("region caps: short sparse mmap: %w", syscall.EINVAL)
			}
			nr := uint64(le.Uint32(body[0:]))
			if nr > maxSparseAreas || uint64(len(body)) < sparseFixedSize+nr*sparseAreaSize {
				return caps, fmt.Errorf("region caps: %d sparse areas: %w", nr, syscall.EINVAL)
			}
			caps.Sparse = make([]SparseArea, nr)
			for i := range caps.Sparse {
				e := body[sparseFixedSize+i*sparseAreaSize:]
				caps.Sparse[i] = SparseArea{Offset: le.Uint64(e[0:]), Size: le.Uint64(e[8:])}
			}
		case CapType:
			if len(body) < capTypeBodySize {
				return caps, fmt.Errorf("region caps: short type: %w", syscall.EINVAL)
			}
			caps.HasType = true
			caps.Type, caps.Subtype = le.Uint32(body[0:]), le.Uint32(body[4:])
		}
		if next != 0 && next <= off {
			return caps, fmt.Errorf("region caps: next %d not after %d: %w", next, off, syscall.EINVAL)
		}
		off = next
	}
	return caps, nil
}
