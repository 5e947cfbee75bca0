package vfiouser

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/panictest"
)

// fakeDevice is a small device for tests: plain-memory regions, IRQ indexes
// whose eventfds it keeps, and counters of what the server asked.
type fakeDevice struct {
	mu       sync.Mutex
	info     device.Info
	mem      [][]byte
	mmap     *Memory
	irqFDs   map[[2]uint32]*os.File
	setIRQs  []device.SetIRQs
	resets   int
	connects int
	discs    int
	guest    device.GuestMemory
	// onWrite, when set, runs inside WriteRegion (to test handler-context
	// guest memory access).
	onWrite func(offset uint64) error
}

const (
	fakeBAR0Size = 64 << 10
	fakeBAR2Size = 8192
	fakeCfgSize  = 256
	fakeMigIndex = device.RegionMigration
)

func newFakeDevice(t testing.TB) *fakeDevice {
	t.Helper()
	mm, err := NewMemory(fakeBAR2Size)
	if err != nil {
		t.Fatal(err)
	}
	f, err := mm.NewMemoryFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mm.Close(); f.Close() })
	regions := make([]device.RegionInfo, fakeMigIndex+1)
	regions[device.RegionBAR0] = device.RegionInfo{Size: fakeBAR0Size, Flags: device.RegionRead | device.RegionWrite}
	regions[device.RegionBAR2] = device.RegionInfo{Size: fakeBAR2Size, Flags: device.RegionRead | device.RegionWrite | device.RegionMMap,
		MMapFile: f, MMapAreas: []device.Area{{Offset: 4096, Size: 4096}}}
	regions[device.RegionBAR4] = device.RegionInfo{Size: 4096, Flags: device.RegionRead}
	regions[device.RegionConfig] = device.RegionInfo{Size: fakeCfgSize, Flags: device.RegionRead | device.RegionWrite}
	regions[fakeMigIndex] = device.RegionInfo{Size: 4096, Flags: device.RegionRead | device.RegionWrite, Type: 3, Subtype: 1}
	d := &fakeDevice{
		info: device.Info{Regions: regions, Resettable: true, PCI: true, IRQs: []device.IRQInfo{
			{Count: 1, Flags: device.IRQEventFD | device.IRQMaskable | device.IRQAutomasked},
			{Count: 1, Flags: device.IRQEventFD | device.IRQNoResize},
			{Count: 8, Flags: device.IRQEventFD | device.IRQNoResize},
			{Count: 1, Flags: device.IRQEventFD},
			{Count: 1, Flags: device.IRQEventFD},
		}},
		mem:    make([][]byte, len(regions)),
		mmap:   mm,
		irqFDs: map[[2]uint32]*os.File{},
	}
	for i, r := range regions {
		if r.Flags&device.RegionMMap == 0 {
			d.mem[i] = make([]byte, r.Size)
		}
	}
	d.mem[device.RegionBAR2] = mm.Data
	return d
}

func (d *fakeDevice) Info() device.Info { return d.info }

func (d *fakeDevice) ReadRegion(index int, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(p, d.mem[index][off:])
	return nil
}

func (d *fakeDevice) WriteRegion(index int, off uint64, p []byte) error {
	d.mu.Lock()
	hook := d.onWrite
	d.mu.Unlock()
	if hook != nil && index == device.RegionBAR0 {
		if err := hook(off); err != nil {
			return err
		}
	}
	if index == device.RegionBAR0 && off == 0xfff0 {
		return fmt.Errorf("fake: register refuses writes: %w", syscall.EIO)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.mem[index][off:], p)
	return nil
}

// peek copies n bytes of a region under the device lock.
func (d *fakeDevice) peek(index int, off uint64, n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.mem[index][off:off+uint64(n)]...)
}

func (d *fakeDevice) SetIRQs(req device.SetIRQs) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setIRQs = append(d.setIRQs, device.SetIRQs{Index: req.Index, Start: req.Start, Count: req.Count,
		Action: req.Action, Data: req.Data, Bools: req.Bools})
	if req.Count == 0 {
		for k, f := range d.irqFDs {
			if k[0] == req.Index {
				f.Close()
				delete(d.irqFDs, k)
			}
		}
		return nil
	}
	if req.Data == device.IRQDataEventFD && req.Action == device.IRQActionTrigger {
		for i, f := range req.FDs {
			k := [2]uint32{req.Index, req.Start + uint32(i)}
			if old := d.irqFDs[k]; old != nil {
				old.Close()
			}
			if f == nil {
				delete(d.irqFDs, k)
			} else {
				d.irqFDs[k] = f
			}
		}
		return nil
	}
	for _, f := range req.FDs {
		if f != nil {
			f.Close()
		}
	}
	return nil
}

// trigger signals vector of index, as a device raising an interrupt.
func (d *fakeDevice) trigger(index, vector uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.irqFDs[[2]uint32{index, vector}]
	if f == nil {
		return fmt.Errorf("no eventfd for %d/%d", index, vector)
	}
	var one [8]byte
	le.PutUint64(one[:], 1)
	_, err := unix.Write(int(f.Fd()), one[:])
	return err
}

