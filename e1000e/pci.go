package e1000e

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"e1000e-vfu/device"
)

// PCI layout of the 82574L as QEMU's e1000e and real boards present it.
const (
	bar1Size     = 0x20000 // flash window: reads zero
	bar2Size     = 32      // I/O: IOADDR at 0, IODATA at 4
	bar3Size     = 0x4000  // MSI-X table at 0, PBA at 0x2000
	msixTableOff = 0
	msixPBAOff   = 0x2000
	capPM        = 0xC8
	capMSI       = 0xD0
	capPCIe      = 0xE0
	capMSIX      = 0xA0
	capAER       = 0x100
	capDSN       = 0x140
	ioAddr       = 0
	ioData       = 4
	// PM capability versions (PMC bits 2:0): the 82574L's is 2, PCI PM
	// 1.1; the first layout reported 3, PCI PM 1.2.
	pmVersion82574L = 2
	pmVersionFirst  = 3
)

// pciState is the PCI function around the register file.
type pciState struct {
	fn *device.Function
}

var _ device.Device = (*NIC)(nil)

// dsnSerial builds the device serial number from the MAC address: mac0-2,
// ff, ff, mac3-5, most significant byte first.
func dsnSerial(mac [6]byte) uint64 {
	return uint64(mac[0])<<56 | uint64(mac[1])<<48 | uint64(mac[2])<<40 |
		0xFF<<32 | 0xFF<<24 |
		uint64(mac[3])<<16 | uint64(mac[4])<<8 | uint64(mac[5])
}

// addMSIX adds the MSI-X capability unless the model parameter hide-msix
// leaves it out. BAR3 stays either way, reading as zero without it, so the
// BAR layout is the same for both.
func (n *NIC) addMSIX(cs *device.ConfigSpace) error {
	if n.hideMSIX {
		return nil
	}
	return cs.AddMSIX(capMSIX, numMSIXVecs, 3, msixTableOff, 3, msixPBAOff)
}

// addStdCaps adds the standard capabilities; the list links them in the
// order they are added. With the model parameter caps-82574l the list is
// the 82574L's: PM (0xC8) → MSI (0xD0) → PCIe (0xE0) → MSI-X (0xA0), PM
// version 2 (PCI PM 1.1) with DSI, as the datasheet gives them and QEMU's
// e1000e reports. Without it, it is the first layout: MSI-X first, then by
// offset, PM version 3. Every capability sits at the same offset with the
// same writable bits either way, so the migrated state is the same; only
// read-only bytes (the list pointers, PMC) differ, which a hypervisor
// compares on an incoming migration: the layout is a model parameter.
func (n *NIC) addStdCaps(cs *device.ConfigSpace) error {
	pmOpts := device.PMOptions{Version: pmVersionFirst}
	if n.caps82574l {
		pmOpts = device.PMOptions{Version: pmVersion82574L, DSI: true}
	}
	pm := func() error { return cs.AddPM(capPM, pmOpts) }
	msi := func() error { return cs.AddMSI(capMSI, device.MSIOptions{Vectors: 1, Addr64: true}) }
	pcie := func() error { return cs.AddPCIe(capPCIe, device.PCIeOptions{Version: 1}) }
	msix := func() error { return n.addMSIX(cs) }
	order := []func() error{msix, pm, msi, pcie}
	if n.caps82574l {
		order = []func() error{pm, msi, pcie, msix}
	}
	for _, add := range order {
		if err := add(); err != nil {
			return err
		}
	}
	return nil
}

