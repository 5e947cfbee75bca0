package device

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
)

// RegionHandler serves accesses to one region (a BAR or a device-specific
// region). offset+len(p) lies within the region; len(p) is any size from 1
// up, and what a handler does with sizes its hardware would not see is its
// own choice (an error wrapping syscall.EINVAL is a fine answer).
type RegionHandler interface {
	ReadRegion(offset uint64, p []byte) error
	WriteRegion(offset uint64, p []byte) error
}

type extraRegion struct {
	info    RegionInfo
	handler RegionHandler
}

// Function is the PCI part of an emulated function, for a device to embed:
// it serves the config region, routes BAR accesses to the handlers the
// device registers, keeps the MSI-X table and serves the PBA, applies
// SET_IRQS and delivers interrupts, and describes it all in Info.
//
// A device builds a ConfigSpace (BARs, capabilities), calls NewFunction,
// registers its BAR handlers, and adds its own Connect, Disconnect and
// Reset around the Function's.
type Function struct {
	Config *ConfigSpace
	IRQs   *IRQs

	handlers [6]RegionHandler
	extra    map[int]extraRegion

	msix      MSIXInfo
	tableMu   sync.Mutex
	table     []byte // the MSI-X table, kept for clients that access it
	irqCounts [NumIRQIndexes]uint32
}

// NewFunction returns a function serving cs, with IRQ indexes sized from
// it: INTx 1 with an interrupt pin, MSI and MSI-X as their capabilities
// offer, ERR 1 with a PCIe capability, REQ 1.
func NewFunction(cs *ConfigSpace) *Function {
	f := &Function{Config: cs, extra: map[int]extraRegion{}, msix: cs.MSIX()}
	if cs.Uint8(CfgIntPin) != 0 {
		f.irqCounts[IRQINTx] = 1
	}
	f.irqCounts[IRQMSI] = uint32(cs.MSIVectors())
	f.irqCounts[IRQMSIX] = uint32(f.msix.Vectors)
	if cs.pcieOff != 0 {
		f.irqCounts[IRQErr] = 1
	}
	f.irqCounts[IRQReq] = 1
	infos := f.irqInfos()
	f.IRQs = NewIRQs(infos)
	f.table = make([]byte, f.msix.TableSize())
	f.resetTable()

	// Keep the IRQ table's view of the configuration current.
	cs.Watch(CfgCommand, 2, func() { f.IRQs.SetINTxDisabled(cs.INTxDisabled()) })
	if cs.msiOff != 0 {
		_, _, _, size := msiLayout(cs.msi)
		cs.Watch(cs.msiOff, size, func() { f.IRQs.SetMSIControl(cs.MSIEnabled(), cs.MSIMaskBits()) })
	}
	if cs.msixOff != 0 {
		cs.Watch(cs.msixOff+MSIXControl, 2, func() {
			f.IRQs.SetMSIXControl(cs.MSIXEnabled(), cs.MSIXFunctionMasked())
		})
	}
	return f
}

// SetBARHandler routes accesses to BAR index to h. Without a handler a BAR
// reads as zeros and ignores writes. The MSI-X table and PBA areas are
// served by the Function and never reach h.
func (f *Function) SetBARHandler(index int, h RegionHandler) error {
	if f.Config.BARInfo(index).Kind == BARNone {
		return fmt.Errorf("BAR %d is not declared", index)
	}
	f.handlers[index] = h
	return nil
}

// AddRegion adds a device-specific region (index RegionMigration or above).
func (f *Function) AddRegion(index int, info RegionInfo, h RegionHandler) error {
	if index < RegionMigration || index >= maxRegions {
		return fmt.Errorf("region %d: device-specific regions are %d-%d", index, RegionMigration, maxRegions-1)
	}
	if _, ok := f.extra[index]; ok {
		return fmt.Errorf("region %d already added", index)
	}
	f.extra[index] = extraRegion{info: info, handler: h}
	return nil
}

// maxRegions is what a client accepts (QEMU refuses more than 100).
const maxRegions = 64

func (f *Function) irqInfos() []IRQInfo {
	infos := make([]IRQInfo, NumIRQIndexes)
	for i, n := range f.irqCounts {
		if n == 0 {
			continue
		}
		// As Linux vfio-pci reports them: INTx is maskable and
		// automasked; MSI and MSI-X vectors are set all at once.
		flags := IRQEventFD
		switch i {
		case IRQINTx:
			flags |= IRQMaskable | IRQAutomasked
		case IRQMSI, IRQMSIX:
			flags |= IRQNoResize
		}
		infos[i] = IRQInfo{Count: n, Flags: flags}
	}
	return infos
}

// Info describes the regions (BARs, config, device-specific ones) and IRQ
// indexes.
func (f *Function) Info() Info {
	n := RegionVGA + 1
	for i := range f.extra {
		n = max(n, i+1)
	}
	regions := make([]RegionInfo, n)
	for i := 0; i < 6; i++ {
		b := f.Config.BARInfo(i)
		if b.Kind != BARNone {
			regions[i] = RegionInfo{Size: b.Size, Flags: RegionRead | RegionWrite}
		}
	}
	regions[RegionConfig] = RegionInfo{Size: uint64(f.Config.Size()), Flags: RegionRead | RegionWrite}
	for i, e := range f.extra {
		regions[i] = e.info
	}
	return Info{Regions: regions, IRQs: f.irqInfos(), Resettable: true, PCI: true}
}

