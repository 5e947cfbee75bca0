package vfiouser

import (
	"fmt"
	"syscall"
)

// Sizes of the region access payloads.
const (
	RegionRWSize       = 16
	writeMultiHdrSize  = 8
	WriteMultiItemSize = 24
	writeMultiMaxData  = 8
)

// RegionRW is the fixed part of REGION_READ and REGION_WRITE.
type RegionRW struct {
	Offset uint64
	Region uint32
	Count  uint32
}

// Encode writes r into b[:RegionRWSize].
func (r RegionRW) Encode(b []byte) {
	_ = b[RegionRWSize-1]
	le.PutUint64(b[0:], r.Offset)
	le.PutUint32(b[8:], r.Region)
	le.PutUint32(b[12:], r.Count)
}

// DecodeRegionRW parses the fixed part of REGION_READ/REGION_WRITE.
func DecodeRegionRW(p []byte) (RegionRW, error) {
	if len(p) < RegionRWSize {
		return RegionRW{}, fmt.Errorf("region rw: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return RegionRW{Offset: le.Uint64(p[0:]), Region: le.Uint32(p[8:]), Count: le.Uint32(p[12:])}, nil
}

// WriteMultiItem is one write of REGION_WRITE_MULTI: at most 8 bytes.
type WriteMultiItem struct {
	Offset uint64
	Region uint32
	Count  uint32
	Data   [writeMultiMaxData]byte
}

// Encode writes w into b[:WriteMultiItemSize].
func (w WriteMultiItem) Encode(b []byte) {
	_ = b[WriteMultiItemSize-1]
	le.PutUint64(b[0:], w.Offset)
	le.PutUint32(b[8:], w.Region)
	le.PutUint32(b[12:], w.Count)
	copy(b[16:24], w.Data[:])
}

// DecodeWriteMultiItem parses one write of REGION_WRITE_MULTI.
func DecodeWriteMultiItem(p []byte) (WriteMultiItem, error) {
	if len(p) < WriteMultiItemSize {
		return WriteMultiItem{}, fmt.Errorf("write multi: item %d bytes: %w", len(p), syscall.EINVAL)
	}
	w := WriteMultiItem{Offset: le.Uint64(p[0:]), Region: le.Uint32(p[8:]), Count: le.Uint32(p[12:])}
	copy(w.Data[:], p[16:24])
	if w.Count == 0 || w.Count > writeMultiMaxData {
		return w, fmt.Errorf("write multi: count %d: %w", w.Count, syscall.EINVAL)
	}
	return w, nil
}
