package vfiouser

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
)

// DMAPageSize is the only page size the table accepts for mappings, and the
// granularity of its dirty tracking.
const DMAPageSize = 4096

// DMALimits bound what a client may map.
type DMALimits struct {
	// MaxMaps bounds the simultaneous mappings (QEMU offers 65535). A
	// server lowers it below the kernel's vm.max_map_count (see
	// mapCountCap) and announces it as max_dma_maps.
	MaxMaps  int
	MaxTotal uint64 // bytes mapped in all
	// AnyFile lets a client back its maps with any file the server can
	// mmap. By default only shared memory is taken (see checkDMAFile).
	AnyFile bool
}

// ErrDMAFile is wrapped by the refusal of a map whose file is not shared
// memory.
var ErrDMAFile = errors.New("dma map: the file is not shared memory (memfd, tmpfs or hugetlbfs)")

// checkDMAFile refuses a file that is not shared memory: a regular file on
// tmpfs (memfd, /dev/shm, shmem) or on hugetlbfs (memfd with MFD_HUGETLB,
// /dev/hugepages). Guest memory is read and written with the device's locks
// held, and a page fault in such memory never waits on I/O. A file on a
// disk or network filesystem can fault on a read that takes seconds, or
// forever on a hung server: the device would stall with it, for every
// client and the guest. Device files (even on devtmpfs, which is a tmpfs)
// are refused too.
func checkDMAFile(fd int, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%w: file mode %#o: %w", ErrDMAFile, st.Mode&unix.S_IFMT, syscall.EPERM)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return fmt.Errorf("dma map: fstatfs: %w", err)
	}
	switch uint32(fs.Type) {
	case unix.TMPFS_MAGIC, unix.HUGETLBFS_MAGIC:
		return nil
	}
	return fmt.Errorf("%w: filesystem type %#x: %w", ErrDMAFile, uint32(fs.Type), syscall.EPERM)
}

// DefaultDMALimits are the limits the server announces.
var DefaultDMALimits = DMALimits{MaxMaps: 65535, MaxTotal: 1 << 40}

// messenger performs DMA through messages for ranges mapped without an fd.
type messenger interface {
	dmaRead(addr uint64, p []byte) error
	dmaWrite(addr uint64, p []byte) error
}

// DMATable holds the guest memory a client shared with DMA_MAP and gives
// devices bounds-checked access to it (it implements device.GuestMemory).
//
// Accesses hold the read lock while they copy, so DMA_UNMAP (which takes the
// write lock) waits for in-flight accesses and never unmaps memory that is in
// use. Ranges mapped without a file descriptor are reached through
// DMA_READ/DMA_WRITE messages, outside the lock, and only through Worker.
type DMATable struct {
	limits DMALimits

	mu      sync.RWMutex
	maps    []*dmaRegion // sorted by iova, not overlapping
	total   uint64
	logging atomic.Bool
	msg     messenger
	noFD    atomic.Int32 // mappings without fd

	// files keeps one descriptor of each file behind fd-backed maps, so
	// that a live upgrade can pass the maps on (see Export). Guest memory
	// is a few files mapped many times, so this costs a descriptor per
	// file, not per map.
	files map[fileKey]*dmaFile
}

// fileKey names a file by device and inode: two descriptors of one file
// map the same pages.
type fileKey struct{ dev, ino uint64 }

// dmaFile is a descriptor kept for the maps of one file.
type dmaFile struct {
	key  fileKey
	fd   int
	refs int
}

var _ device.GuestMemory = (*DMATable)(nil)

type dmaRegion struct {
	iova, size uint64
	flags      uint32
	offset     uint64   // in the file
	mem        []byte   // nil: reached by message
	file       *dmaFile // nil: reached by message
	dirty      []uint64 // one bit per DMAPageSize page while logging
}

func (r *dmaRegion) end() uint64 { return r.iova + r.size }

// NewDMATable returns an empty table with the given limits.
func NewDMATable(limits DMALimits) *DMATable {
	return &DMATable{limits: limits}
}

func (t *DMATable) setMessenger(m messenger) {
	t.mu.Lock()
	t.msg = m
	t.mu.Unlock()
}

// Len is the number of mappings.
func (t *DMATable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.maps)
}

