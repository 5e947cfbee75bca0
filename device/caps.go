package device

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sort"
)

// Capability IDs.
const (
	CapIDPM    = 0x01
	CapIDMSI   = 0x05
	CapIDPCIe  = 0x10
	CapIDMSIX  = 0x11
	ExtCapAER  = 0x0001
	ExtCapDSN  = 0x0003
	extCapBase = 0x100
)

// Capability is one entry of the standard or extended capability list.
type Capability struct {
	ID       uint16
	Offset   int
	Size     int
	Extended bool
}

// Capabilities returns the capabilities in list order: the standard ones
// in the order they were added, then the extended ones by offset.
func (c *ConfigSpace) Capabilities() []Capability {
	return append([]Capability(nil), c.caps...)
}

// addCap reserves [off, off+size) for a capability, then relinks the lists.
// The standard list follows the order of the Add calls, not the offsets:
// a device's chain need not ascend (the 82574L's runs PM 0xC8, MSI 0xD0,
// PCIe 0xE0, then MSI-X 0xA0), and drivers and lspci show it in that
// order.
func (c *ConfigSpace) addCap(cp Capability) error {
	if cp.Offset%4 != 0 {
		return fmt.Errorf("capability %#x at %#x: offset not dword aligned", cp.ID, cp.Offset)
	}
	lo, hi := 0x40, ConfigSizeLegacy
	if cp.Extended {
		lo, hi = extCapBase, ConfigSize
	}
	if cp.Offset < lo || cp.Offset+cp.Size > hi {
		return fmt.Errorf("capability %#x at %#x size %#x outside %#x-%#x", cp.ID, cp.Offset, cp.Size, lo, hi)
	}
	for _, o := range c.caps {
		if overlaps(cp.Offset, cp.Offset+cp.Size, o.Offset, o.Size) {
			return fmt.Errorf("capability %#x at %#x overlaps capability %#x at %#x", cp.ID, cp.Offset, o.ID, o.Offset)
		}
	}
	c.caps = append(c.caps, cp)
	// Standard before extended. Standard ones keep the order of addition;
	// extended ones ascend, as their list must start at 0x100.
	sort.SliceStable(c.caps, func(i, j int) bool {
		a, b := c.caps[i], c.caps[j]
		if a.Extended != b.Extended {
			return !a.Extended
		}
		return a.Extended && a.Offset < b.Offset
	})
	c.relink()
	return nil
}

// relink writes the list pointers: the header's capability pointer and
// each standard capability's next byte, and each extended header's next
// field. Extended capabilities must start at 0x100; when none sits there, an
// empty header (ID 0) at 0x100 points at the first one.
func (c *ConfigSpace) relink() {
	var std, ext []Capability
	for _, cp := range c.caps {
		if cp.Extended {
			ext = append(ext, cp)
		} else {
			std = append(std, cp)
		}
	}
	if len(std) > 0 {
		c.initByte(CfgCapPtr, byte(std[0].Offset))
		st := binary.LittleEndian.Uint16(c.reset[CfgStatus:]) | StatusCapList
		c.init16(CfgStatus, st)
	}
	for i, cp := range std {
		next := 0
		if i+1 < len(std) {
			next = std[i+1].Offset
		}
		c.initByte(cp.Offset, byte(cp.ID))
		c.initByte(cp.Offset+1, byte(next))
	}
	if len(ext) > 0 && ext[0].Offset != extCapBase {
		c.init32(extCapBase, uint32(ext[0].Offset)<<20)
	}
	for i, cp := range ext {
		next := 0
		if i+1 < len(ext) {
			next = ext[i+1].Offset
		}
		ver := uint32(binary.LittleEndian.Uint32(c.reset[cp.Offset:])>>16) & 0xF
		c.init32(cp.Offset, uint32(cp.ID)|ver<<16|uint32(next)<<20)
	}
}

func (c *ConfigSpace) addFixup(off, size int, fn func(old []byte)) error {
	if len(c.fixups) >= maxFixups || size > 8 {
		return fmt.Errorf("too many register fixups")
	}
	c.fixups = append(c.fixups, fixup{off: off, size: size, fn: fn})
	return nil
}

