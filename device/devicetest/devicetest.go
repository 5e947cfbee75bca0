// Package devicetest checks that a device.Device behaves as a PCI function
// served over vfio-user must, whatever it emulates: its description is
// consistent, read-only configuration bits hold, BARs size, bad accesses
// fail cleanly instead of panicking, and a reset restores configuration
// space. A device runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		devicetest.Run(t, newMyDevice(), devicetest.Options{})
//	}
package devicetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand"
	"testing"

	"e1000e-vfu/device"
)

// Options tune Run.
type Options struct {
	// Accesses is the number of random region accesses; 0 means 2000.
	Accesses int
	// Seed seeds the random accesses; runs with the same seed repeat.
	Seed int64
	// SkipRandom lists region indexes the random accesses leave alone
	// (regions whose writes start long work, for instance).
	SkipRandom []int
}

// Limits a client enforces (QEMU refuses more regions or IRQ indexes).
const (
	maxRegions    = 100
	maxIRQIndexes = 50
)

// NullMemory is guest memory with nothing mapped: every access fails. Run
// connects the device to it, so DMA a random access provokes is refused.
type NullMemory struct{}

var errUnmapped = errors.New("devicetest: guest memory not mapped")

// Read implements device.GuestMemory.
func (NullMemory) Read(addr uint64, p []byte) error { return errUnmapped }

// Write implements device.GuestMemory.
func (NullMemory) Write(addr uint64, p []byte) error { return errUnmapped }

// Run checks d. It connects d to NullMemory, resets it between checks and
// disconnects it at the end.
func Run(t *testing.T, d device.Device, o Options) {
	t.Helper()
	if o.Accesses == 0 {
		o.Accesses = 2000
	}
	d.Connect(NullMemory{})
	defer d.Disconnect()
	info := d.Info()
	t.Run("Info", func(t *testing.T) { checkInfo(t, info) })
	if t.Failed() || !info.PCI {
		return
	}
	step := func(name string, fn func(reporter, device.Device, device.Info)) {
		t.Run(name, func(t *testing.T) {
			if err := call(func() error { return d.Reset() }); err != nil {
				t.Fatalf("reset: %v", err)
			}
			fn(t, d, info)
		})
	}
	step("HeaderReadOnly", checkHeaderReadOnly)
	step("CapabilitiesReadOnly", checkCapabilities)
	step("BARSizing", checkBARSizing)
	step("OutOfRange", checkOutOfRange)
	step("ResetRestoresConfig", checkReset)
	step("RandomAccesses", func(t reporter, d device.Device, info device.Info) {
		checkRandom(t, d, info, o)
	})
}

// panicError is a panic of the device under test, caught.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("panic: %v", p.v) }

// call runs fn, turning a panic into a panicError.
func call(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return fn()
}

func isPanic(err error) bool {
	var p panicError
	return errors.As(err, &p)
}

// reporter is the part of testing.TB the checks use, so the kit's own tests
// can watch them fail.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

