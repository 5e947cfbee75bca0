package vfiouser

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

// The server caps DMA maps at a quarter of the kernel's vm.max_map_count,
// read at start, and below QEMU's 65535.
func TestDMAMapCapFollowsMaxMapCount(t *testing.T) {
	leakcheck.Check(t)
	b, err := os.ReadFile("/proc/sys/vm/max_map_count")
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(newFakeDevice(t), Options{})
	if got, want := srv.opts.DMALimits.MaxMaps, min(65535, limit/4); got != want {
		t.Fatalf("max maps %d with vm.max_map_count %d, want %d", got, limit, want)
	}
	if got := NewServer(newFakeDevice(t), Options{vmMaxMapCount: 2}).opts.DMALimits.MaxMaps; got != 1 {
		t.Fatalf("max maps %d with vm.max_map_count 2, want 1", got)
	}
	if got := NewServer(newFakeDevice(t), Options{vmMaxMapCount: 1 << 30}).opts.DMALimits.MaxMaps; got != DefaultDMALimits.MaxMaps {
		t.Fatalf("max maps %d with a huge vm.max_map_count, want the default %d", got, DefaultDMALimits.MaxMaps)
	}
}

// A client is told the cap in max_dma_maps; fd-backed maps beyond it are
// refused with ENOSPC and the connection goes on: registers are served, and
// a map fits again once one is unmapped. When that client goes, with its
// maps in place, the next one is served, and no descriptor (of the maps)
// or goroutine is left.
func TestDMAMapsBeyondTheCapRefused(t *testing.T) {
	leakcheck.Check(t)
	const limit, maxMaps = 40, 10
	s := serveAbuse(t, newFakeDevice(t), Options{vmMaxMapCount: limit})
	cl := s.connect(t)
	v, err := cl.Negotiate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.Caps == nil || v.Caps.MaxDMAMaps == nil || *v.Caps.MaxDMAMaps != maxMaps {
		t.Fatalf("max_dma_maps %v, want %d", v.Caps, maxMaps)
	}
	mem, err := NewMemory(DMAPageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for i := range maxMaps {
		if err := cl.Map(uint64(i)*DMAPageSize, mem, 0, DMAPageSize, DMAFlagRead|DMAFlagWrite); err != nil {
			t.Fatalf("map %d: %v", i, err)
		}
	}
	err = cl.Map(maxMaps*DMAPageSize, mem, 0, DMAPageSize, DMAFlagRead|DMAFlagWrite)
	wantErrno(t, err, syscall.ENOSPC)
	var b [4]byte
	if err := cl.ReadRegion(device.RegionBAR0, 0, b[:]); err != nil {
		t.Fatal("register read after a refused map:", err)
	}
	if err := cl.Unmap(0, DMAPageSize); err != nil {
		t.Fatal(err)
	}
	if err := cl.Map(maxMaps*DMAPageSize, mem, 0, DMAPageSize, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal("map after an unmap made room:", err)
	}
	cl.Close()
	s.nextClient(t, device.RegionBAR0, 0)
}

// diskFile opens a file of at least one page on a filesystem that is not
// shared memory: one made in the test's temporary directory, or, where that
// is a tmpfs, the test binary or this package's source, which live on the
// disk the build runs from. Opened read-only but the first.
func diskFile(t *testing.T) *os.File {
	t.Helper()
	page := make([]byte, DMAPageSize)
	tmp := filepath.Join(t.TempDir(), "guest-ram")
	if err := os.WriteFile(tmp, page, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{tmp, exe, "dma.go"} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var fs unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
			t.Fatal(err)
		}
		if typ := uint32(fs.Type); typ != unix.TMPFS_MAGIC && typ != unix.HUGETLBFS_MAGIC {
			t.Cleanup(func() { f.Close() })
			return f
		}
		f.Close()
	}
	t.Fatal("the temporary directory, the test binary and the package source are all on tmpfs or hugetlbfs: no disk file to test with")
	return nil
}

// Only shared memory backs DMA maps unless AnyFile allows more: a memfd is
// taken, a file on a disk filesystem, a device file and a procfs file are
// refused with EPERM and ErrDMAFile; with AnyFile the disk file is mapped
// and reads back its bytes.
func TestDMAMapFileTypes(t *testing.T) {
	mem, err := NewMemory(DMAPageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	disk := diskFile(t)
	var head [16]byte
	if _, err := disk.ReadAt(head[:], 0); err != nil {
		t.Fatal(err)
	}
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	proc, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close()

	tab := NewDMATable(DefaultDMALimits)
	defer tab.UnmapAll()
	read := DMAMap{Flags: DMAFlagRead, Size: DMAPageSize}
	if err := tab.Map(DMAMap{Flags: DMAFlagRead | DMAFlagWrite, Addr: 0, Size: DMAPageSize}, mem.FD()); err != nil {
		t.Fatal("memfd refused:", err)
	}
	for i, f := range []*os.File{disk, zero, proc} {
		m := read
		m.Addr = uint64(i+1) * 0x10000
		err := tab.Map(m, int(f.Fd()))
		if !errors.Is(err, ErrDMAFile) || !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want ErrDMAFile and EPERM", f.Name(), err)
		}
	}
	if tab.Len() != 1 {
		t.Fatalf("%d maps after refusals, want 1", tab.Len())
	}

	anyTab := NewDMATable(DMALimits{MaxMaps: 4, MaxTotal: 1 << 20, AnyFile: true})
	defer anyTab.UnmapAll()
	if err := anyTab.Map(read, int(disk.Fd())); err != nil {
		t.Fatal("disk file refused with AnyFile:", err)
	}
	var got [16]byte
	if err := anyTab.Read(0, got[:]); err != nil || got != head {
		t.Fatalf("read %x, %v; want the file's %x", got, err, head)
	}
}

// Through the socket: the refusal is an EPERM reply, the connection goes
// on, and a server with AnyFile takes the same file.
func TestDMAMapFileTypeThroughSocket(t *testing.T) {
	leakcheck.FDs(t)
	disk := diskFile(t)
	m := make([]byte, DMAMapSize)
	DMAMap{Argsz: DMAMapSize, Flags: DMAFlagRead, Addr: 0x100000, Size: DMAPageSize}.Encode(m)
	for _, anyFile := range []bool{false, true} {
		dev := newFakeDevice(t)
		_, _, cl := pair(t, dev, true, Options{DMALimits: DMALimits{AnyFile: anyFile}})
		if _, err := cl.Negotiate(nil); err != nil {
			t.Fatal(err)
		}
		_, err := cl.Call(CmdDMAMap, m, []int{int(disk.Fd())})
		if anyFile {
			if err != nil {
				t.Fatal("disk file refused with AnyFile:", err)
			}
		} else {
			wantErrno(t, err, syscall.EPERM)
		}
		mem, err := NewMemory(DMAPageSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Map(0, mem, 0, DMAPageSize, DMAFlagRead|DMAFlagWrite); err != nil {
			t.Fatal("memfd map after the disk file:", err)
		}
		mem.Close()
		if _, err := cl.GetInfo(); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
}
