package device

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
)

// Sizes of PCI configuration space.
const (
	ConfigSizeLegacy = 256  // conventional PCI
	ConfigSize       = 4096 // PCI Express extended configuration space
)

// Offsets of type 0 header registers.
const (
	CfgVendorID      = 0x00
	CfgDeviceID      = 0x02
	CfgCommand       = 0x04
	CfgStatus        = 0x06
	CfgRevision      = 0x08
	CfgClass         = 0x09 // three bytes: prog-if, subclass, base class
	CfgCacheLineSize = 0x0C
	CfgLatencyTimer  = 0x0D
	CfgHeaderType    = 0x0E
	CfgBAR0          = 0x10
	CfgSubsysVendor  = 0x2C
	CfgSubsysID      = 0x2E
	CfgROM           = 0x30
	CfgCapPtr        = 0x34
	CfgIntLine       = 0x3C
	CfgIntPin        = 0x3D
)

// Command register bits.
const (
	CmdIO           uint16 = 1 << 0
	CmdMemory       uint16 = 1 << 1
	CmdBusMaster    uint16 = 1 << 2
	CmdINTxDisable  uint16 = 1 << 10
	cmdWritableBits        = CmdIO | CmdMemory | CmdBusMaster | CmdINTxDisable
)

// Status register bits.
const (
	StatusInterrupt uint16 = 1 << 3
	StatusCapList   uint16 = 1 << 4
	// The error bits software clears by writing 1: master data parity error,
	// signalled/received target abort, received master abort, signalled
	// system error, detected parity error.
	statusW1CBits uint16 = 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15
)

// Identity is what a function's header says it is.
type Identity struct {
	VendorID, DeviceID     uint16
	SubsysVendor, SubsysID uint16
	Revision               uint8
	// Class is base class << 16 | subclass << 8 | programming interface,
	// e.g. 0x020000 for an Ethernet controller.
	Class uint32
	// InterruptPin is 0 for no INTx, 1-4 for INTA-INTD.
	InterruptPin uint8
}

// watch is a callback run, without the lock, after a write touches
// [off, off+size), and after a reset.
type watch struct {
	off, size int
	fn        func()
}

// fixup adjusts the bytes of a register after a write touched it, with the
// lock held: it enforces rules a write mask cannot express (a clamped field,
// a value that must be refused). old holds the register's bytes before the
// write.
type fixup struct {
	off, size int
	fn        func(old []byte)
	touched   bool    // scratch for Write, under the lock
	old       [8]byte // scratch for Write: the bytes before the write
}

// maxFixups bounds the fixups a space may have, so a write's work is
// bounded.
const maxFixups = 16

// ConfigSpace is the configuration space of one PCI function: its bytes, a
// write mask (bits software may change) and a write-1-to-clear mask, plus the
// values a reset restores. Build it with NewConfigSpace, AddBAR and the Add*
// capability methods before serving it; after that it is safe for concurrent
// use.
//
// A write changes, byte by byte, only the bits in the write mask, and clears
// the write-1-to-clear bits written as 1; so an access of any size at any
// offset, including one that straddles registers, behaves as the same
// bytes written one at a time.
type ConfigSpace struct {
	mu    sync.Mutex
	size  int
	data  [ConfigSize]byte
	wmask [ConfigSize]byte
	w1c   [ConfigSize]byte
	reset [ConfigSize]byte

	bars    [6]BAR
	caps    []Capability
	fixups  []fixup
	watches []watch

	msiOff, msixOff, pcieOff int
	msi                      MSIOptions
	msix                     MSIXInfo

	commandHook func(old, new uint16)
	lastCommand uint16 // the command value the hook last saw
}

// NewConfigSpace returns a type 0 header for id with no BARs and no
// capabilities. Its size is ConfigSizeLegacy until AddPCIe makes it
// ConfigSize.
func NewConfigSpace(id Identity) *ConfigSpace {
	c := &ConfigSpace{size: ConfigSizeLegacy}
	c.init16(CfgVendorID, id.VendorID)
	c.init16(CfgDeviceID, id.DeviceID)
	c.initByte(CfgRevision, id.Revision)
	c.initByte(CfgClass, byte(id.Class))
	c.initByte(CfgClass+1, byte(id.Class>>8))
	c.initByte(CfgClass+2, byte(id.Class>>16))
	c.initByte(CfgHeaderType, 0)
	c.init16(CfgSubsysVendor, id.SubsysVendor)
	c.init16(CfgSubsysID, id.SubsysID)
	c.initByte(CfgIntPin, id.InterruptPin)

	c.setMask16(CfgCommand, cmdWritableBits)
	c.setW1C16(CfgStatus, statusW1CBits)
	// Cache line size is kept for software; it has no effect on PCIe.
	c.wmask[CfgCacheLineSize] = 0xFF
	c.wmask[CfgIntLine] = 0xFF
	return c
}

