package vfiouser

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

func TestDMAMapAndAccess(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	conn, cl := negotiated(t, dev)
	mem, err := NewMemory(4 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	// Two adjacent mappings from one memfd, the second read-only.
	if err := cl.Map(0x10000, mem, 0, 2*4096, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	if err := cl.Map(0x12000, mem, 2*4096, 4096, DMAFlagRead); err != nil {
		t.Fatal(err)
	}
	g := dev.mem0()
	if g == nil {
		t.Fatal("device got no guest memory")
	}
	copy(mem.Data[0x1ffe:], []byte{1, 2, 3, 4})
	got := make([]byte, 4)
	if err := g.Read(0x11ffe, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatalf("read across two mappings: %x", got)
	}
	if err := g.Write(0x10010, []byte{9, 8, 7}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem.Data[0x10:0x13], []byte{9, 8, 7}) {
		t.Fatal("device write not visible in client memory")
	}
	if err := g.Write(0x12000, []byte{1}); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("write to read-only mapping: %v", err)
	}
	if err := g.Write(0x11fff, []byte{1, 2}); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("write spanning into read-only mapping: %v", err)
	}
	if err := g.Read(0x12ffe, got); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("read past the end: %v", err)
	}
	if err := g.Read(0xfff0, got); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("read below the first mapping: %v", err)
	}
	if err := g.Read(^uint64(0)-1, got); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("wrapping read: %v", err)
	}

	// Refusals.
	wantErrno(t, cl.Map(0x11000, mem, 0, 4096, 3), syscall.EEXIST)
	wantErrno(t, cl.Map(0xf000, mem, 0, 2*4096, 3), syscall.EEXIST)
	wantErrno(t, cl.Map(0x20001, mem, 0, 4096, 3), syscall.EINVAL)
	wantErrno(t, cl.Map(0x20000, mem, 1, 4096, 3), syscall.EINVAL)
	wantErrno(t, cl.Map(0x20000, mem, 0, 100, 3), syscall.EINVAL)
	wantErrno(t, cl.Map(0x20000, mem, 0, 0, 3), syscall.EINVAL)
	wantErrno(t, cl.Map(0x20000, mem, 0, 4096, 8), syscall.EINVAL)
	wantErrno(t, cl.Map(0x20000, mem, 0, 8*4096, 3), syscall.EINVAL) // beyond the file
	wantErrno(t, cl.Map(^uint64(0)-4095, mem, 0, 8192, 3), syscall.EINVAL)
	wantErrno(t, cl.Unmap(0x10000, 4096), syscall.EINVAL) // not the whole mapping
	wantErrno(t, cl.Unmap(0x30000, 4096), syscall.ENOENT)

	if err := cl.Unmap(0x12000, 4096); err != nil {
		t.Fatal(err)
	}
	if err := g.Read(0x12000, got); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("read after unmap: %v", err)
	}
	var p [DMAUnmapSize]byte
	DMAUnmap{Argsz: DMAUnmapSize, Flags: UnmapFlagAll, Addr: 0x10000}.Encode(p[:])
	_, err = cl.Call(CmdDMAUnmap, p[:], nil)
	wantErrno(t, err, syscall.EINVAL)
	if err := cl.UnmapAll(); err != nil {
		t.Fatal(err)
	}
	if conn.DMA().Len() != 0 {
		t.Fatal("mappings left after unmap all")
	}
}

func TestDMALimits(t *testing.T) {
	tab := NewDMATable(DMALimits{MaxMaps: 2, MaxTotal: 3 * 4096})
	for i := range 2 {
		if err := tab.Map(DMAMap{Flags: 3, Addr: uint64(i) * 4096, Size: 4096}, -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := tab.Map(DMAMap{Flags: 3, Addr: 0x10000, Size: 4096}, -1); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("third map: %v", err)
	}
	tab.UnmapAll()
	if err := tab.Map(DMAMap{Flags: 3, Addr: 0, Size: 4 * 4096}, -1); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("map over total: %v", err)
	}
}

