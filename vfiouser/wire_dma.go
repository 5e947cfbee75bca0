package vfiouser

import (
	"fmt"
	"syscall"
)

// Sizes of the DMA payloads.
const (
	DMAMapSize   = 32
	DMAUnmapSize = 24
	BitmapSize   = 16
	DMARWSize    = 16
)

// DMA_MAP flags.
const (
	DMAFlagRead  uint32 = 1
	DMAFlagWrite uint32 = 2
)

// DMA_UNMAP flags.
const (
	UnmapFlagGetDirtyBitmap uint32 = 1
	UnmapFlagAll            uint32 = 2
)

// DMAMap is the payload of DMA_MAP.
type DMAMap struct {
	Argsz, Flags uint32
	Offset       uint64 // file offset of the mapping in the fd sent along
	Addr, Size   uint64
}

// Encode writes m into b[:DMAMapSize].
func (m DMAMap) Encode(b []byte) {
	_ = b[DMAMapSize-1]
	le.PutUint32(b[0:], m.Argsz)
	le.PutUint32(b[4:], m.Flags)
	le.PutUint64(b[8:], m.Offset)
	le.PutUint64(b[16:], m.Addr)
	le.PutUint64(b[24:], m.Size)
}

// DecodeDMAMap parses a DMA_MAP payload.
func DecodeDMAMap(p []byte) (DMAMap, error) {
	if len(p) < DMAMapSize {
		return DMAMap{}, fmt.Errorf("dma map: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return DMAMap{
		Argsz: le.Uint32(p[0:]), Flags: le.Uint32(p[4:]),
		Offset: le.Uint64(p[8:]), Addr: le.Uint64(p[16:]), Size: le.Uint64(p[24:]),
	}, nil
}

// DMAUnmap is the payload of DMA_UNMAP (request and reply).
type DMAUnmap struct {
	Argsz, Flags uint32
	Addr, Size   uint64
}

// Encode writes u into b[:DMAUnmapSize].
func (u DMAUnmap) Encode(b []byte) {
	_ = b[DMAUnmapSize-1]
	le.PutUint32(b[0:], u.Argsz)
	le.PutUint32(b[4:], u.Flags)
	le.PutUint64(b[8:], u.Addr)
	le.PutUint64(b[16:], u.Size)
}

// DecodeDMAUnmap parses a DMA_UNMAP payload.
func DecodeDMAUnmap(p []byte) (DMAUnmap, error) {
	if len(p) < DMAUnmapSize {
		return DMAUnmap{}, fmt.Errorf("dma unmap: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return DMAUnmap{Argsz: le.Uint32(p[0:]), Flags: le.Uint32(p[4:]),
		Addr: le.Uint64(p[8:]), Size: le.Uint64(p[16:])}, nil
}

// Bitmap describes a dirty bitmap (struct vfio_bitmap without its pointer):
// one bit per PgSize bytes, Size bytes of bitmap.
type Bitmap struct {
	PgSize, Size uint64
}

// Encode writes m into b[:BitmapSize].
func (m Bitmap) Encode(b []byte) {
	_ = b[BitmapSize-1]
	le.PutUint64(b[0:], m.PgSize)
	le.PutUint64(b[8:], m.Size)
}

// DecodeBitmap parses a bitmap descriptor.
func DecodeBitmap(p []byte) (Bitmap, error) {
	if len(p) < BitmapSize {
		return Bitmap{}, fmt.Errorf("bitmap: %d bytes: %w", len(p), syscall.EINVAL)
	}
	return Bitmap{PgSize: le.Uint64(p[0:]), Size: le.Uint64(p[8:])}, nil
}

// DMARW is the fixed part of DMA_READ and DMA_WRITE, in the layout of the
// specification: address u64, count u64, then data.
type DMARW struct {
	Addr, Count uint64
}

// Encode writes d into b[:DMARWSize].
func (d DMARW) Encode(b []byte) {
	_ = b[DMARWSize-1]
	le.PutUint64(b[0:], d.Addr)
	le.PutUint64(b[8:], d.Count)
}

// DecodeDMARW parses the fixed part of DMA_READ/DMA_WRITE.
func DecodeDMARW(p []byte) (DMARW, error) {
	if len(p) < DMARWSize {
		return DMARW{}, fmt.Errorf("dma rw: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return DMARW{Addr: le.Uint64(p[0:]), Count: le.Uint64(p[8:])}, nil
}

// encodeDMARW builds the payload of a DMA_READ/DMA_WRITE message (request or
// read reply) carrying data (nil for a read request). QEMU 10.1 to 11.1
// use this layout too: with a real guest, the data of its DMA_READ replies
// starts at offset 16.
func encodeDMARW(addr uint64, count int, data []byte) []byte {
	p := make([]byte, DMARWSize+len(data))
	DMARW{Addr: addr, Count: uint64(count)}.Encode(p)
	copy(p[DMARWSize:], data)
	return p
}

// decodeDMARW reads address and count and returns the data that follows,
// which must hold at least count bytes when wantData is set.
func decodeDMARW(p []byte, wantData bool) (addr, count uint64, data []byte, err error) {
	d, err := DecodeDMARW(p)
	if err != nil {
		return 0, 0, nil, err
	}
	if !wantData {
		return d.Addr, d.Count, nil, nil
	}
	if uint64(len(p)-DMARWSize) < d.Count {
		return d.Addr, d.Count, nil, fmt.Errorf("dma rw: %d bytes of data for count %d: %w", len(p)-DMARWSize, d.Count, syscall.EINVAL)
	}
	return d.Addr, d.Count, p[DMARWSize : DMARWSize+int(d.Count)], nil
}