// Size is the size of the space a client sees: 256 or 4096 bytes.
func (c *ConfigSpace) Size() int { return c.size }

// Read copies the bytes at off into p.
func (c *ConfigSpace) Read(off uint64, p []byte) error {
	if err := c.check(off, len(p)); err != nil {
		return err
	}
	c.mu.Lock()
	copy(p, c.data[off:])
	c.mu.Unlock()
	return nil
}

// Write applies p at off under the masks, then runs the fixups of the
// registers it touched and, once the lock is released, their watches.
func (c *ConfigSpace) Write(off uint64, p []byte) error {
	if err := c.check(off, len(p)); err != nil {
		return err
	}
	o := int(off)
	end := o + len(p)
	c.mu.Lock()
	// Fixups need the old bytes of their register: keep them in the
	// fixup itself (the lock is held), so nothing escapes to the heap.
	for i := range c.fixups {
		fx := &c.fixups[i]
		fx.touched = overlaps(o, end, fx.off, fx.size)
		if fx.touched {
			copy(fx.old[:], c.data[fx.off:fx.off+fx.size])
		}
	}
	for i, v := range p {
		a := o + i
		nv := (c.data[a] &^ c.wmask[a]) | (v & c.wmask[a])
		nv &^= v & c.w1c[a]
		c.data[a] = nv
	}
	for i := range c.fixups {
		if fx := &c.fixups[i]; fx.touched {
			fx.fn(fx.old[:fx.size])
		}
	}
	hook, oldCmd, newCmd := c.commandChange()
	c.mu.Unlock()

	if hook != nil {
		hook(oldCmd, newCmd)
	}
	for i := range c.watches {
		w := &c.watches[i]
		if overlaps(o, end, w.off, w.size) {
			w.fn()
		}
	}
	return nil
}

// commandChange reports, with the lock held, whether the command hook must
// run, and records the value it will see.
func (c *ConfigSpace) commandChange() (func(old, new uint16), uint16, uint16) {
	cmd := binary.LittleEndian.Uint16(c.data[CfgCommand:])
	if c.commandHook == nil || cmd == c.lastCommand {
		return nil, 0, 0
	}
	old := c.lastCommand
	c.lastCommand = cmd
	return c.commandHook, old, cmd
}

func overlaps(start, end, off, size int) bool {
	return start < off+size && off < end
}

// check refuses accesses outside the space, without overflow.
func (c *ConfigSpace) check(off uint64, n int) error {
	if off > uint64(c.size) || uint64(n) > uint64(c.size)-off {
		return fmt.Errorf("config space access at %#x size %d beyond %#x: %w", off, n, c.size, syscall.EINVAL)
	}
	return nil
}

// Reset restores every byte to its initial value and runs every watch and
// the command hook, so whoever follows the space sees the change.
func (c *ConfigSpace) Reset() {
	c.mu.Lock()
	c.data = c.reset
	hook, oldCmd, newCmd := c.commandChange()
	c.mu.Unlock()
	if hook != nil {
		hook(oldCmd, newCmd)
	}
	for i := range c.watches {
		c.watches[i].fn()
	}
}

// Watch registers fn to run after any write that touches [off, off+size)
// and after every reset. fn runs without the space's lock held (it may read
// the space) on the goroutine that wrote. Watches run in the order they were
// registered, so those NewFunction adds (which update the IRQ table) run
// before a device's own. Register watches while building.
func (c *ConfigSpace) Watch(off, size int, fn func()) {
	c.watches = append(c.watches, watch{off: off, size: size, fn: fn})
}

// SetCommandHook registers fn to run when the command register changes
// (Bus Master, memory or I/O decoding, INTx disable), with the old and new
// values, on the goroutine that wrote and without the lock held. A device
// uses it to learn that DMA became allowed. Set it while building.
func (c *ConfigSpace) SetCommandHook(fn func(old, new uint16)) {
	c.mu.Lock()
	c.commandHook = fn
	c.lastCommand = binary.LittleEndian.Uint16(c.data[CfgCommand:])
	c.mu.Unlock()
}

// Uint8, Uint16 and Uint32 read a register; an offset outside the space
// reads as zero (they are for the device's own, trusted offsets).
func (c *ConfigSpace) Uint8(off int) uint8 {
	var b [1]byte
	if c.Read(uint64(off), b[:]) != nil {
		return 0
	}
	return b[0]
}

