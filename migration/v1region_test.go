package migration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
)

// v1Client drives a V1Region the way QEMU's v1 migration code (hw/vfio/
// migration.c before the v2 protocol) did: masked read-modify-write of
// device_state, the pending_bytes / data_offset / data_size loop, the data
// taken from the mmap'd sparse area when it covers the chunk and through
// region reads of at most xfer bytes otherwise.
type v1Client struct {
	t      testing.TB
	r      *V1Region
	mapped []byte // the client's own mapping of the data area, or nil
	xfer   int    // max_data_xfer_size for region accesses
	buf    []byte
}

func newV1Client(t testing.TB, r *V1Region, useMmap bool) *v1Client {
	c := &v1Client{t: t, r: r, xfer: 1 << 20, buf: make([]byte, 1<<20)}
	if useMmap {
		info := r.Info()
		if info.Flags&device.RegionMMap == 0 || len(info.MMapAreas) != 1 {
			t.Fatalf("region info %+v offers no single mmap area", info)
		}
		a := info.MMapAreas[0]
		m, err := unix.Mmap(int(info.MMapFile.Fd()), int64(info.MMapOffset+a.Offset), int(a.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap of the data area: %v", err)
		}
		t.Cleanup(func() { unix.Munmap(m) })
		c.mapped = m
	}
	return c
}

func (c *v1Client) read64(off uint64) uint64 {
	var b [8]byte
	if err := c.r.ReadRegion(off, b[:]); err != nil {
		c.t.Fatalf("read at %#x: %v", off, err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (c *v1Client) write64(off, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return c.r.WriteRegion(off, b[:])
}

// setState is vfio_migration_set_state: new = (old & mask) | value.
func (c *v1Client) setState(mask, value uint32) error {
	var b [4]byte
	if err := c.r.ReadRegion(V1OffState, b[:]); err != nil {
		c.t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(b[:], binary.LittleEndian.Uint32(b[:])&mask|value)
	return c.r.WriteRegion(V1OffState, b[:])
}

func (c *v1Client) state() uint32 {
	var b [4]byte
	if err := c.r.ReadRegion(V1OffState, b[:]); err != nil {
		c.t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (c *v1Client) pending() uint64 { return c.read64(V1OffPending) }

// saveBuffer is vfio_save_buffer: one chunk appended to out.
func (c *v1Client) saveBuffer(out []byte) ([]byte, uint64) {
	off := c.read64(V1OffDataOffset)
	size := c.read64(V1OffDataSize)
	for sz := size; sz > 0; {
		if c.mapped != nil && off >= V1DataOffset && off-V1DataOffset+sz <= uint64(len(c.mapped)) {
			rel := off - V1DataOffset
			out = append(out, c.mapped[rel:rel+sz]...)
			off += sz
			sz = 0
			continue
		}
		n := min(sz, uint64(c.xfer))
		if err := c.r.ReadRegion(off, c.buf[:n]); err != nil {
			c.t.Fatalf("data read: %v", err)
		}
		out = append(out, c.buf[:n]...)
		off += n
		sz -= n
	}
	return out, size
}

// loadBuffer is vfio_load_buffer for one chunk of the source's stream.
func (c *v1Client) loadBuffer(data []byte) error {
	for len(data) > 0 {
		off := c.read64(V1OffDataOffset)
		size := min(uint64(len(data)), c.r.Info().Size-off)
		if c.mapped != nil {
			copy(c.mapped[off-V1DataOffset:], data[:size])
		} else {
			for done := uint64(0); done < size; {
				n := min(size-done, uint64(c.xfer))
				if err := c.r.WriteRegion(off+done, data[done:done+n]); err != nil {
					return err
				}
				done += n
			}
		}
		if err := c.write64(V1OffDataSize, size); err != nil {
			return err
		}
		data = data[size:]
	}
	return nil
}

func newV1(t testing.TB, d Stateful, area int, lim Limits) (*Machine, *V1Region) {
	m := NewMachine(d, Options{Limits: lim})
	r, err := NewV1Region(m, area)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return m, r
}

// migrateV1 runs a whole v1 migration: pre-copy iterations, stop-and-copy,
// then the destination's load, as QEMU's v1 code sequences them. It
// returns the bytes that crossed.
func migrateV1(t *testing.T, src, dst *v1Client) []byte {
	// Source: save setup, RUNNING → RUNNING|SAVING.
	if err := src.setState(^uint32(v1Mask), v1Running|v1Saving); err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	var pre []byte
	for i := 0; src.pending() > 0; i++ {
		if i > 100 {
			t.Fatal("pre-copy never converges")
		}
		var n uint64
		start := len(pre)
		pre, n = src.saveBuffer(pre)
		chunks = append(chunks, pre[start:])
		if n == 0 {
			t.Fatal("pending_bytes > 0 but an empty chunk")
		}
	}
	// VM stop: clear RUNNING; complete pre-copy.
	if err := src.setState(^uint32(v1Running), 0); err != nil {
		t.Fatal(err)
	}
	if got := src.state(); got != v1Saving {
		t.Fatalf("source device_state %d after vm stop, want 2", got)
	}
	if err := src.setState(^uint32(v1Running), v1Saving); err != nil {
		t.Fatal(err)
	}
	var rest []byte
	for i := 0; src.pending() > 0; i++ {
		if i > 1000 {
			t.Fatal("stop-and-copy never ends")
		}
		var n uint64
		start := len(rest)
		rest, n = src.saveBuffer(rest)
		chunks = append(chunks, rest[start:])
		if n == 0 {
			break
		}
	}
	if err := src.setState(^uint32(v1Saving), 0); err != nil {
		t.Fatal(err)
	}
	if got := src.state(); got != 0 {
		t.Fatalf("source device_state %d at the end, want 0", got)
	}

	// Destination: load setup → RESUMING, each chunk, then vm start.
	if err := dst.setState(^uint32(v1Mask), v1Resuming); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chunks {
		if err := dst.loadBuffer(ch); err != nil {
			t.Fatalf("load chunk: %v", err)
		}
	}
	if err := dst.setState(^uint32(v1Mask), v1Running); err != nil {
		t.Fatalf("RESUMING → RUNNING: %v", err)
	}
	return append(pre, rest...)
}

func TestV1Migrate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mmap    bool
		blob    int
		area    int
		xfer    int
		filters int
	}{
		{"mmap small state", true, 0, 0, 1 << 20, 0},
		{"region reads small state", false, 0, 0, 1 << 20, 8},
		{"mmap multi-chunk", true, 300_000, 64 << 10, 1 << 20, 4},
		{"region reads multi-chunk, short xfer", false, 300_000, 64 << 10, 10_000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeDev(tc.filters, true)
			src.st = busyState(tc.filters / 2)
			src.st.Blob = bytes.Repeat([]byte("frame"), tc.blob/5)
			dst := newFakeDev(tc.filters, true)
			_, rs := newV1(t, src, tc.area, Limits{})
			md, rd := newV1(t, dst, tc.area, Limits{})
			cs, cd := newV1Client(t, rs, tc.mmap), newV1Client(t, rd, tc.mmap)
			cs.xfer, cd.xfer = tc.xfer, tc.xfer
			got := migrateV1(t, cs, cd)
			if !bytes.Equal(got, mustSave(t, src)) {
				t.Fatalf("v1 transfer (%d bytes) differs from Save", len(got))
			}
			if md.MigrationState() != sRunning || dst.quiesced {
				t.Fatalf("destination in %s, quiesced=%v", md.MigrationState().String(), dst.quiesced)
			}
			if dump(dst.state()) != dump(src.state()) {
				t.Fatal("state differs after a v1 migration")
			}
		})
	}
}

func TestV1Refusals(t *testing.T) {
	d := newFakeDev(0, true)
	m, r := newV1(t, d, 0, Limits{})
	c := newV1Client(t, r, false)
	info := r.Info()
	if info.Type != 3 || info.Subtype != 1 || info.Size != V1DataOffset+DefaultV1AreaSize || info.MMapFile == nil {
		t.Fatalf("region info %+v", info)
	}
	for _, v := range []uint32{5, 6, 7, 8, 0x101} {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		if err := r.WriteRegion(V1OffState, b[:]); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("device_state %d: %v", v, err)
		}
	}
	if m.MigrationState() != sRunning {
		t.Fatal("state moved by invalid writes")
	}
	for _, a := range []struct {
		off uint64
		n   int
	}{{1, 4}, {8, 4}, {12, 8}, {32, 8}, {V1DataOffset - 4, 8}, {V1DataOffset + DefaultV1AreaSize - 4, 8}, {1 << 40, 8}} {
		if err := r.ReadRegion(a.off, make([]byte, a.n)); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("read %d at %#x: %v", a.n, a.off, err)
		}
	}
	if err := c.write64(V1OffPending, 1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("pending_bytes written: %v", err)
	}
	if err := c.write64(V1OffDataSize, 8); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("data_size written while running: %v", err)
	}
	if err := r.WriteRegion(V1DataOffset, []byte{1}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("data written while running: %v", err)
	}
	if c.pending() != 0 {
		t.Error("pending_bytes while running")
	}
	if err := c.setState(0, v1Resuming); err != nil {
		t.Fatal(err)
	}
	if err := c.write64(V1OffDataSize, DefaultV1AreaSize+1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("data_size beyond the area: %v", err)
	}
	// A stream from a device with filters is refused at its header.
	src := newFakeDev(8, true)
	old := newFakeDev(0, false)
	_, r2 := newV1(t, old, 0, Limits{})
	c2 := newV1Client(t, r2, true)
	if err := c2.setState(0, v1Resuming); err != nil {
		t.Fatal(err)
	}
	if err := c2.loadBuffer(mustSave(t, src)); err == nil {
		t.Fatal("incompatible stream accepted")
	}
	if err := c2.setState(0, v1Running); err == nil {
		t.Fatal("RESUMING → RUNNING with refused data succeeded")
	}
	// After an apply failure the device reports the v1 error state.
	d.failApply = true
	if err := c.loadBuffer(mustSave(t, newFakeDev(0, true))); err != nil {
		t.Fatal(err)
	}
	if err := c.setState(0, v1Running); err == nil {
		t.Fatal("apply failure not reported")
	}
	if c.state() != v1Error {
		t.Fatalf("device_state %d after a failure, want %d", c.state(), v1Error)
	}
}

// The v1 save loop stages chunks without allocating.
func TestV1LoopAllocs(t *testing.T) {
	src := newFakeDev(0, true)
	src.st.Blob = make([]byte, 3<<20)
	m, r := newV1(t, src, 0, Limits{})
	c := newV1Client(t, r, true)
	if err := c.setState(0, v1Saving); err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	allocs := testing.AllocsPerRun(20, func() {
		m.outRead = 0
		for {
			r.ReadRegion(V1OffPending, b[:])
			if binary.LittleEndian.Uint64(b[:]) == 0 {
				break
			}
			r.ReadRegion(V1OffDataOffset, b[:])
			r.ReadRegion(V1OffDataSize, b[:])
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per save loop", allocs)
	}
}

func TestV1ResetMidSave(t *testing.T) {
	d := newFakeDev(0, true)
	d.st.Blob = make([]byte, 10000)
	m, r := newV1(t, d, 4096, Limits{})
	c := newV1Client(t, r, false)
	if err := c.setState(0, v1Saving); err != nil {
		t.Fatal(err)
	}
	if c.pending() == 0 || c.read64(V1OffDataSize) != 4096 {
		t.Fatal("no chunk staged")
	}
	m.Reset()
	if c.state() != v1Running || c.pending() != 0 || d.quiesced {
		t.Fatalf("after reset: state %d, pending %d, quiesced %v", c.state(), c.pending(), d.quiesced)
	}
	// A new save starts from the first byte again.
	if err := c.setState(0, v1Saving); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for c.pending() > 0 {
		got, _ = c.saveBuffer(got)
	}
	if !bytes.Equal(got, mustSave(t, d)) {
		t.Fatal("save after reset differs")
	}
}

// TestV1RegionClosedAccessRefused: accesses after Close get ENODEV, not a
// copy from an unmapped area, and Close races no access (run with -race).
func TestV1RegionClosedAccessRefused(t *testing.T) {
	_, r := newV1(t, newFakeDev(1, true), 0, Limits{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p := make([]byte, 8)
		for range 1000 {
			if err := r.ReadRegion(V1OffDataSize, p); err != nil {
				return
			}
		}
	}()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := r.ReadRegion(V1DataOffset, make([]byte, 8)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("read after Close: %v, want ENODEV", err)
	}
	if err := r.WriteRegion(V1OffState, make([]byte, 4)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("write after Close: %v, want ENODEV", err)
	}
}

// TestV1RegionInfoDuringClose: Info may run while Close does (run with
// -race), and describes the region as it stands: mappable until Close,
// then without its data area or file.
func TestV1RegionInfoDuringClose(t *testing.T) {
	_, r := newV1(t, newFakeDev(1, true), 0, Limits{})
	if info := r.Info(); info.MMapFile == nil || info.Flags&device.RegionMMap == 0 || info.Size != V1DataOffset+DefaultV1AreaSize {
		t.Fatalf("open region: %+v", info)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			if r.Info().MMapFile == nil {
				return
			}
		}
	}()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	info := r.Info()
	if info.MMapFile != nil || info.Flags&device.RegionMMap != 0 || len(info.MMapAreas) != 0 || info.Size != V1DataOffset {
		t.Errorf("closed region: %+v, want no data area and nothing to map", info)
	}
}