func checkInfo(t reporter, info device.Info) {
	if len(info.Regions) > maxRegions {
		t.Errorf("%d regions, a client accepts at most %d", len(info.Regions), maxRegions)
	}
	if len(info.IRQs) > maxIRQIndexes {
		t.Errorf("%d IRQ indexes, a client accepts at most %d", len(info.IRQs), maxIRQIndexes)
	}
	if !info.PCI {
		return
	}
	if len(info.Regions) <= device.RegionConfig {
		t.Fatalf("PCI device with %d regions has no config region", len(info.Regions))
	}
	cfg := info.Regions[device.RegionConfig]
	if cfg.Size < device.ConfigSizeLegacy || cfg.Size > device.ConfigSize {
		t.Errorf("config region size %#x, want 256-4096", cfg.Size)
	}
	for i, r := range info.Regions {
		if r.Size == 0 {
			continue
		}
		if r.Flags&(device.RegionRead|device.RegionWrite) == 0 {
			t.Errorf("region %d of size %#x is neither readable nor writable", i, r.Size)
		}
		if r.Flags&device.RegionMMap != 0 && r.MMapFile == nil {
			t.Errorf("region %d is mappable without a file", i)
		}
		for _, a := range r.MMapAreas {
			if a.Offset > r.Size || a.Size > r.Size-a.Offset {
				t.Errorf("region %d: mmap area %+v beyond size %#x", i, a, r.Size)
			}
		}
		if i <= device.RegionBAR5 && bits.OnesCount64(r.Size) != 1 {
			t.Errorf("BAR %d size %#x is not a power of two", i, r.Size)
		}
	}
	limits := map[int]uint32{device.IRQINTx: 1, device.IRQMSI: 32, device.IRQMSIX: 2048, device.IRQErr: 1, device.IRQReq: 1}
	for i, irq := range info.IRQs {
		if lim, ok := limits[i]; ok && irq.Count > lim {
			t.Errorf("IRQ index %d has %d vectors, at most %d", i, irq.Count, lim)
		}
		if irq.Count > 0 && irq.Flags&device.IRQEventFD == 0 {
			t.Errorf("IRQ index %d does not take eventfds", i)
		}
	}
}

func readCfg(t reporter, d device.Device, off, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := call(func() error { return d.ReadRegion(device.RegionConfig, uint64(off), p) }); err != nil {
		t.Fatalf("config read at %#x size %d: %v", off, n, err)
	}
	return p
}

func writeCfg(t reporter, d device.Device, off int, p []byte) {
	t.Helper()
	if err := call(func() error { return d.WriteRegion(device.RegionConfig, uint64(off), p) }); err != nil {
		t.Fatalf("config write at %#x size %d: %v", off, len(p), err)
	}
}

func ones(n int) []byte { return bytes.Repeat([]byte{0xFF}, n) }

// checkHeaderReadOnly writes all ones over each read-only header register
// and expects it unchanged.
func checkHeaderReadOnly(t reporter, d device.Device, _ device.Info) {
	regs := []struct {
		name    string
		off, sz int
	}{
		{"vendor", device.CfgVendorID, 2},
		{"device", device.CfgDeviceID, 2},
		{"revision+class", device.CfgRevision, 4},
		{"header type", device.CfgHeaderType, 1},
		{"subsystem", device.CfgSubsysVendor, 4},
		{"capability pointer", device.CfgCapPtr, 1},
		{"interrupt pin", device.CfgIntPin, 1},
	}
	for _, r := range regs {
		before := readCfg(t, d, r.off, r.sz)
		writeCfg(t, d, r.off, ones(r.sz))
		if after := readCfg(t, d, r.off, r.sz); !bytes.Equal(before, after) {
			t.Errorf("%s changed from %x to %x", r.name, before, after)
		}
	}
	if v := binary.LittleEndian.Uint16(readCfg(t, d, device.CfgVendorID, 2)); v == 0 || v == 0xFFFF {
		t.Errorf("vendor ID %#x", v)
	}
	if ht := readCfg(t, d, device.CfgHeaderType, 1)[0] & 0x7F; ht != 0 {
		t.Errorf("header type %d, want 0", ht)
	}
	st := binary.LittleEndian.Uint16(readCfg(t, d, device.CfgStatus, 2))
	writeCfg(t, d, device.CfgStatus, ones(2))
	st2 := binary.LittleEndian.Uint16(readCfg(t, d, device.CfgStatus, 2))
	if (st^st2)&device.StatusCapList != 0 {
		t.Errorf("status capabilities bit changed: %#x -> %#x", st, st2)
	}
	// The ROM BAR: absent here means it reads zero even after sizing.
	writeCfg(t, d, device.CfgROM, ones(4))
	if rom := binary.LittleEndian.Uint32(readCfg(t, d, device.CfgROM, 4)); rom&1 != 0 {
		t.Errorf("ROM enable bit set by an all-ones write: %#x", rom)
	}
}