// pciInit builds the configuration space and the function serving it, and
// makes the function deliver the NIC's interrupts unless the configuration
// named an Interrupter.
func (n *NIC) pciInit(ownIRQ bool) error {
	cs := device.NewConfigSpace(device.Identity{
		VendorID:     pciVendorID,
		DeviceID:     pciDeviceID,
		SubsysVendor: pciVendorID,
		SubsysID:     0,
		Revision:     0,
		Class:        0x020000,
		InterruptPin: 1,
	})
	steps := []error{
		cs.AddBAR(0, device.BAR{Kind: device.BARMem32, Size: bar0Size}),
		cs.AddBAR(1, device.BAR{Kind: device.BARMem32, Size: bar1Size}),
		cs.AddBAR(2, device.BAR{Kind: device.BARIO, Size: bar2Size}),
		cs.AddBAR(3, device.BAR{Kind: device.BARMem32, Size: bar3Size}),
		n.addStdCaps(cs),
		cs.AddAER(capAER),
		cs.AddDSN(capDSN, dsnSerial(n.perm)),
	}
	for _, err := range steps {
		if err != nil {
			return fmt.Errorf("e1000e: PCI configuration: %w", err)
		}
	}
	fn := device.NewFunction(cs)
	fn.IRQs.SetLogger(n.log) // signals dropped on a client's full eventfd
	// The function has no BAR handlers: ReadRegion and WriteRegion serve
	// the register BARs (0 and 2) themselves. BAR1 (flash) and the rest
	// of BAR3 read as zero.

	// Bus Master gates DMA; turning it on retries what waited for it.
	cs.SetCommandHook(func(_, cmd uint16) {
		n.mu.Lock()
		defer n.mu.Unlock()
		on := cmd&device.CmdBusMaster != 0
		was := n.busMasterOn
		n.busMasterOn = on
		if on != was {
			// An access waiting for a message must not go on as if
			// DMA had been allowed all along.
			n.datapathChanged()
		}
		if on && !was && !n.closed {
			n.kickRX()
			n.kickTX()
		}
	})
	// The function's own watches (registered by NewFunction) update its
	// IRQ table first; then the NIC re-evaluates in the new mode.
	modeChanged := func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if !n.closed {
			n.irqModeChanged()
		}
	}
	cs.Watch(capMSI, 24, modeChanged)
	if !n.hideMSIX {
		cs.Watch(capMSIX+2, 2, modeChanged)
	}
	cs.Watch(device.CfgCommand, 2, modeChanged)

	n.pci.fn = fn
	if ownIRQ {
		n.irq = pciIRQ{fn}
	}
	return nil
}

// pciIRQ delivers interrupts through the function's eventfd table.
type pciIRQ struct{ fn *device.Function }

func (p pciIRQ) Mode() device.IRQMode { return p.fn.IRQMode() }
func (p pciIRQ) MSIX(v int)           { p.fn.IRQs.MSIX(uint32(v)) }
func (p pciIRQ) MSI()                 { p.fn.IRQs.MSI(0) }
func (p pciIRQ) SetINTx(level bool)   { p.fn.SetINTx(level) }

// ClearMSIXPending clears a vector's pending bit (PBACLR, PBA_CLR).
func (p pciIRQ) ClearMSIXPending(v int) { p.fn.IRQs.ClearPending(device.IRQMSIX, uint32(v)) }

// Info describes the regions and IRQs.
func (n *NIC) Info() device.Info { return n.pci.fn.Info() }

// ReadRegion serves a read of config space or a BAR. Register accesses
// (BAR0, and BAR2's I/O window) go straight to the NIC; the function serves
// the rest: config space, the MSI-X table and PBA in BAR3, and BAR1.
func (n *NIC) ReadRegion(index int, offset uint64, p []byte) error {
	switch index {
	case device.RegionBAR0:
		if err := checkBAR(0, bar0Size, offset, len(p)); err != nil {
			return err
		}
		return n.readBAR0(offset, p)
	case device.RegionBAR2:
		if err := checkBAR(2, bar2Size, offset, len(p)); err != nil {
			return err
		}
		return n.readBAR2(offset, p)
	}
	return n.pci.fn.ReadRegion(index, offset, p)
}

// WriteRegion serves a write of config space or a BAR, as ReadRegion
// divides them.
func (n *NIC) WriteRegion(index int, offset uint64, p []byte) error {
	switch index {
	case device.RegionBAR0:
		if err := checkBAR(0, bar0Size, offset, len(p)); err != nil {
			return err
		}
		return n.writeBAR0(offset, p)
	case device.RegionBAR2:
		if err := checkBAR(2, bar2Size, offset, len(p)); err != nil {
			return err
		}
		return n.writeBAR2(offset, p)
	}
	return n.pci.fn.WriteRegion(index, offset, p)
}

// checkBAR refuses an access that does not lie within the size bytes of a
// register BAR.
func checkBAR(bar int, size, off uint64, n int) error {
	if off > size || uint64(n) > size-off {
		return fmt.Errorf("e1000e: BAR%d access at %#x size %d beyond its %#x bytes: %w", bar, off, n, size, syscall.EINVAL)
	}
	return nil
}

