package migration_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/migration"
	"e1000e-vfu/vfiouser"
)

// served is how a device is put together for the server: the PCI function,
// the migration machine, and the v1 region at index RegionMigration.
type served struct {
	*device.Function
	*migration.Machine
}

func (s *served) Reset() error {
	err := s.Function.Reset()
	s.Machine.Reset()
	return err
}

var _ device.Migratable = (*served)(nil)

// testServer is a device served over socketpairs, one client at a time,
// the server running on its own goroutine.
type testServer struct {
	t    *testing.T
	srv  *vfiouser.Server
	m    *migration.Machine
	cl   *vfiouser.Client
	done chan struct{} // closed when the current connection has ended
}

// newTestServer builds a device around st with the v1 region on.
func newTestServer(t *testing.T, st migration.Stateful) *testServer {
	t.Helper()
	cs := device.NewConfigSpace(device.Identity{VendorID: 0x8086, DeviceID: 0x10d3, Class: 0x020000})
	if err := cs.AddBAR(0, device.BAR{Kind: device.BARMem32, Size: 128 << 10}); err != nil {
		t.Fatal(err)
	}
	f := device.NewFunction(cs)
	m := migration.NewMachine(st, migration.Options{})
	r, err := migration.NewV1Region(m, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AddRegion(device.RegionMigration, r.Info(), r); err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, m: m, srv: vfiouser.NewServer(&served{Function: f, Machine: m}, vfiouser.Options{Logger: slog.New(slog.DiscardHandler)})}
	panictest.Check(t, "vfio-user server", s.srv) // after hangUp below
	t.Cleanup(func() {
		s.hangUp()
		r.Close()
	})
	return s
}

// hangUp closes the current client and waits for the server to drop it.
func (s *testServer) hangUp() {
	if s.cl == nil {
		return
	}
	s.cl.Close()
	<-s.done
	s.cl = nil
}

// connect replaces the current client, if any, by a new one that has
// negotiated.
func (s *testServer) connect() *vfiouser.Client {
	t := s.t
	t.Helper()
	s.hangUp()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := s.srv.NewConn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { conn.Serve(); close(done) }()
	s.cl, s.done = vfiouser.NewClient(fds[1]), done
	if _, err := s.cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	return s.cl
}

// nextClient replaces the current client by a new one, which has a
// register read (the vendor ID) answered.
func (s *testServer) nextClient() {
	t := s.t
	t.Helper()
	cl := s.connect()
	var b [2]byte
	if err := cl.ReadRegion(device.RegionConfig, device.CfgVendorID, b[:]); err != nil {
		t.Fatal("the next client's register read:", err)
	}
	if v := binary.LittleEndian.Uint16(b[:]); v != 0x8086 {
		t.Fatalf("the next client reads vendor %#x, want 0x8086", v)
	}
}

// serve builds a device around st and connects a client to it.
func serve(t *testing.T, st migration.Stateful) (*vfiouser.Client, *migration.Machine) {
	t.Helper()
	s := newTestServer(t, st)
	return s.connect(), s.m
}