// Power management capability registers (offsets in the capability).
const (
	PMCap         = 2
	PMCtrl        = 4
	pmSize        = 8
	pmVersionMask = 0x7
	pmDSI         = 1 << 5
	PMStateMask   = 0x3
	pmNoSoftReset = 1 << 3
)

// PMOptions shape a power management capability.
type PMOptions struct {
	// Version is the PMC version field: 2 for PCI PM 1.1, 3 for 1.2.
	Version int
	// DSI (device-specific initialization) tells the OS the function
	// needs more than the class driver's setup after D0 entry.
	DSI bool
}

// AddPM adds a power management capability supporting D0 and D3hot only,
// with No_Soft_Reset set (a D3hot→D0 transition keeps the function's
// state) and no PME. Writes of the unsupported states D1 and D2 are
// discarded, as the specification asks.
func (c *ConfigSpace) AddPM(off int, o PMOptions) error {
	if o.Version < 1 || o.Version > pmVersionMask {
		return fmt.Errorf("PM capability version %d", o.Version)
	}
	if err := c.addCap(Capability{ID: CapIDPM, Offset: off, Size: pmSize}); err != nil {
		return err
	}
	pmc := uint16(o.Version)
	if o.DSI {
		pmc |= pmDSI
	}
	c.init16(off+PMCap, pmc)
	c.init16(off+PMCtrl, pmNoSoftReset)
	c.setMask16(off+PMCtrl, PMStateMask)
	return c.addFixup(off+PMCtrl, 2, func(old []byte) {
		v := c.get16(off + PMCtrl)
		if s := v & PMStateMask; s == 1 || s == 2 {
			c.put16(off+PMCtrl, v&^PMStateMask|binary.LittleEndian.Uint16(old)&PMStateMask)
		}
	})
}

// PowerState returns the PM capability's power state (0 = D0, 3 = D3hot), or
// 0 without the capability.
func (c *ConfigSpace) PowerState() int {
	for _, cp := range c.caps {
		if !cp.Extended && cp.ID == CapIDPM {
			return int(c.Uint16(cp.Offset+PMCtrl) & PMStateMask)
		}
	}
	return 0
}

// MSIOptions shape an MSI capability.
type MSIOptions struct {
	Vectors       int  // 1, 2, 4, 8, 16 or 32
	Addr64        bool // 64-bit message address
	PerVectorMask bool // mask and pending registers
}

// MSI capability registers (offsets in the capability).
const (
	MSIControl       = 2
	MSIAddrLo        = 4
	MSIFlagEnable    = 1 << 0
	msiFlagMMCShift  = 1
	msiFlagMMEShift  = 4
	msiFlagMMEMask   = 0x7 << msiFlagMMEShift
	msiFlagAddr64    = 1 << 7
	msiFlagMaskable  = 1 << 8
	msiFlagsWritable = MSIFlagEnable | msiFlagMMEMask
)

// msiLayout gives the offsets, within the capability, of data, mask and
// pending registers and the capability's size.
func msiLayout(o MSIOptions) (data, mask, pending, size int) {
	data = 8
	if o.Addr64 {
		data = 12
	}
	size = data + 2
	if o.PerVectorMask {
		mask = data + 4
		pending = mask + 4
		size = pending + 4
	}
	return data, mask, pending, size
}

// AddMSI adds an MSI capability. The enable bit, the multiple message enable
// field (clamped to the vectors offered), the address, the data and, with
// per-vector masking, the mask bits are writable.
func (c *ConfigSpace) AddMSI(off int, o MSIOptions) error {
	if o.Vectors < 1 || o.Vectors > 32 || bits.OnesCount(uint(o.Vectors)) != 1 {
		return fmt.Errorf("MSI vectors %d: want a power of two in 1-32", o.Vectors)
	}
	if c.msiOff != 0 {
		return fmt.Errorf("MSI capability already at %#x", c.msiOff)
	}
	data, mask, _, size := msiLayout(o)
	if err := c.addCap(Capability{ID: CapIDMSI, Offset: off, Size: size}); err != nil {
		return err
	}
	mmc := uint16(bits.TrailingZeros(uint(o.Vectors)))
	flags := mmc << msiFlagMMCShift
	if o.Addr64 {
		flags |= msiFlagAddr64
	}
	if o.PerVectorMask {
		flags |= msiFlagMaskable
	}
	c.init16(off+MSIControl, flags)
	c.setMask16(off+MSIControl, msiFlagsWritable)
	c.setMask32(off+MSIAddrLo, 0xFFFFFFFC) // dword-aligned address
	if o.Addr64 {
		c.setMask32(off+MSIAddrLo+4, 0xFFFFFFFF)
	}
	c.setMask16(off+data, 0xFFFF)
	if o.PerVectorMask {
		c.setMask32(off+mask, uint32(uint64(1)<<o.Vectors-1))
	}
	c.msiOff = off
	c.msi = o
	return c.addFixup(off+MSIControl, 2, func([]byte) {
		v := c.get16(off + MSIControl)
		if (v&msiFlagMMEMask)>>msiFlagMMEShift > mmc {
			c.put16(off+MSIControl, v&^msiFlagMMEMask|mmc<<msiFlagMMEShift)
		}
	})
}

