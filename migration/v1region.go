package migration

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
)

// The v1 migration region: struct vfio_device_migration_info at offset 0,
// then a data area on its own page so it can be mapped.
const (
	V1RegionType    = 3 // VFIO_REGION_TYPE_MIGRATION
	V1RegionSubtype = 1 // VFIO_REGION_SUBTYPE_MIGRATION

	// V1OffState, V1OffPending, V1OffDataOffset and V1OffDataSize are the
	// fields of struct vfio_device_migration_info at the region's start.
	V1OffState      = 0
	V1OffPending    = 8
	V1OffDataOffset = 16
	V1OffDataSize   = 24
	v1InfoLen       = 32

	// V1DataOffset is where the data area starts in the region.
	V1DataOffset = 4096
	// DefaultV1AreaSize is the data area's size and so the chunk size of
	// the save and resume loops.
	DefaultV1AreaSize = 1 << 20
)

// v1 device_state bits.
const (
	v1Running  = 1
	v1Saving   = 2
	v1Resuming = 4
	v1Mask     = 7
	v1Error    = v1Saving | v1Resuming // what a v1 device reports after a failure
)

// v1Seals are the seals of the region's memfd: its size is fixed, and so
// are the seals.
const v1Seals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// V1Region serves the legacy v1 migration region for a Machine; it is a
// device.RegionHandler for region index device.RegionMigration, with Info
// as its description. Its data
// area lives in a memfd that the client may map, so the bulk of the state
// moves through shared memory; reads and writes of the area through region
// accesses work too.
type V1Region struct {
	m      *Machine
	file   *os.File
	area   []byte // the data area, mapped from file
	staged int    // bytes of the next save chunk placed in area, not yet consumed
}

var _ device.RegionHandler = (*V1Region)(nil)

// NewV1Region creates the region for m (at most one per machine) with a data area of areaSize bytes
// (a multiple of the page size; 0 means DefaultV1AreaSize).
func NewV1Region(m *Machine, areaSize int) (*V1Region, error) {
	if areaSize == 0 {
		areaSize = DefaultV1AreaSize
	}
	if areaSize < 0 || areaSize%os.Getpagesize() != 0 || areaSize > 64<<20 {
		return nil, fmt.Errorf("migration: v1 data area of %d bytes: must be a page multiple up to 64 MiB", areaSize)
	}
	fd, err := unix.MemfdCreate("e1000e-vfu-migration", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("migration: memfd for the v1 region: %w", err)
	}
	f := os.NewFile(uintptr(fd), "migration-region")
	if err := f.Truncate(int64(V1DataOffset + areaSize)); err != nil {
		f.Close()
		return nil, fmt.Errorf("migration: sizing the v1 region: %w", err)
	}
	// The client gets this fd: had it the right to shrink the file, the
	// server's next access to its mapping of the area would die of
	// SIGBUS. Sealing the size (and the seals) makes the area's length a
	// promise the client cannot break; it may still write the data, which
	// is what the area is for.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, v1Seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("migration: sealing the v1 region: %w", err)
	}
	area, err := unix.Mmap(fd, V1DataOffset, areaSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("migration: mapping the v1 data area: %w", err)
	}
	r := &V1Region{m: m, file: f, area: area}
	m.mu.Lock()
	m.v1 = r
	m.mu.Unlock()
	return r, nil
}

// errV1Closed answers an access to a region whose device is gone.
var errV1Closed = fmt.Errorf("migration: the v1 region is closed: %w", syscall.ENODEV)

// Close unmaps the data area and closes the memfd. It takes the machine's
// lock, as the region's accesses do, so no access copies from an area being
// unmapped; accesses after it fail with ENODEV.
func (r *V1Region) Close() error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	var err error
	if r.area != nil {
		err = unix.Munmap(r.area)
		r.area = nil
	}
	if r.file != nil {
		if cerr := r.file.Close(); err == nil {
			err = cerr
		}
		r.file = nil
	}
	return err
}

// Info describes the region: readable and writable, mappable in its data
// area only, announced with the migration TYPE capability. It takes the
// machine's lock, as Close does: once closed, the region has no data area
// and nothing to map.
func (r *V1Region) Info() device.RegionInfo {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	info := device.RegionInfo{
		Size:    uint64(V1DataOffset + len(r.area)),
		Flags:   device.RegionRead | device.RegionWrite,
		Type:    V1RegionType,
		Subtype: V1RegionSubtype,
	}
	if r.file != nil {
		info.Flags |= device.RegionMMap
		info.MMapFile = r.file
		info.MMapAreas = []device.Area{{Offset: V1DataOffset, Size: uint64(len(r.area))}}
	}
	return info
}

func errInval(format string, args ...any) error {
	return fmt.Errorf("migration: v1 region: "+format+": %w", append(args, syscall.EINVAL)...)
}