// checkCapabilities walks both capability lists (bounded), checks each entry
// lies in the space, and that all ones written over an ID and its link
// change neither.
func checkCapabilities(t reporter, d device.Device, info device.Info) {
	cfgSize := int(info.Regions[device.RegionConfig].Size)
	seen := map[int]bool{}
	st := binary.LittleEndian.Uint16(readCfg(t, d, device.CfgStatus, 2))
	off := 0
	if st&device.StatusCapList != 0 {
		off = int(readCfg(t, d, device.CfgCapPtr, 1)[0])
	}
	for n := 0; off != 0; n++ {
		if n >= 48 || off < 0x40 || off > 0xFC || off%4 != 0 || seen[off] {
			t.Fatalf("bad capability pointer %#x after %d entries", off, n)
		}
		seen[off] = true
		before := readCfg(t, d, off, 2)
		writeCfg(t, d, off, ones(2))
		if after := readCfg(t, d, off, 2); !bytes.Equal(before, after) {
			t.Errorf("capability at %#x: ID/next changed %x -> %x", off, before, after)
		}
		off = int(before[1])
	}
	if cfgSize <= device.ConfigSizeLegacy {
		return
	}
	off = 0x100
	for n := 0; off != 0; n++ {
		if n >= 960 || off < 0x100 || off > cfgSize-4 || off%4 != 0 || seen[off] {
			t.Fatalf("bad extended capability pointer %#x after %d entries", off, n)
		}
		seen[off] = true
		before := readCfg(t, d, off, 4)
		writeCfg(t, d, off, ones(4))
		if after := readCfg(t, d, off, 4); !bytes.Equal(before, after) {
			t.Errorf("extended capability at %#x: header changed %x -> %x", off, before, after)
		}
		h := binary.LittleEndian.Uint32(before)
		if h == 0 {
			break
		}
		off = int(h >> 20)
	}
}

// checkBARSizing sizes every BAR the way firmware does and compares the
// answer with the region size in Info.
func checkBARSizing(t reporter, d device.Device, info device.Info) {
	for i := 0; i < 6 && i < len(info.Regions); i++ {
		reg := device.CfgBAR0 + 4*i
		orig := readCfg(t, d, reg, 4)
		writeCfg(t, d, reg, ones(4))
		v := binary.LittleEndian.Uint32(readCfg(t, d, reg, 4))
		size := info.Regions[i].Size
		var got uint64
		switch {
		case v == 0:
			got = 0
		case v&1 == 1: // I/O
			got = uint64(^(v &^ 3) + 1)
		case v&0x6 == 0x4: // 64-bit memory: the upper half is the next BAR
			if i == 5 {
				t.Fatalf("BAR 5 claims 64 bits")
			}
			origHi := readCfg(t, d, reg+4, 4)
			writeCfg(t, d, reg+4, ones(4))
			hi := binary.LittleEndian.Uint32(readCfg(t, d, reg+4, 4))
			got = ^(uint64(hi)<<32 | uint64(v&^0xF)) + 1
			writeCfg(t, d, reg+4, origHi)
			if i+1 < len(info.Regions) && info.Regions[i+1].Size != 0 {
				t.Errorf("BAR %d is the upper half of BAR %d but has a region", i+1, i)
			}
			writeCfg(t, d, reg, orig)
			if got != size {
				t.Errorf("BAR %d sizes to %#x, region size %#x", i, got, size)
			}
			i++
			continue
		default:
			got = uint64(^(v &^ 0xF) + 1)
		}
		// Type bits read the same before and after.
		lowMask := uint32(0xF)
		if v&1 == 1 {
			lowMask = 0x3
		}
		if o := binary.LittleEndian.Uint32(orig); o&lowMask != v&lowMask {
			t.Errorf("BAR %d type bits changed: %#x -> %#x", i, o&lowMask, v&lowMask)
		}
		writeCfg(t, d, reg, orig)
		if got != size {
			t.Errorf("BAR %d sizes to %#x, region size %#x", i, got, size)
		}
	}
}

