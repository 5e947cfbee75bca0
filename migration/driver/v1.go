package driver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
	"e1000e-vfu/vfiouser"
)

// The v1 region's device_state bits (its fields' offsets are migration's
// V1Off*).
const (
	v1Running  = 1
	v1Saving   = 2
	v1Resuming = 4

	// regionPiece bounds one region read or write of the data area, well
	// inside the default max_data_xfer_size.
	regionPiece = 512 << 10
	// maxV1Chunks bounds a save loop: a device that never runs out of
	// pending bytes is an error, not a hang.
	maxV1Chunks = 4096
)

// v1Region is one side's migration region: its client and, when mapped,
// the data area.
type v1Region struct {
	c       *vfiouser.Client
	areaOff uint64 // region offset of the mapped area
	area    []byte // nil: use region accesses
	file    *os.File
}

func openV1Region(c *vfiouser.Client, useMMap bool) (*v1Region, error) {
	ri, caps, f, err := c.RegionInfo(device.RegionMigration)
	if err != nil {
		return nil, fmt.Errorf("v1 region info: %w", err)
	}
	if !caps.HasType || caps.Type != migration.V1RegionType || caps.Subtype != migration.V1RegionSubtype {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("region %d is not a v1 migration region", device.RegionMigration)
	}
	r := &v1Region{c: c}
	if f == nil {
		return r, nil
	}
	if !useMMap || ri.Flags&uint32(device.RegionMMap) == 0 || len(caps.Sparse) == 0 {
		f.Close()
		return r, nil
	}
	a := caps.Sparse[0]
	if a.Size == 0 || a.Size > 64<<20 || a.Offset+a.Size > ri.Size {
		f.Close()
		return nil, fmt.Errorf("v1 data area %#x+%#x outside the region", a.Offset, a.Size)
	}
	mem, err := unix.Mmap(int(f.Fd()), int64(ri.Offset+a.Offset), int(a.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mapping the v1 data area: %w", err)
	}
	r.area, r.areaOff, r.file = mem, a.Offset, f
	return r, nil
}

func (r *v1Region) close() {
	if r.area != nil {
		unix.Munmap(r.area)
		r.area = nil
	}
	if r.file != nil {
		r.file.Close()
		r.file = nil
	}
}

func (r *v1Region) u64(off uint64) (uint64, error) {
	var b [8]byte
	if err := r.c.ReadRegion(device.RegionMigration, off, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (r *v1Region) setU64(off, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return r.c.WriteRegion(device.RegionMigration, off, b[:])
}

func (r *v1Region) setState(s uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], s)
	if err := r.c.WriteRegion(device.RegionMigration, migration.V1OffState, b[:]); err != nil {
		return fmt.Errorf("v1 device_state %#x: %w", s, err)
	}
	return nil
}

// inArea returns the mapped bytes of [off, off+n) when they are mapped.
func (r *v1Region) inArea(off, n uint64) ([]byte, bool) {
	if r.area == nil || off < r.areaOff || n > uint64(len(r.area)) || off-r.areaOff > uint64(len(r.area))-n {
		return nil, false
	}
	rel := off - r.areaOff
	return r.area[rel : rel+n], true
}

func (r *v1Region) read(off uint64, p []byte) error {
	if m, ok := r.inArea(off, uint64(len(p))); ok {
		copy(p, m)
		return nil
	}
	for done := 0; done < len(p); {
		n := min(regionPiece, len(p)-done)
		if err := r.c.ReadRegion(device.RegionMigration, off+uint64(done), p[done:done+n]); err != nil {
			return err
		}
		done += n
	}
	return nil
}

func (r *v1Region) write(off uint64, p []byte) error {
	if m, ok := r.inArea(off, uint64(len(p))); ok {
		copy(m, p)
		return nil
	}
	for done := 0; done < len(p); {
		n := min(regionPiece, len(p)-done)
		if err := r.c.WriteRegion(device.RegionMigration, off+uint64(done), p[done:done+n]); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// v1Transport is the v1 transport: the migration regions of both sides for the
// states and the data, and DIRTY_PAGES for dirty pages.
type v1Transport struct {
	src, dst Endpoint
	sr, dr   *v1Region
	buf      []byte
}

func openV1(src, dst Endpoint, opts Options) (transport, error) {
	sr, err := openV1Region(src.Client, !opts.NoMMap)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dr, err := openV1Region(dst.Client, !opts.NoMMap)
	if err != nil {
		sr.close()
		return nil, fmt.Errorf("destination: %w", err)
	}
	return &v1Transport{src: src, dst: dst, sr: sr, dr: dr}, nil
}

// startLogging asks for no page size: DIRTY_PAGES START has none, the
// size comes with each GET_BITMAP.
func (t *v1Transport) startLogging(pageSize uint64) (uint64, error) {
	return pageSize, t.src.Client.DirtyPages(vfiouser.DirtyPagesStart)
}

func (t *v1Transport) dirtyPages(pageSize uint64) ([]byte, error) {
	return t.src.Client.DirtyPagesBitmap(t.src.IOVA, uint64(len(t.src.Mem)), pageSize)
}

func (t *v1Transport) stopLogging() error { return t.src.Client.DirtyPages(vfiouser.DirtyPagesStop) }

func (t *v1Transport) resuming() error { return t.dr.setState(v1Resuming) }

// preCopy is always offered: RUNNING|SAVING is part of the v1 protocol.
func (t *v1Transport) preCopy() (bool, error) { return true, t.sr.setState(v1Running | v1Saving) }

// stopCopy: v1 has no size estimate beyond pending_bytes, which transfer
// reads.
func (t *v1Transport) stopCopy() (uint64, error) { return 0, t.sr.setState(v1Saving) }

// transfer runs the v1 save loop on the source and the resume loop on the
// destination until the source has no pending bytes: pending_bytes,
// data_offset, data_size, the data; then the destination's data_offset,
// the data, data_size.
func (t *v1Transport) transfer() (int, error) {
	src, dst := t.sr, t.dr
	total := 0
	for i := 0; i < maxV1Chunks; i++ {
		pending, err := src.u64(migration.V1OffPending)
		if err != nil {
			return total, fmt.Errorf("v1 pending_bytes: %w", err)
		}
		if pending == 0 {
			return total, nil
		}
		off, err := src.u64(migration.V1OffDataOffset)
		if err != nil {
			return total, fmt.Errorf("v1 data_offset: %w", err)
		}
		size, err := src.u64(migration.V1OffDataSize)
		if err != nil {
			return total, fmt.Errorf("v1 data_size: %w", err)
		}
		if size == 0 || size > 64<<20 {
			return total, fmt.Errorf("v1 data_size %d with %d bytes pending", size, pending)
		}
		if uint64(cap(t.buf)) < size {
			t.buf = make([]byte, size)
		}
		data := t.buf[:size]
		if err := src.read(off, data); err != nil {
			return total, fmt.Errorf("v1 data read: %w", err)
		}
		doff, err := dst.u64(migration.V1OffDataOffset)
		if err != nil {
			return total, fmt.Errorf("v1 destination data_offset: %w", err)
		}
		if err := dst.write(doff, data); err != nil {
			return total, fmt.Errorf("v1 data write: %w", err)
		}
		if err := dst.setU64(migration.V1OffDataSize, size); err != nil {
			return total, fmt.Errorf("v1 destination data_size: %w", err)
		}
		total += int(size)
	}
	return total, errors.New("v1 source never runs out of pending bytes")
}

// resume: the destination loads the state on RESUMING→RUNNING.
func (t *v1Transport) resume() error { return t.dr.setState(v1Running) }

func (t *v1Transport) stopSource() error { return t.sr.setState(0) }

func (t *v1Transport) close() {
	t.sr.close()
	t.dr.close()
}