// TestDMAUnmapWaitsForAccess runs device reads against unmaps: an access
// either succeeds or reports EFAULT, never touches unmapped memory.
func TestDMAUnmapWaitsForAccess(t *testing.T) {
	mem, err := NewMemory(64 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tab := NewDMATable(DefaultDMALimits)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64*4096)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			err := tab.Write(0, buf[:1+i%len(buf)])
			if err != nil && !errors.Is(err, syscall.EFAULT) {
				t.Error(err)
				return
			}
		}
	}()
	for range 200 {
		if err := tab.Map(DMAMap{Flags: 3, Size: 64 * 4096}, mem.FD()); err != nil {
			t.Fatal(err)
		}
		if err := tab.Unmap(0, 64*4096, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestDMAShrunkFile: a client that truncates its memfd after mapping gets
// errors, not a crashed server.
func TestDMAShrunkFile(t *testing.T) {
	mem, err := NewMemory(2 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tab := NewDMATable(DefaultDMALimits)
	defer tab.UnmapAll()
	if err := tab.Map(DMAMap{Flags: 3, Size: 2 * 4096}, mem.FD()); err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(mem.FD(), 0); err != nil {
		t.Fatal(err)
	}
	if err := tab.Read(4096, make([]byte, 8)); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("read of a truncated file: %v", err)
	}
}

func TestMessageDMA(t *testing.T) {
	leakcheck.FDs(t)
	// QEMU answers DMA_WRITE with the header alone; the specification
	// with the address and count. The server takes both.
	for _, headerOnly := range []bool{false, true} {
		t.Run(fmt.Sprint("header-only write replies ", headerOnly), func(t *testing.T) { testMessageDMA(t, headerOnly) })
	}
}

func testMessageDMA(t *testing.T, headerOnly bool) {
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, true, Options{})
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	cl.SetHeaderOnlyWriteReplies(headerOnly)
	if conn.DMA().Messaged() {
		t.Fatal("Messaged before any mapping without fd")
	}
	guest := make([]byte, 2*4096)
	copy(guest[100:], "hello")
	if err := cl.MapMessage(0x40000, guest, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	if !conn.DMA().Messaged() {
		t.Fatal("not Messaged with a mapping without fd")
	}
	g := dev.worker(t)
	// From the device's own goroutine, as a receive path would.
	done := make(chan error)
	got := make([]byte, 5)
	go func() {
		if err := g.Read(0x40000+100, got); err != nil {
			done <- err
			return
		}
		done <- g.Write(0x40000+4095, []byte("xy"))
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Fatalf("DMA_READ got %q", got)
	}
	cl.memMu.RLock()
	w := string(guest[4095:4097])
	cl.memMu.RUnlock()
	if w != "xy" {
		t.Fatalf("DMA_WRITE left %q", w)
	}
	// From within a request handler, through the memory the device was
	// given, it fails at once instead of waiting for a reply nobody can
	// read: no message is sent at all.
	table := dev.mem0()
	res := make(chan error, 1)
	dev.mu.Lock()
	dev.onWrite = func(off uint64) error {
		if off == 0x300 {
			res <- table.Read(0x40000, make([]byte, 4))
		}
		return nil
	}
	dev.mu.Unlock()
	if err := cl.WriteRegion(0, 0x300, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if inHandler := <-res; !errors.Is(inHandler, syscall.EDEADLK) {
		t.Fatalf("message DMA inside a handler: %v", inHandler)
	}
	// Client errors come back as errors.
	if err := g.Read(0x40000+2*4096-2, make([]byte, 4)); err == nil {
		t.Fatal("read past a message mapping succeeded")
	}
	if n := conn.DMATimeouts(); n != 0 {
		t.Fatalf("%d DMA timeouts", n)
	}
	if err := cl.Unmap(0x40000, 2*4096); err != nil {
		t.Fatal(err)
	}
	if conn.DMA().Messaged() {
		t.Fatal("still Messaged after the mapping without fd is gone")
	}
}

func TestMessageDMATimeout(t *testing.T) {
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, false, Options{DMATimeout: 50 * time.Millisecond})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		cl.Negotiate(nil)
		var p [DMAMapSize]byte
		DMAMap{Argsz: DMAMapSize, Flags: 3, Addr: 0, Size: 4096}.Encode(p[:])
		cl.Call(CmdDMAMap, p[:], nil)
	}()
	for range 2 {
		if err := conn.Step(); err != nil {
			t.Fatal(err)
		}
	}
	<-sent
	// Nobody steps the connection, so the reply never gets read.
	if err := dev.worker(t).Read(0, make([]byte, 4)); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("unanswered DMA_READ: %v", err)
	}
	if n := conn.DMATimeouts(); n != 1 {
		t.Fatalf("DMATimeouts %d, want 1", n)
	}
}