// MSIEnabled reports the MSI enable bit (false without the capability).
func (c *ConfigSpace) MSIEnabled() bool {
	return c.msiOff != 0 && c.Uint16(c.msiOff+MSIControl)&MSIFlagEnable != 0
}

// MSIMaskBits returns the MSI per-vector mask register, 0 without one.
func (c *ConfigSpace) MSIMaskBits() uint32 {
	if c.msiOff == 0 || !c.msi.PerVectorMask {
		return 0
	}
	_, mask, _, _ := msiLayout(c.msi)
	return c.Uint32(c.msiOff + mask)
}

// MSIVectors is the number of MSI vectors offered, 0 without MSI.
func (c *ConfigSpace) MSIVectors() int {
	if c.msiOff == 0 {
		return 0
	}
	return c.msi.Vectors
}

// PCIe capability registers (offsets in the capability).
const (
	PCIeFlags     = 0x02
	PCIeDevCap    = 0x04
	PCIeDevCtl    = 0x08
	PCIeDevSta    = 0x0A
	PCIeLinkCap   = 0x0C
	PCIeLinkCtl   = 0x10
	PCIeLinkSta   = 0x12
	PCIeDevCap2   = 0x24
	PCIeDevCtl2   = 0x28
	PCIeLinkCap2  = 0x2C
	PCIeLinkCtl2  = 0x30
	pcieV1Size    = 0x14
	pcieV2Size    = 0x3C
	pcieEndpoint  = 0 << 4
	pcieDevCtlW   = 0x000F | 0x0010 | 0x00E0 | 0x0100 | 0x0800 | 0x7000 // error reporting, relaxed ordering, payload, ext tag, no snoop, read request
	pcieDevCtlRst = 0x0010 | 0x0800 | 0x2000                            // relaxed ordering, no snoop, 512-byte read requests
	pcieDevStaW1C = 0x000F                                              // error detected bits
	pcieLinkCtlW  = 0x0003 | 0x0008 | 0x0040 | 0x0080                   // ASPM, RCB, common clock, extended synch
	pcieDevCtl2W  = 0x0010                                              // completion timeout disable
	pcieDevCap2CT = 0x0010                                              // completion timeout disable supported
	pcieLinkCtl2W = 0x000F                                              // target link speed
)

// PCIeOptions shape a PCI Express endpoint capability.
type PCIeOptions struct {
	Version int    // 1 (20 bytes, fits at 0xE0) or 2 (60 bytes)
	DevCap  uint32 // device capabilities: max payload, role-based error reporting, …
	// LinkCap and LinkStatus describe the link; zero means 2.5 GT/s x1.
	LinkCap    uint32
	LinkStatus uint16
}