func (d *fakeDevice) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resets++
	return nil
}

func (d *fakeDevice) Connect(mem device.GuestMemory) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.connects++
	d.guest = mem
}

func (d *fakeDevice) Disconnect() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.discs++
	d.guest = nil
	for k, f := range d.irqFDs {
		f.Close()
		delete(d.irqFDs, k)
	}
}

func (d *fakeDevice) counts() (connects, discs, resets int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connects, d.discs, d.resets
}

func (d *fakeDevice) mem0() device.GuestMemory {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.guest
}

// worker is the guest memory as the device's own goroutines reach it: the
// accessor that may send message DMA (DMATable.Worker).
func (d *fakeDevice) worker(t testing.TB) device.GuestMemory {
	t.Helper()
	w, ok := d.mem0().(interface{ Worker() device.GuestMemory })
	if !ok {
		t.Fatal("the device's guest memory has no Worker accessor")
	}
	return w.Worker()
}

// fakeMigDevice adds migration v2 to fakeDevice: the saved state is the
// contents of BAR0.
type fakeMigDevice struct {
	*fakeDevice
	state   device.MigrationState
	out     []byte // data left to read
	in      []byte // data written while resuming
	setErr  error
	chunkSz int // ReadMigrationData returns at most this many bytes
}

var _ device.Migratable = (*fakeMigDevice)(nil)

func (d *fakeMigDevice) MigrationFlags() uint64 {
	return device.MigFlagStopCopy | device.MigFlagPreCopy
}

func (d *fakeMigDevice) MigrationState() device.MigrationState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

func (d *fakeMigDevice) SetMigrationState(target device.MigrationState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.setErr != nil {
		return d.setErr
	}
	switch target {
	case device.MigStopCopy, device.MigPreCopy:
		d.out = append([]byte(nil), d.mem[device.RegionBAR0]...)
	case device.MigResuming:
		d.in = nil
	case device.MigStop:
		if d.state == device.MigResuming {
			if len(d.in) != fakeBAR0Size {
				return fmt.Errorf("fake: incomplete state of %d bytes: %w", len(d.in), syscall.EINVAL)
			}
			copy(d.mem[device.RegionBAR0], d.in)
		}
	}
	d.state = target
	return nil
}

func (d *fakeMigDevice) ReadMigrationData(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := copy(p, d.out)
	if d.chunkSz > 0 {
		n = min(n, d.chunkSz)
	}
	d.out = d.out[n:]
	return n, nil
}

func (d *fakeMigDevice) WriteMigrationData(p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != device.MigResuming {
		return fmt.Errorf("fake: not resuming: %w", syscall.EINVAL)
	}
	d.in = append(d.in, p...)
	return nil
}

func (d *fakeMigDevice) MigrationDataSize() (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint64(len(d.out)), nil
}

func (d *fakeMigDevice) failWith(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setErr = err
}

// newServer is NewServer for a test that expects no panic: it fails the
// test if the server recovered one by the time the test ends (cleanups run
// last-registered first, so after those that end its connections). A test
// that provokes a panic on purpose calls NewServer and counts them itself.
func newServer(t testing.TB, dev device.Device, opts Options) *Server {
	t.Helper()
	srv := NewServer(dev, opts)
	panictest.Check(t, "vfio-user server", srv)
	return srv
}

// pair connects a Conn for dev to a Client over a socketpair. With serve,
// the conn runs Serve in a goroutine; without, the test steps it. The test
// fails if handling a message panicked.
func pair(t testing.TB, dev device.Device, serve bool, opts Options) (*Server, *Conn, *Client) {
	t.Helper()
	return pairWith(t, newServer(t, dev, opts), serve)
}

// pairWith connects a Conn of srv to a Client over a socketpair.
func pairWith(t testing.TB, srv *Server, serve bool) (*Server, *Conn, *Client) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := srv.NewConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	cl := NewClient(fds[1])
	done := make(chan struct{})
	if serve {
		go func() { conn.Serve(); close(done) }()
	} else {
		close(done)
	}
	t.Cleanup(func() {
		cl.Close()
		<-done
		conn.Close()
	})
	return srv, conn, cl
}

func negotiated(t *testing.T, dev device.Device) (*Conn, *Client) {
	t.Helper()
	_, conn, cl := pair(t, dev, true, Options{})
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	return conn, cl
}

func wantErrno(t *testing.T, err error, want syscall.Errno) {
	t.Helper()
	var re *ReplyError
	if err == nil {
		t.Fatalf("got success, want %v", want)
	}
	if !asReplyError(err, &re) || re.Errno != want {
		t.Fatalf("got %v, want errno %v", err, want)
	}
}

func asReplyError(err error, re **ReplyError) bool {
	for err != nil {
		if r, ok := err.(*ReplyError); ok {
			*re = r
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}