// Uint16 reads a little-endian 16-bit register.
func (c *ConfigSpace) Uint16(off int) uint16 {
	var b [2]byte
	if c.Read(uint64(off), b[:]) != nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b[:])
}

// Uint32 reads a little-endian 32-bit register.
func (c *ConfigSpace) Uint32(off int) uint32 {
	var b [4]byte
	if c.Read(uint64(off), b[:]) != nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b[:])
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 { return c.Uint16(CfgCommand) }

// BusMaster reports whether the function may access guest memory.
func (c *ConfigSpace) BusMaster() bool { return c.Command()&CmdBusMaster != 0 }

// INTxDisabled reports whether the command register forbids INTx.
func (c *ConfigSpace) INTxDisabled() bool { return c.Command()&CmdINTxDisable != 0 }

// SetInterruptStatus sets or clears the status register's Interrupt Status
// bit, which mirrors the function's INTx level whatever INTx-disable says.
func (c *ConfigSpace) SetInterruptStatus(level bool) {
	c.mu.Lock()
	v := binary.LittleEndian.Uint16(c.data[CfgStatus:])
	if level {
		v |= StatusInterrupt
	} else {
		v &^= StatusInterrupt
	}
	binary.LittleEndian.PutUint16(c.data[CfgStatus:], v)
	c.mu.Unlock()
}

// Masks returns copies of the write mask and write-1-to-clear mask of
// [off, off+n), for tests and conformance checks.
func (c *ConfigSpace) Masks(off, n int) (wmask, w1c []byte) {
	if off < 0 || n < 0 || off+n > c.size {
		return nil, nil
	}
	wmask = append([]byte(nil), c.wmask[off:off+n]...)
	w1c = append([]byte(nil), c.w1c[off:off+n]...)
	return wmask, w1c
}

// Builder helpers: they set the current and the reset value together.

func (c *ConfigSpace) initByte(off int, v byte) {
	c.data[off] = v
	c.reset[off] = v
}

func (c *ConfigSpace) init16(off int, v uint16) {
	binary.LittleEndian.PutUint16(c.data[off:], v)
	binary.LittleEndian.PutUint16(c.reset[off:], v)
}

func (c *ConfigSpace) init32(off int, v uint32) {
	binary.LittleEndian.PutUint32(c.data[off:], v)
	binary.LittleEndian.PutUint32(c.reset[off:], v)
}

func (c *ConfigSpace) setMask16(off int, m uint16) {
	binary.LittleEndian.PutUint16(c.wmask[off:], m)
}

func (c *ConfigSpace) setMask32(off int, m uint32) {
	binary.LittleEndian.PutUint32(c.wmask[off:], m)
}

func (c *ConfigSpace) setW1C16(off int, m uint16) {
	binary.LittleEndian.PutUint16(c.w1c[off:], m)
}

func (c *ConfigSpace) setW1C32(off int, m uint32) {
	binary.LittleEndian.PutUint32(c.w1c[off:], m)
}

// get16 and put16 are for fixups, which run with the lock held.
func (c *ConfigSpace) get16(off int) uint16 { return binary.LittleEndian.Uint16(c.data[off:]) }
func (c *ConfigSpace) put16(off int, v uint16) {
	binary.LittleEndian.PutUint16(c.data[off:], v)
}

// IRQMode is the interrupt mechanism a function's configuration selects.
type IRQMode int

// Interrupt modes, in the order a configuration selects them.
const (
	IRQModeNone IRQMode = iota // INTx disabled and neither MSI nor MSI-X enabled
	IRQModeINTx
	IRQModeMSI
	IRQModeMSIX
)

func (m IRQMode) String() string {
	switch m {
	case IRQModeINTx:
		return "INTx"
	case IRQModeMSI:
		return "MSI"
	case IRQModeMSIX:
		return "MSI-X"
	}
	return "none"
}

// IRQMode says which interrupt mechanism is active: MSI-X when its enable
// bit is set, else MSI when its enable bit is set, else INTx unless the
// command register disables it (or the function has no interrupt pin).
func (c *ConfigSpace) IRQMode() IRQMode {
	if c.MSIXEnabled() {
		return IRQModeMSIX
	}
	if c.MSIEnabled() {
		return IRQModeMSI
	}
	if c.INTxDisabled() || c.Uint8(CfgIntPin) == 0 {
		return IRQModeNone
	}
	return IRQModeINTx
}