// AddPCIe adds a PCI Express endpoint capability and makes the space 4 KiB.
// Device and link capabilities and link status are read-only; device
// control's error-reporting, ordering, payload and read-request fields are
// writable; device status error bits are write-1-to-clear.
func (c *ConfigSpace) AddPCIe(off int, o PCIeOptions) error {
	size := pcieV1Size
	switch o.Version {
	case 1:
	case 2:
		size = pcieV2Size
	default:
		return fmt.Errorf("PCIe capability version %d: want 1 or 2", o.Version)
	}
	if c.pcieOff != 0 {
		return fmt.Errorf("PCIe capability already at %#x", c.pcieOff)
	}
	if err := c.addCap(Capability{ID: CapIDPCIe, Offset: off, Size: size}); err != nil {
		return err
	}
	if o.LinkCap == 0 {
		o.LinkCap = 1 | 1<<4 // 2.5 GT/s, x1
	}
	if o.LinkStatus == 0 {
		o.LinkStatus = uint16(o.LinkCap & 0x3FF) // current speed and width as offered
	}
	c.init16(off+PCIeFlags, uint16(o.Version)|pcieEndpoint)
	c.init32(off+PCIeDevCap, o.DevCap)
	c.init16(off+PCIeDevCtl, pcieDevCtlRst)
	c.setMask16(off+PCIeDevCtl, pcieDevCtlW)
	c.setW1C16(off+PCIeDevSta, pcieDevStaW1C)
	c.init32(off+PCIeLinkCap, o.LinkCap)
	c.setMask16(off+PCIeLinkCtl, pcieLinkCtlW)
	c.init16(off+PCIeLinkSta, o.LinkStatus)
	if o.Version == 2 {
		c.init32(off+PCIeDevCap2, pcieDevCap2CT)
		c.setMask16(off+PCIeDevCtl2, pcieDevCtl2W)
		speeds := uint32(1)<<(o.LinkCap&0xF+1) - 2 // every speed up to the maximum
		c.init32(off+PCIeLinkCap2, speeds)
		c.init16(off+PCIeLinkCtl2, uint16(o.LinkCap&0xF))
		c.setMask16(off+PCIeLinkCtl2, pcieLinkCtl2W)
	}
	c.pcieOff = off
	c.size = ConfigSize
	return nil
}

// MSI-X capability registers (offsets in the capability).
const (
	MSIXControl      = 2
	MSIXTable        = 4
	MSIXPBA          = 8
	msixSize         = 12
	MSIXFlagEnable   = 1 << 15
	MSIXFlagMaskAll  = 1 << 14
	msixMaxVectors   = 2048
	MSIXEntrySize    = 16
	MSIXEntryCtrl    = 12 // vector control word within a table entry
	MSIXEntryMaskBit = 1
)

// MSIXInfo is where an MSI-X capability puts its table and PBA.
type MSIXInfo struct {
	Vectors  int
	TableBAR int
	TableOff uint32
	PBABAR   int
	PBAOff   uint32
}

// TableSize is the table's size in bytes.
func (m MSIXInfo) TableSize() uint64 { return uint64(m.Vectors) * MSIXEntrySize }

// PBASize is the pending bit array's size in bytes (whole qwords).
func (m MSIXInfo) PBASize() uint64 { return uint64(m.Vectors+63) / 64 * 8 }

// AddMSIX adds an MSI-X capability with vectors entries whose table and
// pending bit array live in the given BARs at the given offsets (8-byte
// aligned). The BARs must be declared first and hold the structures. Only
// the enable and function-mask bits are writable.
func (c *ConfigSpace) AddMSIX(off, vectors, tableBAR int, tableOff uint32, pbaBAR int, pbaOff uint32) error {
	m := MSIXInfo{Vectors: vectors, TableBAR: tableBAR, TableOff: tableOff, PBABAR: pbaBAR, PBAOff: pbaOff}
	if vectors < 1 || vectors > msixMaxVectors {
		return fmt.Errorf("MSI-X vectors %d out of 1-%d", vectors, msixMaxVectors)
	}
	if c.msixOff != 0 {
		return fmt.Errorf("MSI-X capability already at %#x", c.msixOff)
	}
	if err := c.checkInBAR("MSI-X table", tableBAR, tableOff, m.TableSize()); err != nil {
		return err
	}
	if err := c.checkInBAR("MSI-X PBA", pbaBAR, pbaOff, m.PBASize()); err != nil {
		return err
	}
	if tableBAR == pbaBAR && overlaps(int(tableOff), int(uint64(tableOff)+m.TableSize()), int(pbaOff), int(m.PBASize())) {
		return fmt.Errorf("MSI-X table and PBA overlap")
	}
	if err := c.addCap(Capability{ID: CapIDMSIX, Offset: off, Size: msixSize}); err != nil {
		return err
	}
	c.init16(off+MSIXControl, uint16(vectors-1))
	c.setMask16(off+MSIXControl, MSIXFlagEnable|MSIXFlagMaskAll)
	c.init32(off+MSIXTable, tableOff|uint32(tableBAR))
	c.init32(off+MSIXPBA, pbaOff|uint32(pbaBAR))
	c.msixOff = off
	c.msix = m
	return nil
}

