package vfiouser

import (
	"fmt"
	"syscall"
)

// Sizes of the feature and migration payloads.
const (
	FeatureSize       = 8  // argsz, flags
	MigStateSize      = 8  // device_state, data_fd
	LoggingStartSize  = 16 // page_size, num_ranges, reserved
	LoggingRangeSize  = 16
	LoggingReportSize = 24
	MigDataSize       = 8 // argsz, size
	DirtyPagesSize    = 8 // argsz, flags
	DirtyBitmapSize   = 32
)

// DEVICE_FEATURE flags.
const (
	FeatureMask  uint32 = 0xffff
	FeatureGet   uint32 = 1 << 16
	FeatureSet   uint32 = 1 << 17
	FeatureProbe uint32 = 1 << 18
)

// Device features. MigDataSize (9) is the Linux VFIO feature
// VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, which the vfio-user specification does
// not list but QEMU's migration code asks for; see doc.go.
const (
	FeatMigration       uint32 = 1
	FeatMigDeviceState  uint32 = 2
	FeatDMALoggingStart uint32 = 6
	FeatDMALoggingStop  uint32 = 7
	FeatDMALoggingRep   uint32 = 8
	FeatMigDataSize     uint32 = 9
)

// DIRTY_PAGES flags.
const (
	DirtyPagesStart     uint32 = 1
	DirtyPagesStop      uint32 = 2
	DirtyPagesGetBitmap uint32 = 4
)

// noDataFD is what data_fd holds on vfio-user, where no data fd exists.
const noDataFD = 0xffffffff

// Feature is the fixed part of DEVICE_FEATURE.
type Feature struct {
	Argsz, Flags uint32
}

// Encode writes f into b[:FeatureSize].
func (f Feature) Encode(b []byte) {
	_ = b[FeatureSize-1]
	le.PutUint32(b[0:], f.Argsz)
	le.PutUint32(b[4:], f.Flags)
}

// DecodeFeature parses the fixed part of DEVICE_FEATURE.
func DecodeFeature(p []byte) (Feature, error) {
	if len(p) < FeatureSize {
		return Feature{}, fmt.Errorf("device feature: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return Feature{Argsz: le.Uint32(p[0:]), Flags: le.Uint32(p[4:])}, nil
}

// LoggingRange is one IOVA range of DMA_LOGGING_START.
type LoggingRange struct {
	IOVA, Length uint64
}

// LoggingStart is the data of DMA_LOGGING_START.
type LoggingStart struct {
	PageSize uint64
	Ranges   []LoggingRange
}

// Encode appends the data of s to b.
func (s LoggingStart) Encode(b []byte) []byte {
	var h [LoggingStartSize]byte
	le.PutUint64(h[0:], s.PageSize)
	le.PutUint32(h[8:], uint32(len(s.Ranges)))
	b = append(b, h[:]...)
	for _, r := range s.Ranges {
		var e [LoggingRangeSize]byte
		le.PutUint64(e[0:], r.IOVA)
		le.PutUint64(e[8:], r.Length)
		b = append(b, e[:]...)
	}
	return b
}

// maxLoggingRanges bounds the ranges of one DMA_LOGGING_START.
const maxLoggingRanges = 1024

// DecodeLoggingStart parses the data of DMA_LOGGING_START.
func DecodeLoggingStart(p []byte) (LoggingStart, error) {
	if len(p) < LoggingStartSize {
		return LoggingStart{}, fmt.Errorf("logging start: %d bytes: %w", len(p), syscall.EINVAL)
	}
	s := LoggingStart{PageSize: le.Uint64(p[0:])}
	n := uint64(le.Uint32(p[8:]))
	if n > maxLoggingRanges || uint64(len(p)-LoggingStartSize) < n*LoggingRangeSize {
		return s, fmt.Errorf("logging start: %d ranges in %d bytes: %w", n, len(p), syscall.EINVAL)
	}
	s.Ranges = make([]LoggingRange, n)
	for i := range s.Ranges {
		e := p[LoggingStartSize+i*LoggingRangeSize:]
		s.Ranges[i] = LoggingRange{IOVA: le.Uint64(e[0:]), Length: le.Uint64(e[8:])}
	}
	return s, nil
}

// LoggingReport is the request data of DMA_LOGGING_REPORT; the reply adds
// the bitmap after it.
type LoggingReport struct {
	IOVA, Length, PageSize uint64
}

// Encode writes r into b[:LoggingReportSize].
func (r LoggingReport) Encode(b []byte) {
	_ = b[LoggingReportSize-1]
	le.PutUint64(b[0:], r.IOVA)
	le.PutUint64(b[8:], r.Length)
	le.PutUint64(b[16:], r.PageSize)
}

// DecodeLoggingReport parses the data of DMA_LOGGING_REPORT.
func DecodeLoggingReport(p []byte) (LoggingReport, error) {
	if len(p) < LoggingReportSize {
		return LoggingReport{}, fmt.Errorf("logging report: %d bytes: %w", len(p), syscall.EINVAL)
	}
	return LoggingReport{IOVA: le.Uint64(p[0:]), Length: le.Uint64(p[8:]), PageSize: le.Uint64(p[16:])}, nil
}

// MigData is the fixed part of MIG_DATA_READ and MIG_DATA_WRITE.
type MigData struct {
	Argsz, Size uint32
}

// Encode writes m into b[:MigDataSize].
func (m MigData) Encode(b []byte) {
	_ = b[MigDataSize-1]
	le.PutUint32(b[0:], m.Argsz)
	le.PutUint32(b[4:], m.Size)
}

// DecodeMigData parses the fixed part of MIG_DATA_READ/WRITE.
func DecodeMigData(p []byte) (MigData, error) {
	if len(p) < MigDataSize {
		return MigData{}, fmt.Errorf("mig data: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	return MigData{Argsz: le.Uint32(p[0:]), Size: le.Uint32(p[4:])}, nil
}

// DirtyBitmap is the GET_BITMAP part of DIRTY_PAGES, after argsz and flags:
// the IOVA range and the bitmap wanted for it.
type DirtyBitmap struct {
	IOVA, Size uint64
	Bitmap     Bitmap
}

// Encode writes d into b[:DirtyBitmapSize].
func (d DirtyBitmap) Encode(b []byte) {
	_ = b[DirtyBitmapSize-1]
	le.PutUint64(b[0:], d.IOVA)
	le.PutUint64(b[8:], d.Size)
	d.Bitmap.Encode(b[16:])
}

// DecodeDirtyBitmap parses the GET_BITMAP part of DIRTY_PAGES.
func DecodeDirtyBitmap(p []byte) (DirtyBitmap, error) {
	if len(p) < DirtyBitmapSize {
		return DirtyBitmap{}, fmt.Errorf("dirty bitmap: %d bytes: %w", len(p), syscall.EINVAL)
	}
	bm, _ := DecodeBitmap(p[16:])
	return DirtyBitmap{IOVA: le.Uint64(p[0:]), Size: le.Uint64(p[8:]), Bitmap: bm}, nil
}