// regionSize returns the size of region index, 0 when absent.
func (f *Function) regionSize(index int) uint64 {
	switch {
	case index >= RegionBAR0 && index <= RegionBAR5:
		return f.Config.BARInfo(index).Size
	case index == RegionConfig:
		return uint64(f.Config.Size())
	}
	if e, ok := f.extra[index]; ok {
		return e.info.Size
	}
	return 0
}

func (f *Function) checkAccess(index int, off uint64, n int) error {
	size := f.regionSize(index)
	if size == 0 {
		return fmt.Errorf("region %d absent: %w", index, syscall.EINVAL)
	}
	if off > size || uint64(n) > size-off {
		return fmt.Errorf("region %d access at %#x size %d beyond %#x: %w", index, off, n, size, syscall.EINVAL)
	}
	return nil
}

// ReadRegion serves a read of any region.
func (f *Function) ReadRegion(index int, off uint64, p []byte) error {
	if err := f.checkAccess(index, off, len(p)); err != nil {
		return err
	}
	if index == RegionConfig {
		return f.Config.Read(off, p)
	}
	if f.msixArea(index, off, len(p), true) {
		f.IRQs.ReadPBA(off-uint64(f.msix.PBAOff), p)
		return nil
	}
	if f.msixArea(index, off, len(p), false) {
		f.tableMu.Lock()
		copy(p, f.table[off-uint64(f.msix.TableOff):])
		f.tableMu.Unlock()
		return nil
	}
	h := f.handler(index)
	if h == nil {
		clear(p)
		return nil
	}
	return h.ReadRegion(off, p)
}

// WriteRegion serves a write to any region.
func (f *Function) WriteRegion(index int, off uint64, p []byte) error {
	if err := f.checkAccess(index, off, len(p)); err != nil {
		return err
	}
	if index == RegionConfig {
		return f.Config.Write(off, p)
	}
	if f.msixArea(index, off, len(p), true) {
		return nil // the PBA is read-only
	}
	if f.msixArea(index, off, len(p), false) {
		f.tableMu.Lock()
		copy(f.table[off-uint64(f.msix.TableOff):], p)
		f.tableMu.Unlock()
		return nil
	}
	h := f.handler(index)
	if h == nil {
		return nil
	}
	return h.WriteRegion(off, p)
}

// msixArea reports whether an access lies within the MSI-X PBA (pba true)
// or table of BAR index. An access that only partly overlaps goes to the
// device's handler.
func (f *Function) msixArea(index int, off uint64, n int, pba bool) bool {
	if f.msix.Vectors == 0 {
		return false
	}
	bar, start, size := f.msix.TableBAR, uint64(f.msix.TableOff), f.msix.TableSize()
	if pba {
		bar, start, size = f.msix.PBABAR, uint64(f.msix.PBAOff), f.msix.PBASize()
	}
	return index == bar && off >= start && off-start+uint64(n) <= size
}

func (f *Function) handler(index int) RegionHandler {
	if index >= RegionBAR0 && index <= RegionBAR5 {
		return f.handlers[index]
	}
	if e, ok := f.extra[index]; ok {
		return e.handler
	}
	return nil
}

// SetIRQs applies a SET_IRQS request.
func (f *Function) SetIRQs(req SetIRQs) error { return f.IRQs.SetIRQs(req) }

// Reset restores the config space and MSI-X table to their initial values
// and clears interrupt state (eventfds stay assigned).
func (f *Function) Reset() error {
	f.IRQs.Reset()
	f.Config.SetInterruptStatus(false)
	f.Config.Reset()
	f.resetTable()
	return nil
}

func (f *Function) resetTable() {
	f.tableMu.Lock()
	defer f.tableMu.Unlock()
	clear(f.table)
	// Every vector starts masked.
	for v := 0; v < f.msix.Vectors; v++ {
		binary.LittleEndian.PutUint32(f.table[v*MSIXEntrySize+MSIXEntryCtrl:], MSIXEntryMaskBit)
	}
}

// SetINTx sets the INTx level, in the status register and towards the
// client.
func (f *Function) SetINTx(level bool) {
	f.Config.SetInterruptStatus(level)
	f.IRQs.SetINTx(level)
}

// IRQMode says which interrupt mechanism the configuration selects.
func (f *Function) IRQMode() IRQMode { return f.Config.IRQMode() }

// Connect does nothing: the function itself never reaches guest memory
// (config space, the MSI-X table and interrupts need none); a device that
// embeds it keeps the memory its datapath uses.
func (f *Function) Connect(GuestMemory) {}

// Disconnect releases the client's eventfds.
func (f *Function) Disconnect() {
	f.IRQs.Close()
}

var _ Device = (*Function)(nil)