func (c *ConfigSpace) checkInBAR(what string, bar int, off uint32, size uint64) error {
	if bar < 0 || bar > 5 {
		return fmt.Errorf("%s: BAR %d out of 0-5", what, bar)
	}
	b := c.bars[bar]
	if b.Kind != BARMem32 && b.Kind != BARMem64 {
		return fmt.Errorf("%s: BAR %d is not a memory BAR", what, bar)
	}
	if off%8 != 0 {
		return fmt.Errorf("%s: offset %#x not 8-byte aligned", what, off)
	}
	if uint64(off)+size > b.Size {
		return fmt.Errorf("%s: %#x+%#x beyond BAR %d size %#x", what, off, size, bar, b.Size)
	}
	return nil
}

// MSIX returns the MSI-X layout; Vectors is 0 without the capability.
func (c *ConfigSpace) MSIX() MSIXInfo { return c.msix }

// MSIXEnabled reports the MSI-X enable bit.
func (c *ConfigSpace) MSIXEnabled() bool {
	return c.msixOff != 0 && c.Uint16(c.msixOff+MSIXControl)&MSIXFlagEnable != 0
}

// MSIXFunctionMasked reports the MSI-X function mask bit.
func (c *ConfigSpace) MSIXFunctionMasked() bool {
	return c.msixOff != 0 && c.Uint16(c.msixOff+MSIXControl)&MSIXFlagMaskAll != 0
}

// AER extended capability registers (offsets in the capability).
const (
	AERUncorStatus = 0x04
	AERUncorMask   = 0x08
	AERUncorSev    = 0x0C
	AERCorStatus   = 0x10
	AERCorMask     = 0x14
	AERCapCtl      = 0x18
	AERHeaderLog   = 0x1C
	aerSize        = 0x2C // an endpoint's structure, without root port registers
	// Uncorrectable errors an endpoint reports: data link protocol,
	// surprise down, poisoned TLP, flow control, completion timeout and
	// abort, unexpected completion, receiver overflow, malformed TLP, ECRC,
	// unsupported request.
	aerUncorSupported = 0x0010 | 0x0020 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x40000 | 0x80000 | 0x100000
	// Default severity: data link protocol, surprise down, receiver
	// overflow and malformed TLP are fatal.
	aerUncorSevDefault = 0x0010 | 0x0020 | 0x20000 | 0x40000
	// Correctable errors: receiver error, bad TLP, bad DLLP, replay
	// rollover, replay timer, advisory non-fatal.
	aerCorSupported = 0x0001 | 0x0040 | 0x0080 | 0x0100 | 0x1000 | 0x2000
	aerCorMaskDef   = 0x2000 // advisory non-fatal masked
)

// AddAER adds an Advanced Error Reporting capability, version 1, with
// write-1-to-clear status registers, writable mask and severity registers
// for the errors an endpoint reports, and no ECRC.
func (c *ConfigSpace) AddAER(off int) error {
	if err := c.addCap(Capability{ID: ExtCapAER, Offset: off, Size: aerSize, Extended: true}); err != nil {
		return err
	}
	c.init32(off, 1<<16) // version; ID and next are set by relink
	c.relink()
	c.setW1C32(off+AERUncorStatus, aerUncorSupported)
	c.setMask32(off+AERUncorMask, aerUncorSupported)
	c.init32(off+AERUncorSev, aerUncorSevDefault)
	c.setMask32(off+AERUncorSev, aerUncorSupported)
	c.setW1C32(off+AERCorStatus, aerCorSupported)
	c.init32(off+AERCorMask, aerCorMaskDef)
	c.setMask32(off+AERCorMask, aerCorSupported)
	c.size = ConfigSize
	return nil
}

// AddDSN adds a Device Serial Number capability, version 1, holding serial.
func (c *ConfigSpace) AddDSN(off int, serial uint64) error {
	if err := c.addCap(Capability{ID: ExtCapDSN, Offset: off, Size: 12, Extended: true}); err != nil {
		return err
	}
	c.init32(off, 1<<16)
	c.relink()
	c.init32(off+4, uint32(serial))
	c.init32(off+8, uint32(serial>>32))
	c.size = ConfigSize
	return nil
}
