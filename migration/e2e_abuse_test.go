package migration_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
	"e1000e-vfu/migration"
	"e1000e-vfu/vfiouser"
)

func v1Read(t *testing.T, cl *vfiouser.Client, off uint64) uint64 {
	t.Helper()
	b := make([]byte, 8)
	n := 8
	if off == migration.V1OffState {
		n = 4
	}
	if err := cl.ReadRegion(device.RegionMigration, off, b[:n]); err != nil {
		t.Fatalf("v1 read at %#x: %v", off, err)
	}
	return binary.LittleEndian.Uint64(b)
}

func v1SetState(t *testing.T, cl *vfiouser.Client, v uint32) {
	t.Helper()
	b := binary.LittleEndian.AppendUint32(nil, v)
	if err := cl.WriteRegion(device.RegionMigration, migration.V1OffState, b); err != nil {
		t.Fatalf("device_state %d: %v", v, err)
	}
}

// v1Save runs the v1 save loop through region reads of the data area (the
// server copies each chunk into its mapping of the area, then reads it back
// out) until pending_bytes is 0, and returns the bytes.
func v1Save(t *testing.T, cl *vfiouser.Client) []byte {
	t.Helper()
	var out []byte
	for i := 0; ; i++ {
		p := v1Read(t, cl, migration.V1OffPending)
		if p == 0 {
			return out
		}
		if i > 1000 || p > 16<<20 {
			t.Fatalf("save loop: pending_bytes %#x after %d chunks", p, i)
		}
		off, size := v1Read(t, cl, migration.V1OffDataOffset), v1Read(t, cl, migration.V1OffDataSize)
		if size == 0 || size > p {
			t.Fatalf("chunk of %d bytes with %d pending", size, p)
		}
		b := make([]byte, size)
		if err := cl.ReadRegion(device.RegionMigration, off, b); err != nil {
			t.Fatalf("data read: %v", err)
		}
		out = append(out, b...)
	}
}

