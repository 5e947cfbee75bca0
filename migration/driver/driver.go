// Package driver migrates a vfio-user device from one server to another the
// way a VMM does: through the migration v2 state machine (PRE_COPY,
// STOP_COPY, RESUMING with MIG_DATA_READ/WRITE and DMA dirty logging), or
// through the legacy v1 migration region (device_state, pending_bytes,
// data_offset, data_size and its data area, with DIRTY_PAGES). Guest
// memory is copied from the source VMM's memory to the destination's,
// whole first and then the pages the device dirtied. Both protocols run
// one algorithm (migrate), each as a transport of its steps.
//
// Tests and benchmarks use it; it is also the reference of the order of
// operations a client must follow.
package driver

import (
	"errors"
	"fmt"
	"math/bits"
	"time"

	"e1000e-vfu/vfiouser"
)

// Endpoint is one side of a migration: a connected, negotiated client and
// the VMM's view of the guest memory it mapped for the device (the bytes of
// guest addresses [IOVA, IOVA+len(Mem))).
type Endpoint struct {
	Client *vfiouser.Client
	Mem    []byte
	IOVA   uint64
}

// Options tune a migration.
type Options struct {
	// PageSize is the dirty-tracking page size; 0 means 4096.
	PageSize uint64
	// PreCopyRounds is how many dirty-page rounds run while the device
	// still runs; 0 means 2.
	PreCopyRounds int
	// ChunkSize is the size of each MIG_DATA_READ/WRITE (v2); 0 means
	// 1 MiB. A read never asks for more than the negotiated maximum.
	ChunkSize int
	// BeforeStop runs just before the source is stopped: where a VMM
	// stops its vCPUs, and where tests stop the traffic they send to the
	// source.
	BeforeStop func()
	// NoMMap makes the v1 loop use region reads and writes even when the
	// data area is offered for mmap.
	NoMMap bool
}

// Report says what a migration moved and how long it took.
type Report struct {
	Protocol     string // "v2" or "v1"
	StateBytes   int    // the device state, all of it
	PreCopyBytes int    // of which moved while the device ran
	Pages        int    // guest pages copied, the first full copy included
	DirtyPages   int    // pages the device reported dirty
	// SizeEstimate is what MIG_DATA_SIZE announced when the device was
	// stopped (v2): the bytes STOP_COPY then had to move.
	SizeEstimate uint64
	Downtime     time.Duration // source stopped until destination running
	Total        time.Duration
}

func (o *Options) defaults() {
	if o.PageSize == 0 {
		o.PageSize = 4096
	}
	if o.PreCopyRounds == 0 {
		o.PreCopyRounds = 2
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 1 << 20
	}
}

func checkEndpoints(src, dst Endpoint, ps uint64) error {
	if src.Client == nil || dst.Client == nil {
		return errors.New("driver: an endpoint has no client")
	}
	if len(src.Mem) != len(dst.Mem) || src.IOVA != dst.IOVA {
		return fmt.Errorf("driver: guest memory differs: %d bytes at %#x and %d bytes at %#x",
			len(src.Mem), src.IOVA, len(dst.Mem), dst.IOVA)
	}
	if ps == 0 || ps&(ps-1) != 0 || uint64(len(src.Mem))%ps != 0 {
		return fmt.Errorf("driver: page size %d does not divide %d bytes of memory", ps, len(src.Mem))
	}
	return nil
}

// copyDirty copies the pages set in bm (bit i: the page at i*ps) from src
// to dst memory and returns how many it copied.
func copyDirty(src, dst []byte, bm []byte, ps uint64) int {
	n := 0
	for i, b := range bm {
		for b != 0 {
			k := uint64(bits.TrailingZeros8(b))
			b &^= 1 << k
			off := (uint64(i)*8 + k) * ps
			if off >= uint64(len(src)) {
				continue
			}
			end := min(off+ps, uint64(len(src)))
			copy(dst[off:end], src[off:end])
			n++
		}
	}
	return n
}

// MigrateV2 migrates through the v2 state machine. The destination goes
// to RESUMING; the source to PRE_COPY when it offers it (the header and
// configuration reach the destination while the device runs, so an
// incompatible destination refuses before anything stops), then STOP_COPY;
// the destination loads on RESUMING→STOP and runs; the source ends in
// STOP.
func MigrateV2(src, dst Endpoint, opts Options) (Report, error) {
	return migrate("v2", openV2, src, dst, opts)
}

// MigrateV1 migrates through the v1 migration region, with the data area
// mapped when the server offers it (and opts.NoMMap is not set), and dirty
// pages through DIRTY_PAGES.
func MigrateV1(src, dst Endpoint, opts Options) (Report, error) {
	return migrate("v1", openV1, src, dst, opts)
}
