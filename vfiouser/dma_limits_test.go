package vfiouser

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"e1000e-vfu/device"
)

// The server caps DMA maps at a quarter of the kernel's vm.max_map_count,
// read at start, and below QEMU's 65535.
func TestDMAMapCapFollowsMaxMapCount(t *testing.T) {
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
// a map fits again once one is unmapped.
func TestDMAMapsBeyondTheCapRefused(t *testing.T) {
	checkFDs(t)
	const limit, maxMaps = 40, 10
	dev := newFakeDevice(t)
	_, _, cl := pair(t, dev, true, Options{vmMaxMapCount: limit})
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
}