func TestDirtyLogging(t *testing.T) {
	leakcheck.FDs(t)
	dev := &fakeMigDevice{fakeDevice: newFakeDevice(t)}
	_, cl := negotiated(t, dev)
	mem, err := NewMemory(256 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := cl.Map(0x100000, mem, 0, 128*4096, 3); err != nil {
		t.Fatal(err)
	}
	if err := cl.Map(0x100000+128*4096, mem, 128*4096, 128*4096, 3); err != nil {
		t.Fatal(err)
	}
	for _, m := range []uint32{FeatureGet, FeatureSet} {
		ok, err := cl.ProbeFeature(FeatDMALoggingStart, m)
		if err != nil || ok != (m == FeatureSet) {
			t.Fatalf("probe logging start with %#x: %v %v", m, ok, err)
		}
	}
	_, err = cl.DMALoggingReport(0x100000, 256*4096, 4096)
	wantErrno(t, err, syscall.EINVAL) // not started
	pg, err := cl.DMALoggingStart(4096, []LoggingRange{{IOVA: 0x100000, Length: 256 * 4096}})
	if err != nil || pg != 4096 {
		t.Fatalf("start: %d %v", pg, err)
	}
	_, err = cl.DMALoggingStart(4096, nil)
	wantErrno(t, err, syscall.EBUSY)
	g := dev.mem0()
	g.Write(0x100000+5*4096+10, []byte{1})
	g.Write(0x100000+127*4096+4090, make([]byte, 20)) // pages 127 and 128, two mappings
	g.Read(0x100000+200*4096, make([]byte, 8))        // reads are not logged
	bm, err := cl.DMALoggingReport(0x100000, 256*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 32)
	want[0] = 1 << 5
	want[127/8] |= 1 << (127 % 8)
	want[128/8] |= 1
	if !bytes.Equal(bm, want) {
		t.Fatalf("bitmap %x, want %x", bm, want)
	}
	// Read-and-clear.
	bm, _ = cl.DMALoggingReport(0x100000, 256*4096, 4096)
	if !bytes.Equal(bm, make([]byte, 32)) {
		t.Fatalf("second report %x, want empty", bm)
	}
	// Larger report pages fold several small ones.
	g.Write(0x100000+3*4096, []byte{1})
	bm, _ = cl.DMALoggingReport(0x100000, 256*4096, 4*4096)
	if bm[0] != 1 || len(bm) != 8 {
		t.Fatalf("report at 16 KiB pages: %x", bm)
	}
	_, err = cl.DMALoggingReport(0x100000, 256*4096, 3000)
	wantErrno(t, err, syscall.EINVAL)
	if err := cl.DMALoggingStop(); err != nil {
		t.Fatal(err)
	}

	// The legacy commands share the log.
	if err := cl.DirtyPages(DirtyPagesStart); err != nil {
		t.Fatal(err)
	}
	g.Write(0x100000+2*4096, []byte{1})
	bm, err = cl.DirtyPagesBitmap(0x100000, 128*4096, 4096)
	if err != nil || bm[0] != 4 {
		t.Fatalf("DIRTY_PAGES bitmap %x %v", bm, err)
	}
	g.Write(0x100000+128*4096+9*4096, []byte{1})
	bm, err = cl.UnmapDirty(0x100000+128*4096, 128*4096, 4096)
	if err != nil || bm[1] != 2 {
		t.Fatalf("unmap bitmap %x %v", bm, err)
	}
	if err := cl.DirtyPages(DirtyPagesStop); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, cl.DirtyPages(DirtyPagesStart|DirtyPagesStop), syscall.EINVAL)
	_, err = cl.DirtyPagesBitmap(0x100000, 128*4096, 4096)
	wantErrno(t, err, syscall.EINVAL)
}

var _ device.GuestMemory = (*DMATable)(nil)
