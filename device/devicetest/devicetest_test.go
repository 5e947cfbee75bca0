package devicetest

import (
	"encoding/binary"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"e1000e-vfu/device"
)

// example is a small PCI function: a 4 KiB register BAR that accepts only
// aligned 4-byte accesses, an I/O BAR, and MSI-X in a third BAR.
type example struct {
	*device.Function
	regs regFile
}

// regFile is the register BAR's handler.
type regFile [1024]uint32

func newExample(t testing.TB) *example {
	t.Helper()
	cs := device.NewConfigSpace(device.Identity{VendorID: 0x1AF4, DeviceID: 0x1234, Class: 0xFF0000, InterruptPin: 1})
	for _, err := range []error{
		cs.AddBAR(0, device.BAR{Kind: device.BARMem32, Size: 4096}),
		cs.AddBAR(1, device.BAR{Kind: device.BARIO, Size: 16}),
		cs.AddBAR(2, device.BAR{Kind: device.BARMem64, Size: 8192, Prefetchable: true}),
		cs.AddPM(0x40, device.PMOptions{Version: 3}),
		cs.AddMSI(0x48, device.MSIOptions{Vectors: 1, Addr64: true}),
		cs.AddPCIe(0x60, device.PCIeOptions{Version: 2}),
		cs.AddMSIX(0xA0, 3, 2, 0, 2, 0x1000),
		cs.AddAER(0x100),
		cs.AddDSN(0x140, 7),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	e := &example{Function: device.NewFunction(cs)}
	if err := e.SetBARHandler(0, &e.regs); err != nil {
		t.Fatal(err)
	}
	return e
}

func (r *regFile) ReadRegion(off uint64, p []byte) error {
	if len(p) != 4 || off%4 != 0 {
		return fmt.Errorf("register access of %d bytes at %#x: %w", len(p), off, syscall.EINVAL)
	}
	binary.LittleEndian.PutUint32(p, r[off/4])
	return nil
}

func (r *regFile) WriteRegion(off uint64, p []byte) error {
	if len(p) != 4 || off%4 != 0 {
		return fmt.Errorf("register access of %d bytes at %#x: %w", len(p), off, syscall.EINVAL)
	}
	r[off/4] = binary.LittleEndian.Uint32(p)
	return nil
}

func TestExampleConforms(t *testing.T) {
	Run(t, newExample(t), Options{Accesses: 3000, Seed: 1})
}

// recorder collects a check's complaints; Fatalf ends the check.
type recorder struct{ msgs []string }

type fatal struct{}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(f string, a ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(f, a...))
}
func (r *recorder) Fatalf(f string, a ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(f, a...))
	panic(fatal{})
}

func (r *recorder) run(fn func()) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(fatal); !ok {
				panic(v)
			}
		}
	}()
	fn()
}

// Broken devices, each with one fault the kit must find.

// writableVendor lets a write change the vendor ID.
type writableVendor struct{ *example }

func (w writableVendor) WriteRegion(i int, off uint64, p []byte) error {
	if i == device.RegionConfig && off == 0 && len(p) == 2 {
		return nil // pretend to take it, then report something else
	}
	return w.example.WriteRegion(i, off, p)
}

func (w writableVendor) ReadRegion(i int, off uint64, p []byte) error {
	err := w.example.ReadRegion(i, off, p)
	if i == device.RegionConfig && off == 0 && len(p) == 2 {
		w.regs[1023]++
		p[0] ^= byte(w.regs[1023])
	}
	return err
}

// panicky slices without bounds checks.
type panicky struct{ *example }

func (p panicky) ReadRegion(i int, off uint64, b []byte) error {
	if i == device.RegionBAR0 {
		copy(b, make([]byte, 4096)[off:off+uint64(len(b))])
		return nil
	}
	return p.example.ReadRegion(i, off, b)
}

// noReset forgets to reset config space.
type noReset struct{ *example }

func (noReset) Reset() error { return nil }

// wrongSize announces a BAR size the BAR register does not decode.
type wrongSize struct{ *example }

func (w wrongSize) Info() device.Info {
	info := w.example.Info()
	info.Regions[0].Size = 8192
	return info
}

func TestKitFindsFaults(t *testing.T) {
	cases := []struct {
		name  string
		dev   device.Device
		check func(reporter, device.Device, device.Info)
		want  string
	}{
		{"writable vendor", writableVendor{newExample(t)}, checkHeaderReadOnly, "vendor changed"},
		{"panic", panicky{newExample(t)}, checkOutOfRange, "panic"},
		{"no reset", noReset{newExample(t)}, checkReset, "after reset"},
		{"wrong BAR size", wrongSize{newExample(t)}, checkBARSizing, "sizes to 0x1000"},
		{"random panic", panicky{newExample(t)}, func(r reporter, d device.Device, i device.Info) {
			checkRandom(r, d, i, Options{Accesses: 2000})
		}, "panic"},
	}
	for _, c := range cases {
		r := &recorder{}
		r.run(func() { c.check(r, c.dev, c.dev.Info()) })
		found := false
		for _, m := range r.msgs {
			found = found || strings.Contains(m, c.want)
		}
		if !found {
			t.Errorf("%s: kit reported %q, want a message containing %q", c.name, r.msgs, c.want)
		}
	}
	// And the sound example draws no complaint from the same checks.
	r := &recorder{}
	e := newExample(t)
	for _, check := range []func(reporter, device.Device, device.Info){checkHeaderReadOnly, checkCapabilities, checkBARSizing, checkOutOfRange, checkReset} {
		r.run(func() { check(r, e, e.Info()) })
	}
	if len(r.msgs) != 0 {
		t.Errorf("sound example: %q", r.msgs)
	}
}

func TestInfoChecks(t *testing.T) {
	bad := []device.Info{
		{PCI: true, Regions: make([]device.RegionInfo, 3)},
		{PCI: true, Regions: []device.RegionInfo{{Size: 3000, Flags: device.RegionRead}, {}, {}, {}, {}, {}, {}, {Size: 256, Flags: device.RegionRead}}},
		{PCI: true, Regions: []device.RegionInfo{{}, {}, {}, {}, {}, {}, {}, {Size: 128, Flags: device.RegionRead}}},
		{PCI: true, Regions: []device.RegionInfo{{}, {}, {}, {}, {}, {}, {}, {Size: 256, Flags: device.RegionRead}},
			IRQs: []device.IRQInfo{{Count: 2, Flags: device.IRQEventFD}}},
		{PCI: true, Regions: []device.RegionInfo{{Size: 4096, Flags: device.RegionRead | device.RegionMMap}, {}, {}, {}, {}, {}, {}, {Size: 256, Flags: device.RegionRead}}},
	}
	for i, info := range bad {
		r := &recorder{}
		r.run(func() { checkInfo(r, info) })
		if len(r.msgs) == 0 {
			t.Errorf("info %d: no complaint", i)
		}
	}
}