// inArea reports whether [off, off+n) lies in the data area and returns
// the area-relative offset.
func (r *V1Region) inArea(off uint64, n int) (int, bool) {
	if off < V1DataOffset {
		return 0, false
	}
	rel := off - V1DataOffset
	if rel > uint64(len(r.area)) || uint64(n) > uint64(len(r.area))-rel {
		return 0, false
	}
	return int(rel), true
}

// ReadRegion serves a region read.
func (r *V1Region) ReadRegion(off uint64, p []byte) error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if r.area == nil {
		return errV1Closed
	}
	if rel, ok := r.inArea(off, len(p)); ok {
		copy(p, r.area[rel:])
		return nil
	}
	var v uint64
	var err error
	switch {
	case off == V1OffState && len(p) == 4:
		binary.LittleEndian.PutUint32(p, v1State(r.m.state))
		return nil
	case off == V1OffState+4 && len(p) == 4: // reserved
		clear(p)
		return nil
	case off == V1OffPending && len(p) == 8:
		v, err = r.pending()
	case off == V1OffDataOffset && len(p) == 8:
		err = r.stage()
		v = V1DataOffset
	case off == V1OffDataSize && len(p) == 8:
		err = r.stage()
		v = uint64(r.staged)
	default:
		return errInval("read of %d bytes at %#x", len(p), off)
	}
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(p, v)
	return nil
}

// WriteRegion serves a region write.
func (r *V1Region) WriteRegion(off uint64, p []byte) error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if r.area == nil {
		return errV1Closed
	}
	if rel, ok := r.inArea(off, len(p)); ok {
		if r.m.state != sResuming {
			return errInval("data written outside resuming")
		}
		copy(r.area[rel:], p)
		return nil
	}
	switch {
	case off == V1OffState && len(p) == 4:
		return r.setState(binary.LittleEndian.Uint32(p))
	case off == V1OffDataSize && len(p) == 8:
		n := binary.LittleEndian.Uint64(p)
		if r.m.state != sResuming {
			return errInval("data_size written outside resuming")
		}
		if n > uint64(len(r.area)) {
			return errInval("data_size %d exceeds the data area of %d bytes", n, len(r.area))
		}
		return r.m.writeLocked(r.area[:n])
	default:
		return errInval("write of %d bytes at %#x", len(p), off)
	}
}

// v1State maps a v2 state onto the v1 device_state bits.
func v1State(s device.MigrationState) uint32 {
	switch s {
	case sStop:
		return 0
	case sRunning, sRunningP2P:
		return v1Running
	case sStopCopy:
		return v1Saving
	case sPreCopy, sPreCopyP2P:
		return v1Running | v1Saving
	case sResuming:
		return v1Resuming
	}
	return v1Error
}

func (r *V1Region) setState(v uint32) error {
	var target device.MigrationState
	switch v {
	case 0:
		target = sStop
	case v1Running:
		target = sRunning
	case v1Saving:
		target = sStopCopy
	case v1Running | v1Saving:
		target = sPreCopy
	case v1Resuming:
		target = sResuming
	default:
		return errInval("device_state %#x is not a valid state", v)
	}
	// A staged chunk has been taken by the time the client changes state:
	// its loop reads data_offset, data_size and the data back to back.
	// Only a v1 state change says so; the machine forgets the chunk on
	// every state change, whichever protocol makes it.
	if err := r.consume(); err != nil {
		return err
	}
	return r.m.setStateLocked(target)
}

// consume counts the staged chunk as read by the client, if one is
// staged while saving, and forgets it.
func (r *V1Region) consume() error {
	n := r.staged
	r.staged = 0
	if n == 0 || !isSaving(r.m.state) {
		return nil
	}
	left, err := r.m.unread()
	if err != nil {
		return err
	}
	if n > left {
		return fmt.Errorf("migration: v1 region: staged chunk of %d bytes, %d left to read: %w", n, left, syscall.EIO)
	}
	r.m.outRead += n
	return nil
}

// pending answers a pending_bytes read. Reading it after a chunk was staged
// says the client has taken that chunk (step f of the v1 save loop), so the
// chunk is consumed first; further reads have no side effect.
func (r *V1Region) pending() (uint64, error) {
	if !isSaving(r.m.state) {
		r.staged = 0
		return 0, nil
	}
	if err := r.consume(); err != nil {
		return 0, err
	}
	n, err := r.m.unread()
	return uint64(n), err
}

// stage places the next chunk in the data area unless one is staged
// already, so repeated reads of data_offset and data_size see the same
// chunk.
func (r *V1Region) stage() error {
	if r.staged > 0 || !isSaving(r.m.state) {
		return nil
	}
	if _, err := r.m.unread(); err != nil {
		return err
	}
	r.staged = copy(r.area, r.m.out[r.m.outRead:r.m.outEnd])
	return nil
}