// The v1 data area is a memfd the client receives. Its size is sealed: a
// client that truncates it gets EPERM instead of making the server's next
// access to the area fault, and the area keeps working. The next client is
// served, and nothing is left open or running.
func TestServedV1AreaSealed(t *testing.T) {
	leakcheck.Check(t)
	src := migration.NewFakeDev(0, true, false)
	s := newTestServer(t, src)
	cl := s.connect()
	info, caps, f, err := cl.RegionInfo(device.RegionMigration)
	if err != nil || f == nil || len(caps.Sparse) != 1 {
		t.Fatalf("region info %+v caps %+v fd %v: %v", info, caps, f, err)
	}
	defer f.Close()
	for _, size := range []int64{0, int64(info.Offset + info.Size - 4096), int64(info.Offset + info.Size + 4096)} {
		if err := f.Truncate(size); !errors.Is(err, syscall.EPERM) {
			t.Errorf("client's ftruncate to %d: %v, want EPERM", size, err)
		}
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(info.Offset+info.Size+4096)); !errors.Is(err, syscall.EPERM) {
		t.Errorf("client's fallocate beyond the end: %v, want EPERM", err)
	}
	// The seals themselves are sealed: the client cannot add a write seal
	// that would fail the server's copies.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); !errors.Is(err, syscall.EPERM) {
		t.Errorf("client's F_SEAL_WRITE: %v, want EPERM", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || uint64(st.Size) != info.Offset+info.Size {
		t.Fatalf("area file of %d bytes after the attempts, want %d: %v", st.Size, info.Offset+info.Size, err)
	}

	// The server still writes chunks into the area and reads them back.
	v1SetState(t, cl, 2) // stop-and-copy
	got := v1Save(t, cl)
	if !bytes.Equal(got, dumpOf(t, src)) {
		t.Fatalf("saved %d bytes through the area, want the device's %d", len(got), len(dumpOf(t, src)))
	}
	// And the client's own mapping sees what the server wrote.
	a := caps.Sparse[0]
	m, err := unix.Mmap(int(f.Fd()), int64(info.Offset+a.Offset), int(a.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if !bytes.HasPrefix(m, migration.Magic[:]) {
		t.Fatal("the client's mapping does not show the chunk the server staged")
	}
	s.nextClient()
}

// A chunk staged through the v1 region does not outlive a state change made
// through migration v2: pending_bytes and the data stay consistent with the
// new save, no request panics, and the next client is served.
func TestServedV1StagedChunkAcrossV2(t *testing.T) {
	leakcheck.Check(t)
	src := migration.NewFakeDev(0, true, false)
	s := newTestServer(t, src)
	cl := s.connect()

	// v1: stop-and-copy, and stage the first chunk (the whole stream).
	v1SetState(t, cl, 2)
	whole := v1Read(t, cl, migration.V1OffDataSize)
	head := len(mustHead(t, src))
	if whole <= uint64(head) {
		t.Fatalf("staged %d bytes, not more than the pre-copy data's %d", whole, head)
	}
	// v2: back to RUNNING, then a new save in PRE_COPY, whose data is
	// shorter than the chunk staged.
	for _, st := range []device.MigrationState{device.MigRunning, device.MigPreCopy} {
		if _, err := cl.SetMigrationState(st); err != nil {
			t.Fatalf("v2 state %d: %v", st, err)
		}
	}
	// v1 again: pending_bytes is the new save's, and the data is its
	// header, from the first byte.
	if p := v1Read(t, cl, migration.V1OffPending); p != uint64(head) {
		t.Fatalf("pending_bytes %#x after the v2 state change, want %d", p, head)
	}
	pre := v1Save(t, cl)
	if len(pre) != head || !bytes.HasPrefix(pre, migration.Magic[:]) {
		t.Fatalf("pre-copy data of %d bytes (magic %v), want %d", len(pre), bytes.HasPrefix(pre, migration.Magic[:]), head)
	}
	// v2 finishes the save where v1 left it: the bytes make one stream.
	if _, err := cl.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, 64<<10)
	n, err := cl.MigDataRead(rest)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(pre, rest[:n]...); !bytes.Equal(got, dumpOf(t, src)) {
		t.Fatalf("mixed v1/v2 save gave %d bytes, not the device's stream", len(got))
	}

	// A v1 chunk staged, then the data taken through v2: the chunk is not
	// counted a second time.
	if _, err := cl.SetMigrationState(device.MigRunning); err != nil {
		t.Fatal(err)
	}
	v1SetState(t, cl, 2)
	staged := v1Read(t, cl, migration.V1OffDataSize)
	if n, err := cl.MigDataRead(rest[:10]); err != nil || n != 10 {
		t.Fatalf("v2 read beside a staged v1 chunk: %d, %v", n, err)
	}
	if p := v1Read(t, cl, migration.V1OffPending); p != staged-10 {
		t.Fatalf("pending_bytes %#x after a v2 read of 10 of %d bytes", p, staged)
	}
	if size, err := cl.MigDataSize(); err != nil || size != staged-10 {
		t.Fatalf("MIG_DATA_SIZE %d, %v; want %d", size, err, staged-10)
	}
	// The connection survived all of it, and so does the server.
	if _, err := cl.GetInfo(); err != nil {
		t.Fatalf("same client after the sequence: %v", err)
	}
	cl = s.connect()
	if _, err := cl.GetInfo(); err != nil {
		t.Fatalf("fresh client: %v", err)
	}
	if st := v1Read(t, cl, migration.V1OffState); st != 2 {
		t.Fatalf("fresh client reads device_state %d, want 2 (saving)", st)
	}
}

// mustHead is the pre-copy data of st: its header and configuration.
func mustHead(t *testing.T, st migration.Stateful) []byte {
	t.Helper()
	m := migration.NewMachine(st, migration.Options{})
	if err := m.SetMigrationState(device.MigPreCopy); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64<<10)
	n, err := m.ReadMigrationData(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetMigrationState(device.MigRunning); err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// A stream of many small records sent in small MIG_DATA_WRITEs (the shape
// that made the old scan quadratic) is refused by the write that brings
// one section too many, later writes are refused too, and the client is
// still served. BenchmarkIncomingSmallWrites measures the cost per write.
func TestServedManyRecordsRefused(t *testing.T) {
	leakcheck.Check(t)
	dev := migration.NewFakeDev(0, true, false)
	s := newTestServer(t, dev)
	cl := s.connect()
	if _, err := cl.SetMigrationState(device.MigResuming); err != nil {
		t.Fatal(err)
	}
	stream, err := migration.AppendHeader(nil, dev.Model(), nil, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	hdr := len(stream)
	const records = 20_000
	for i := 0; i < records; i++ {
		stream = append(stream, 'S', 0, 1, 'x', 0, 0, 0, 0)
	}
	limit := migration.DefaultLimits().MaxSections
	tooMany := hdr + 8*limit + 7 // the last byte of the first section too many
	var re *vfiouser.ReplyError
	refused := -1
	for off := 0; off < len(stream); off += 64 {
		err := cl.MigDataWrite(stream[off:min(off+64, len(stream))])
		if err == nil {
			continue
		}
		if !errors.As(err, &re) || re.Errno != syscall.EINVAL {
			t.Fatalf("write at %d: %v, want EINVAL", off, err)
		}
		if refused < 0 {
			refused = off
		}
	}
	if want := tooMany / 64 * 64; refused != want {
		t.Fatalf("first refused write at %d, want the one at %d that brings section %d", refused, want, limit+1)
	}
	if _, err := cl.GetInfo(); err != nil {
		t.Fatalf("client after the refused stream: %v", err)
	}
	if _, err := cl.SetMigrationState(device.MigStop); err == nil {
		t.Fatal("RESUMING→STOP loaded a refused stream")
	}
	s.nextClient()
}

// A section whose decoding would cost many times its size (4 MiB of
// one-byte elements, each eight in a []uint64, made then appended) is
// refused by the write that completes the stream, without the decoder
// allocating for it; the client is answered and a fresh one served.
func TestServedHostileSectionRefused(t *testing.T) {
	leakcheck.Check(t)
	dev := migration.NewFakeDev(16, true, false)
	s := newTestServer(t, dev)
	cl := s.connect()
	h, secs, err := migration.Split(dumpOf(t, dev), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	const elems = 4<<20 - 16
	macs := binary.BigEndian.AppendUint32([]byte{0x81, 0xa4, 'm', 'a', 'c', 's', 0xdd}, elems)
	macs = append(macs, make([]byte, elems)...)
	for i := range secs {
		if secs[i].Name == "filters" {
			secs[i].Payload = macs
		}
	}
	stream, err := migration.Assemble(h, secs, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SetMigrationState(device.MigResuming); err != nil {
		t.Fatal(err)
	}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	const chunk = 1 << 20
	for off := 0; off < len(stream); off += chunk {
		end := min(off+chunk, len(stream))
		err := cl.MigDataWrite(stream[off:end])
		if end < len(stream) && err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		var re *vfiouser.ReplyError
		if end == len(stream) && (!errors.As(err, &re) || re.Errno != syscall.EINVAL) {
			t.Fatalf("the last write: %v, want EINVAL", err)
		}
	}
	runtime.ReadMemStats(&ms1)
	// Client and server together: the messages and the server's buffer
	// of the stream, a few times its size; decoding the section as it
	// was would have taken 16 times its size on top.
	got, bound := ms1.TotalAlloc-ms0.TotalAlloc, uint64(8*len(stream))
	if got > bound {
		t.Errorf("sending and refusing %d bytes allocated %d, over %d", len(stream), got, bound)
	}
	t.Logf("sending and refusing %d bytes allocated %d (%.1fx)", len(stream), got, float64(got)/float64(len(stream)))
	if _, err := cl.SetMigrationState(device.MigStop); err == nil {
		t.Fatal("RESUMING→STOP loaded a refused stream")
	}
	if _, err := cl.GetInfo(); err != nil {
		t.Fatalf("client after the refusal: %v", err)
	}
	s.nextClient()
}