// find returns the index of the first mapping whose end is above addr.
func (t *DMATable) find(addr uint64) int {
	lo, hi := 0, len(t.maps)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.maps[m].end() <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Map adds a mapping of [m.Addr, m.Addr+m.Size). With fd >= 0 the range is
// mmapped from fd at m.Offset with the protection of m.Flags; the caller
// keeps ownership of fd (the mapping stays valid after it is closed).
func (t *DMATable) Map(m DMAMap, fd int) error {
	if m.Flags&^(DMAFlagRead|DMAFlagWrite) != 0 || m.Flags == 0 {
		return fmt.Errorf("dma map: flags %#x: %w", m.Flags, syscall.EINVAL)
	}
	if m.Size == 0 || m.Addr%DMAPageSize != 0 || m.Size%DMAPageSize != 0 || m.Offset%DMAPageSize != 0 {
		return fmt.Errorf("dma map: [%#x+%#x] offset %#x not page aligned: %w", m.Addr, m.Size, m.Offset, syscall.EINVAL)
	}
	if m.Addr+m.Size < m.Addr || m.Offset+m.Size < m.Offset {
		return fmt.Errorf("dma map: [%#x+%#x] wraps: %w", m.Addr, m.Size, syscall.EINVAL)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.maps) >= t.limits.MaxMaps {
		return fmt.Errorf("dma map: %d mappings already, the most allowed (max_dma_maps): %w", len(t.maps), syscall.ENOSPC)
	}
	if m.Size > t.limits.MaxTotal-t.total {
		return fmt.Errorf("dma map: %d bytes over the limit of %d: %w", m.Size, t.limits.MaxTotal, syscall.ENOSPC)
	}
	i := t.find(m.Addr)
	if i < len(t.maps) && t.maps[i].iova < m.Addr+m.Size {
		return fmt.Errorf("dma map: [%#x+%#x] overlaps [%#x+%#x]: %w", m.Addr, m.Size, t.maps[i].iova, t.maps[i].size, syscall.EEXIST)
	}
	r := &dmaRegion{iova: m.Addr, size: m.Size, flags: m.Flags}
	if fd >= 0 {
		if uint64(int(m.Size)) != m.Size || int64(m.Offset) < 0 {
			return fmt.Errorf("dma map: size %#x: %w", m.Size, syscall.EINVAL)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("dma map: fstat: %w", err)
		}
		if !t.limits.AnyFile {
			if err := checkDMAFile(fd, &st); err != nil {
				return err
			}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < m.Offset+m.Size {
			return fmt.Errorf("dma map: file of %d bytes, mapping ends at %#x: %w", st.Size, m.Offset+m.Size, syscall.EINVAL)
		}
		prot := 0
		if m.Flags&DMAFlagRead != 0 {
			prot |= unix.PROT_READ
		}
		if m.Flags&DMAFlagWrite != 0 {
			prot |= unix.PROT_WRITE
		}
		file, err := t.keepFile(fd, &st)
		if err != nil {
			return err
		}
		mem, err := unix.Mmap(fd, int64(m.Offset), int(m.Size), prot, unix.MAP_SHARED)
		if err != nil {
			t.dropFile(file)
			return fmt.Errorf("dma map: mmap [%#x+%#x]: %w", m.Addr, m.Size, err)
		}
		r.mem, r.file, r.offset = mem, file, m.Offset
	} else {
		t.noFD.Add(1)
	}
	if t.logging.Load() {
		r.dirty = make([]uint64, pagesWords(r.size))
	}
	t.maps = append(t.maps, nil)
	copy(t.maps[i+1:], t.maps[i:])
	t.maps[i] = r
	t.total += m.Size
	return nil
}

func pagesWords(size uint64) uint64 { return (size/DMAPageSize + 63) / 64 }

// Unmap removes the mapping that is exactly [addr, addr+size). When bm is
// not nil, the dirty bitmap of the range is written to bm first.
func (t *DMATable) Unmap(addr, size uint64, pgsize uint64, bm []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.find(addr)
	if i >= len(t.maps) || t.maps[i].iova != addr {
		return fmt.Errorf("dma unmap: no mapping at %#x: %w", addr, syscall.ENOENT)
	}
	r := t.maps[i]
	if r.size != size {
		return fmt.Errorf("dma unmap: [%#x+%#x] does not match mapping of %#x bytes: %w", addr, size, r.size, syscall.EINVAL)
	}
	if bm != nil {
		if err := t.reportLocked(addr, size, pgsize, bm); err != nil {
			return fmt.Errorf("dma unmap: %w", err)
		}
	}
	t.maps = append(t.maps[:i], t.maps[i+1:]...)
	t.release(r)
	return nil
}

// UnmapAll removes every mapping.
func (t *DMATable) UnmapAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.maps {
		t.release(r)
	}
	t.maps = nil
}

// keepFile returns the kept descriptor of fd's file, duplicating fd for
// the first map of a file. Called with t.mu held.
func (t *DMATable) keepFile(fd int, st *unix.Stat_t) (*dmaFile, error) {
	k := fileKey{dev: st.Dev, ino: st.Ino}
	if f := t.files[k]; f != nil {
		f.refs++
		return f, nil
	}
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dma map: keeping the file: %w", err)
	}
	if t.files == nil {
		t.files = make(map[fileKey]*dmaFile)
	}
	f := &dmaFile{key: k, fd: d, refs: 1}
	t.files[k] = f
	return f, nil
}