// SetIRQs applies the client's eventfds and masks.
func (n *NIC) SetIRQs(req device.SetIRQs) error { return n.pci.fn.SetIRQs(req) }

// Reset is a function-level reset: config space, interrupts and the NIC.
func (n *NIC) Reset() error {
	// The config reset runs the command hook and watches, which take n.mu.
	if err := n.pci.fn.Reset(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resetLocked(false)
	return nil
}

// Connect gives the NIC the new client's guest memory.
func (n *NIC) Connect(mem device.GuestMemory) {
	n.mu.Lock()
	n.setMem(mem)
	n.mu.Unlock()
}

// Disconnect stops every access to the client's memory, then drops its
// eventfds. An access the datapath makes without n.mu (guest memory
// reached by messages) is waited for: the connection is gone by then, so
// it fails at once.
func (n *NIC) Disconnect() {
	n.mu.Lock()
	n.setMem(nil)
	n.waitIdle()
	n.stopAllTimers()
	n.intr = intrState{}
	n.mu.Unlock()
	n.pci.fn.Disconnect()
}

// errAccess is a BAR access of a size or alignment the NIC does not serve.
func errAccess(bar int, off uint64, size int) error {
	return fmt.Errorf("e1000e: BAR%d access at %#x size %d: %w", bar, off, size, syscall.EINVAL)
}

// readBAR0 serves register reads: dword and qword accesses, and byte or
// word reads within one dword (the dword is read with its side effects).
func (n *NIC) readBAR0(off uint64, p []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readRegs(0, off, p, n.readReg)
}

func (n *NIC) writeBAR0(off uint64, p []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.writeRegs(0, off, p, n.writeReg)
}

// readRegs splits an access into dword register reads.
func (n *NIC) readRegs(bar int, off uint64, p []byte, read func(uint32) uint32) error {
	switch {
	case len(p) == 4 && off%4 == 0, len(p) == 8 && off%4 == 0:
		for i := 0; i < len(p); i += 4 {
			binary.LittleEndian.PutUint32(p[i:], read(uint32(off)+uint32(i)))
		}
	case (len(p) == 1 || len(p) == 2) && off%4+uint64(len(p)) <= 4:
		v := read(uint32(off &^ 3))
		v >>= 8 * (off % 4)
		for i := range p {
			p[i] = byte(v >> (8 * i))
		}
	default:
		return errAccess(bar, off, len(p))
	}
	return nil
}

// writeRegs splits an access into dword register writes; a byte or word
// write merges with the stored value of its dword.
func (n *NIC) writeRegs(bar int, off uint64, p []byte, write func(uint32, uint32)) error {
	switch {
	case len(p) == 4 && off%4 == 0, len(p) == 8 && off%4 == 0:
		for i := 0; i < len(p); i += 4 {
			write(uint32(off)+uint32(i), binary.LittleEndian.Uint32(p[i:]))
		}
	case (len(p) == 1 || len(p) == 2) && off%4+uint64(len(p)) <= 4:
		base := uint32(off &^ 3)
		v := n.storedReg(base)
		if bar == 2 {
			v = n.ioaddr
		}
		for i := range p {
			sh := 8 * (uint(off%4) + uint(i))
			v = v&^(0xFF<<sh) | uint32(p[i])<<sh
		}
		write(base, v)
	default:
		return errAccess(bar, off, len(p))
	}
	return nil
}

// storedReg is the stored value of the register at off, aliases resolved.
func (n *NIC) storedReg(off uint32) uint32 {
	d := (off >> 2) & (bar0Size/4 - 1)
	return n.mac[regIdx.canon[d]]
}

// readBAR2 serves the I/O window: IOADDR selects a register, IODATA
// reads it.
func (n *NIC) readBAR2(off uint64, p []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readRegs(2, off, p, n.ioRead)
}

func (n *NIC) writeBAR2(off uint64, p []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.writeRegs(2, off, p, n.ioWrite)
}

func (n *NIC) ioRead(off uint32) uint32 {
	switch off {
	case ioAddr:
		return n.ioaddr
	case ioData:
		if n.ioaddr < bar0Size {
			return n.readReg(n.ioaddr)
		}
	}
	return 0
}

func (n *NIC) ioWrite(off, v uint32) {
	switch off {
	case ioAddr:
		n.ioaddr = v
	case ioData:
		if n.ioaddr < bar0Size {
			n.writeReg(n.ioaddr, v)
		}
	}
}