func dumpOf(t *testing.T, s migration.Stateful) []byte {
	b, err := migration.Save(nil, s, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A v2 migration through the real server and client: PRE_COPY data first,
// then STOP_COPY, MIG_DATA_SIZE along the way.
func TestServedMigrationV2(t *testing.T) {
	src, dst := migration.NewFakeDev(16, true, false), migration.NewFakeDev(16, false, false)
	scl, _ := serve(t, src)
	dcl, dm := serve(t, dst)
	if f, err := scl.MigrationFlags(); err != nil || f != device.MigFlagStopCopy|device.MigFlagPreCopy {
		t.Fatalf("flags %#x, %v", f, err)
	}
	if n, err := scl.MigDataSize(); err != nil || n == 0 {
		t.Fatalf("MIG_DATA_SIZE in RUNNING: %d, %v", n, err)
	}
	move := func() {
		buf := make([]byte, 1000)
		for i := 0; ; i++ {
			if i > 1000 {
				t.Fatal("data does not end")
			}
			n, err := scl.MigDataRead(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				if err := dcl.MigDataWrite(buf[:n]); err != nil {
					t.Fatal(err)
				}
			}
			if n < len(buf) {
				return
			}
		}
	}
	for _, step := range []struct {
		cl *vfiouser.Client
		s  device.MigrationState
	}{{scl, device.MigPreCopy}, {dcl, device.MigResuming}} {
		if got, err := step.cl.SetMigrationState(step.s); err != nil || got != step.s {
			t.Fatalf("set %d: %d, %v", step.s, got, err)
		}
	}
	move()
	if _, err := scl.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	move()
	if n, err := scl.MigDataSize(); err != nil || n != 0 {
		t.Fatalf("MIG_DATA_SIZE after the end: %d, %v", n, err)
	}
	if _, err := dcl.SetMigrationState(device.MigRunning); err != nil {
		t.Fatalf("RESUMING→RUNNING: %v", err)
	}
	if dm.MigrationState() != device.MigRunning || !bytes.Equal(dumpOf(t, dst), dumpOf(t, src)) {
		t.Fatal("destination state differs")
	}
	// STOP_COPY→PRE_COPY is refused over the wire with EINVAL.
	if _, err := scl.SetMigrationState(device.MigStop); err != nil {
		t.Fatal(err)
	}
	if _, err := scl.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	var re *vfiouser.ReplyError
	if _, err := scl.SetMigrationState(device.MigPreCopy); !errors.As(err, &re) || re.Errno != syscall.EINVAL {
		t.Fatalf("STOP_COPY→PRE_COPY: %v", err)
	}
	// DEVICE_RESET is the way back to RUNNING.
	if err := scl.Reset(); err != nil {
		t.Fatal(err)
	}
	if s, err := scl.MigrationState(); err != nil || s != device.MigRunning {
		t.Fatalf("after reset: %d, %v", s, err)
	}
}

// The v1 region through the real server: its info carries the TYPE and
// SPARSE_MMAP capabilities and an fd; data moves through the client's own
// mapping of it.
func TestServedMigrationV1(t *testing.T) {
	src, dst := migration.NewFakeDev(0, true, false), migration.NewFakeDev(0, false, false)
	scl, _ := serve(t, src)
	dcl, _ := serve(t, dst)
	mapArea := func(cl *vfiouser.Client) (uint64, []byte) {
		info, caps, f, err := cl.RegionInfo(device.RegionMigration)
		if err != nil {
			t.Fatal(err)
		}
		if !caps.HasType || caps.Type != migration.V1RegionType || caps.Subtype != migration.V1RegionSubtype || len(caps.Sparse) != 1 || f == nil {
			t.Fatalf("region info %+v caps %+v fd %v", info, caps, f)
		}
		defer f.Close()
		a := caps.Sparse[0]
		m, err := unix.Mmap(int(f.Fd()), int64(info.Offset+a.Offset), int(a.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(m) })
		return a.Offset, m
	}
	soff, smap := mapArea(scl)
	doff, dmap := mapArea(dcl)
	rd := func(cl *vfiouser.Client, off uint64, n int) uint64 {
		b := make([]byte, n)
		if err := cl.ReadRegion(device.RegionMigration, off, b); err != nil {
			t.Fatalf("read %#x: %v", off, err)
		}
		if n == 4 {
			return uint64(binary.LittleEndian.Uint32(b))
		}
		return binary.LittleEndian.Uint64(b)
	}
	wr := func(cl *vfiouser.Client, off uint64, n int, v uint64) error {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, v)
		return cl.WriteRegion(device.RegionMigration, off, b[:n])
	}
	if err := wr(scl, 0, 4, 2); err != nil { // stop-and-copy
		t.Fatal(err)
	}
	if err := wr(dcl, 0, 4, 4); err != nil { // resuming
		t.Fatal(err)
	}
	var moved []byte
	for i := 0; rd(scl, 8, 8) > 0; i++ {
		if i > 1000 {
			t.Fatal("save loop does not end")
		}
		off, size := rd(scl, 16, 8), rd(scl, 24, 8)
		chunk := smap[off-soff : off-soff+size]
		moved = append(moved, chunk...)
		doffNow := rd(dcl, 16, 8)
		copy(dmap[doffNow-doff:], chunk)
		if err := wr(dcl, 24, 8, size); err != nil {
			t.Fatalf("data_size write: %v", err)
		}
	}
	if err := wr(scl, 0, 4, 0); err != nil {
		t.Fatal(err)
	}
	if err := wr(dcl, 0, 4, 1); err != nil {
		t.Fatalf("resuming → running: %v", err)
	}
	if !bytes.Equal(moved, dumpOf(t, src)) || !bytes.Equal(dumpOf(t, dst), dumpOf(t, src)) {
		t.Fatal("v1 migration through the server lost state")
	}
}