// dropFile lets go of one map's reference. Called with t.mu held.
func (t *DMATable) dropFile(f *dmaFile) {
	f.refs--
	if f.refs == 0 {
		unix.Close(f.fd)
		delete(t.files, f.key)
	}
}

func (t *DMATable) release(r *dmaRegion) {
	t.total -= r.size
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
		t.dropFile(r.file)
		r.file = nil
	} else {
		t.noFD.Add(-1)
	}
}

// Read copies guest memory at addr into p.
func (t *DMATable) Read(addr uint64, p []byte) error { return t.access(addr, p, false) }

// Write copies p into guest memory at addr and marks the pages dirty while
// dirty logging is on.
func (t *DMATable) Write(addr uint64, p []byte) error { return t.access(addr, p, true) }

// Worker is the accessor of this table for the device's own goroutines:
// the only one through which an access to memory mapped without fd is sent
// to the client as DMA_READ/DMA_WRITE, to wait for its reply. The table
// itself, which the device is given in Connect and which code running in a
// request handler reaches, refuses such an access at once with EDEADLK (see
// msgdma.go for why a handler must never wait for the client).
func (t *DMATable) Worker() device.GuestMemory { return dmaWorker{t} }

// dmaWorker is the table as the device's own goroutines reach it.
type dmaWorker struct{ t *DMATable }

func (w dmaWorker) Read(addr uint64, p []byte) error  { return w.t.reach(addr, p, false, true) }
func (w dmaWorker) Write(addr uint64, p []byte) error { return w.t.reach(addr, p, true, true) }

// access reaches guest memory without ever waiting for the client.
func (t *DMATable) access(addr uint64, p []byte, write bool) error {
	return t.reach(addr, p, write, false)
}

// reach walks the mappings that cover [addr, addr+len(p)), which may be
// several adjacent ones. Each step consumes at least one byte of a mapping,
// so the loop runs at most once per mapping. Ranges mapped without fd are
// reached by message only when mayWait says the caller is one of the
// device's own goroutines.
func (t *DMATable) reach(addr uint64, p []byte, write, mayWait bool) error {
	if addr+uint64(len(p)) < addr {
		return fmt.Errorf("guest memory: [%#x+%#x] wraps: %w", addr, len(p), syscall.EFAULT)
	}
	need := DMAFlagRead
	if write {
		need = DMAFlagWrite
	}
	for len(p) > 0 {
		t.mu.RLock()
		i := t.find(addr)
		if i >= len(t.maps) || t.maps[i].iova > addr {
			t.mu.RUnlock()
			return fmt.Errorf("guest memory: %#x not mapped: %w", addr, syscall.EFAULT)
		}
		r := t.maps[i]
		if r.flags&need == 0 {
			t.mu.RUnlock()
			return fmt.Errorf("guest memory: %#x mapped without %s permission: %w", addr, accessName(write), syscall.EPERM)
		}
		off := addr - r.iova
		n := uint64(len(p))
		if n > r.size-off {
			n = r.size - off
		}
		seg := p[:n]
		if r.mem != nil {
			var err error
			if write {
				err = safeCopy(r.mem[off:off+n], seg)
				if err == nil && r.dirty != nil {
					markDirty(r.dirty, off, n)
				}
			} else {
				err = safeCopy(seg, r.mem[off:off+n])
			}
			t.mu.RUnlock()
			if err != nil {
				return fmt.Errorf("guest memory: %#x: %w", addr, err)
			}
		} else {
			if !mayWait {
				t.mu.RUnlock()
				return fmt.Errorf("guest memory: %#x is mapped without fd: only the device's own goroutines reach it, by message (DMATable.Worker): %w", addr, syscall.EDEADLK)
			}
			msg := t.msg
			if write && r.dirty != nil {
				markDirty(r.dirty, off, n)
			}
			t.mu.RUnlock()
			if msg == nil {
				return fmt.Errorf("guest memory: %#x needs message DMA and no client is connected: %w", addr, syscall.EFAULT)
			}
			var err error
			if write {
				err = msg.dmaWrite(addr, seg)
			} else {
				err = msg.dmaRead(addr, seg)
			}
			if err != nil {
				return fmt.Errorf("guest memory: %#x: %w", addr, err)
			}
		}
		addr += n
		p = p[n:]
	}
	return nil
}