// checkOutOfRange sends accesses beyond every region and to absent ones:
// each must return an error, none may panic.
func checkOutOfRange(t reporter, d device.Device, info device.Info) {
	type access struct {
		idx int
		off uint64
		n   int
	}
	var accs []access
	for i, r := range info.Regions {
		if r.Size == 0 {
			accs = append(accs, access{i, 0, 4})
			continue
		}
		accs = append(accs,
			access{i, r.Size, 1},
			access{i, r.Size - 1, 2},
			access{i, r.Size, 0xFFFF},
			access{i, 1<<64 - 1, 4},
			access{i, 1 << 63, 8})
	}
	accs = append(accs, access{len(info.Regions), 0, 4}, access{-1, 0, 4}, access{1 << 30, 0, 4})
	for _, a := range accs {
		p := make([]byte, a.n)
		if err := call(func() error { return d.ReadRegion(a.idx, a.off, p) }); err == nil {
			t.Errorf("read of region %d at %#x size %d succeeded", a.idx, a.off, a.n)
		} else if isPanic(err) {
			t.Errorf("read of region %d at %#x size %d: %v", a.idx, a.off, a.n, err)
		}
		if err := call(func() error { return d.WriteRegion(a.idx, a.off, p) }); err == nil {
			t.Errorf("write of region %d at %#x size %d succeeded", a.idx, a.off, a.n)
		} else if isPanic(err) {
			t.Errorf("write of region %d at %#x size %d: %v", a.idx, a.off, a.n, err)
		}
	}
}

// checkReset writes all ones over the whole config space (every writable
// bit set, every write-1-to-clear bit cleared) and expects a reset to bring
// back the exact bytes read after the previous reset.
func checkReset(t reporter, d device.Device, info device.Info) {
	size := int(info.Regions[device.RegionConfig].Size)
	before := readCfg(t, d, 0, size)
	writeCfg(t, d, 0, ones(size))
	if err := call(func() error { return d.Reset() }); err != nil {
		t.Fatalf("reset: %v", err)
	}
	after := readCfg(t, d, 0, size)
	for i := range before {
		if before[i] != after[i] {
			t.Errorf("config byte %#x: %#02x after reset, %#02x before", i, after[i], before[i])
		}
	}
}

// checkRandom makes random accesses, mostly inside regions, of sizes 1-16;
// none may panic.
func checkRandom(t reporter, d device.Device, info device.Info, o Options) {
	skip := map[int]bool{}
	for _, i := range o.SkipRandom {
		skip[i] = true
	}
	rng := rand.New(rand.NewSource(o.Seed))
	buf := make([]byte, 16)
	for k := 0; k < o.Accesses; k++ {
		idx := rng.Intn(len(info.Regions) + 1)
		if skip[idx] {
			continue
		}
		var size uint64
		if idx < len(info.Regions) {
			size = info.Regions[idx].Size
		}
		n := []int{1, 2, 4, 8, 3, 16}[rng.Intn(6)]
		var off uint64
		if size > 0 {
			off = rng.Uint64() % size
		}
		if rng.Intn(10) == 0 {
			off = rng.Uint64()
		}
		p := buf[:n]
		write := rng.Intn(2) == 0
		if write {
			rng.Read(p)
		}
		err := call(func() error {
			if write {
				return d.WriteRegion(idx, off, p)
			}
			return d.ReadRegion(idx, off, p)
		})
		if isPanic(err) {
			t.Fatalf("access %d: region %d at %#x size %d write %v: %v", k, idx, off, n, write, err)
		}
		inside := size != 0 && off <= size && uint64(n) <= size-off
		if !inside && err == nil {
			t.Errorf("access %d: region %d at %#x size %d beyond %#x succeeded", k, idx, off, n, size)
		}
	}
}