func accessName(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// safeCopy copies between guest memory and p. A client can shrink the file
// behind a mapping after DMA_MAP; the fault that follows becomes an error
// here instead of killing the process.
func safeCopy(dst, src []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if recover() != nil {
			err = fmt.Errorf("fault while copying guest memory: %w", syscall.EFAULT)
		}
	}()
	copy(dst, src)
	return nil
}

func markDirty(dirty []uint64, off, n uint64) {
	first := off / DMAPageSize
	last := (off + n - 1) / DMAPageSize
	for pg := first; pg <= last; pg++ {
		atomic.OrUint64(&dirty[pg/64], 1<<(pg%64))
	}
}

// StartLogging turns dirty logging on. Pages are tracked at DMAPageSize; the
// returned page size is the one reports default to (the requested one when
// it is a power of two of at least DMAPageSize).
func (t *DMATable) StartLogging(pageSize uint64, ranges []LoggingRange) (uint64, error) {
	if pageSize == 0 || pageSize&(pageSize-1) != 0 {
		return 0, fmt.Errorf("dirty logging: page size %#x: %w", pageSize, syscall.EINVAL)
	}
	for _, r := range ranges {
		if r.Length == 0 || r.IOVA+r.Length < r.IOVA {
			return 0, fmt.Errorf("dirty logging: range [%#x+%#x]: %w", r.IOVA, r.Length, syscall.EINVAL)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.logging.Load() {
		return 0, fmt.Errorf("dirty logging: already started: %w", syscall.EBUSY)
	}
	for _, r := range t.maps {
		r.dirty = make([]uint64, pagesWords(r.size))
	}
	t.logging.Store(true)
	return max(pageSize, DMAPageSize), nil
}

// StopLogging turns dirty logging off and forgets the dirty pages.
func (t *DMATable) StopLogging() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.logging.Store(false)
	for _, r := range t.maps {
		r.dirty = nil
	}
}

// BitmapBytes is the size of a bitmap of length bytes at pageSize: whole
// u64 words, one bit per page.
func BitmapBytes(length, pageSize uint64) uint64 {
	if pageSize == 0 {
		return 0
	}
	pages := length / pageSize
	if length%pageSize != 0 {
		pages++
	}
	return (pages + 63) / 64 * 8
}

// Report writes into bm the dirty bitmap of [iova, iova+length) at pageSize
// and clears those pages (read-and-clear). Bit i of the little-endian u64
// words stands for the page at iova + i*pageSize.
func (t *DMATable) Report(iova, length, pageSize uint64, bm []byte) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.reportLocked(iova, length, pageSize, bm)
}

func (t *DMATable) reportLocked(iova, length, pageSize uint64, bm []byte) error {
	if !t.logging.Load() {
		return fmt.Errorf("dirty report: logging is off: %w", syscall.EINVAL)
	}
	if pageSize < DMAPageSize || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("dirty report: page size %#x: %w", pageSize, syscall.EINVAL)
	}
	if length == 0 || iova%DMAPageSize != 0 || iova+length < iova {
		return fmt.Errorf("dirty report: range [%#x+%#x]: %w", iova, length, syscall.EINVAL)
	}
	if uint64(len(bm)) != BitmapBytes(length, pageSize) {
		return fmt.Errorf("dirty report: bitmap of %d bytes for %d pages: %w", len(bm), length/pageSize, syscall.EINVAL)
	}
	clear(bm)
	end := iova + length
	for i := t.find(iova); i < len(t.maps) && t.maps[i].iova < end; i++ {
		r := t.maps[i]
		if r.dirty == nil {
			continue
		}
		lo := max(r.iova, iova&^(DMAPageSize-1))
		hi := min(r.end(), end)
		firstPg := (lo - r.iova) / DMAPageSize
		lastPg := (hi - 1 - r.iova) / DMAPageSize
		for w := firstPg / 64; w <= lastPg/64; w++ {
			mask := ^uint64(0)
			if w == firstPg/64 {
				mask &= ^uint64(0) << (firstPg % 64)
			}
			if w == lastPg/64 {
				mask &= ^uint64(0) >> (63 - lastPg%64)
			}
			got := atomic.AndUint64(&r.dirty[w], ^mask) & mask
			for got != 0 {
				b := uint64(bits.TrailingZeros64(got))
				got &= got - 1
				addr := r.iova + (w*64+b)*DMAPageSize
				bit := (addr - iova) / pageSize
				bm[bit/8] |= 1 << (bit % 8)
			}
		}
	}
	return nil
}
