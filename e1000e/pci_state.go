package e1000e

import (
	"encoding/binary"
	"errors"
	"fmt"

	"e1000e-vfu/device"
)

// The pci section: what the PCI function holds beyond the register file.

// cfgRun is a run of config space bytes from offset Off.
type cfgRun struct {
	Off  uint16 `msgpack:"off"`
	Data []byte `msgpack:"data"`
}

// msixEntry is one MSI-X table entry other than a masked, empty one.
type msixEntry struct {
	Vector uint8  `msgpack:"vector"`
	Addr   uint64 `msgpack:"addr"`
	Data   uint32 `msgpack:"data"`
	Ctrl   uint32 `msgpack:"ctrl"`
}

// PCIState is the configuration space the guest changed, the MSI-X table
// and pending bits, messages held while quiesced, and the I/O BAR's
// address register (IOADDR).
type PCIState struct {
	// Config lists the runs of guest-writable config space bytes that
	// differ from reset (writable bits only).
	Config []cfgRun    `msgpack:"config,omitempty"`
	MSIX   []msixEntry `msgpack:"msix,omitempty"`
	PBA    uint8       `msgpack:"pba,omitempty"`
	// HeldMSIX and HeldMSI are messages the NIC raised while quiesced
	// and has not sent; the destination sends them when it runs.
	HeldMSIX uint8  `msgpack:"held-msix,omitempty"`
	HeldMSI  bool   `msgpack:"held-msi,omitempty"`
	IOAddr   uint32 `msgpack:"ioaddr,omitempty"`
}

// pciReference is a function in its reset state, for saving only what the
// guest changed in config space.
func (n *NIC) pciReference() *device.Function {
	if n.mig.cfgRef == nil {
		tmp := &NIC{perm: n.perm, hideMSIX: n.hideMSIX, caps82574l: n.caps82574l}
		if err := tmp.pciInit(false); err != nil {
			// pciInit only fails on a layout error, which New has
			// already ruled out for this NIC.
			return n.pci.fn
		}
		n.mig.cfgRef = tmp.pci.fn
	}
	return n.mig.cfgRef
}

// savePCI fills a PCIState. Called with n.mu held.
func (n *NIC) savePCI() *PCIState {
	s := &PCIState{IOAddr: n.ioaddr, PBA: n.mig.pendingMSIX,
		HeldMSIX: n.mig.held.msix, HeldMSI: n.mig.held.msi}
	fn := n.pci.fn
	cs := fn.Config
	size := cs.Size()
	cur := make([]byte, size)
	ref := make([]byte, size)
	_ = cs.Read(0, cur)
	_ = n.pciReference().Config.Read(0, ref)
	wm, _ := cs.Masks(0, size)
	var run *cfgRun
	for off := 0; off < size; off++ {
		if wm[off] != 0 && cur[off]&wm[off] != ref[off]&wm[off] {
			if run == nil || int(run.Off)+len(run.Data) != off {
				s.Config = append(s.Config, cfgRun{Off: uint16(off)})
				run = &s.Config[len(s.Config)-1]
			}
			run.Data = append(run.Data, cur[off]&wm[off])
		}
	}
	if n.hideMSIX {
		return s
	}
	var e [device.MSIXEntrySize]byte
	for v := 0; v < numMSIXVecs; v++ {
		_ = fn.ReadRegion(device.RegionBAR3, uint64(msixTableOff+v*device.MSIXEntrySize), e[:])
		ent := msixEntry{
			Vector: uint8(v),
			Addr:   binary.LittleEndian.Uint64(e[0:]),
			Data:   binary.LittleEndian.Uint32(e[8:]),
			Ctrl:   binary.LittleEndian.Uint32(e[12:]),
		}
		if ent.Addr != 0 || ent.Data != 0 || ent.Ctrl != device.MSIXEntryMaskBit {
			s.MSIX = append(s.MSIX, ent)
		}
		if fn.IRQs.Pending(device.IRQMSIX, uint32(v)) {
			s.PBA |= 1 << v
		}
	}
	return s
}

// Validate implements migration.Validator; offsets against the NIC's
// config space are checked by preparePCI.
func (s *PCIState) Validate() error {
	if len(s.Config) > device.ConfigSize {
		return fmt.Errorf("%d config runs", len(s.Config))
	}
	end := -1
	for _, r := range s.Config {
		if int(r.Off) <= end || len(r.Data) == 0 || int(r.Off)+len(r.Data) > device.ConfigSize {
			return fmt.Errorf("config run at %#x of %d bytes out of order or range", r.Off, len(r.Data))
		}
		end = int(r.Off) + len(r.Data) - 1
	}
	if len(s.MSIX) > numMSIXVecs {
		return fmt.Errorf("%d MSI-X entries", len(s.MSIX))
	}
	seen := 0
	for _, e := range s.MSIX {
		if e.Vector >= numMSIXVecs || seen&(1<<e.Vector) != 0 {
			return fmt.Errorf("MSI-X entry %d out of range or twice", e.Vector)
		}
		seen |= 1 << e.Vector
		if e.Ctrl&^device.MSIXEntryMaskBit != 0 {
			return fmt.Errorf("MSI-X entry %d control %#x has reserved bits", e.Vector, e.Ctrl)
		}
	}
	if s.PBA >= 1<<numMSIXVecs || s.HeldMSIX >= 1<<numMSIXVecs {
		return fmt.Errorf("MSI-X pending %#x or held %#x bits beyond %d vectors", s.PBA, s.HeldMSIX, numMSIXVecs)
	}
	return nil
}

// preparePCI checks s against this NIC and computes the config-space
// bytes restorePCIConfig writes.
func (n *NIC) preparePCI(s *PCIState) ([]byte, []bool, error) {
	if n.hideMSIX && (len(s.MSIX) > 0 || s.PBA != 0 || s.HeldMSIX != 0) {
		return nil, nil, errors.New("e1000e: pci: MSI-X state for a NIC without MSI-X (hide-msix)")
	}
	return n.pciWrites(s)
}

// pciWrites computes the config-space bytes to write: every writable byte
// set to the loaded value or else its reset value, written only where it
// differs from the NIC's current value. It checks the runs against the
// NIC's write mask, so nothing is written when one is refused.
func (n *NIC) pciWrites(s *PCIState) ([]byte, []bool, error) {
	cs := n.pci.fn.Config
	size := cs.Size()
	target := make([]byte, size)
	_ = n.pciReference().Config.Read(0, target)
	wm, w1c := cs.Masks(0, size)
	for _, r := range s.Config {
		if int(r.Off)+len(r.Data) > size {
			return nil, nil, fmt.Errorf("e1000e: pci: config run at %#x beyond the %d-byte space", r.Off, size)
		}
		for i, b := range r.Data {
			o := int(r.Off) + i
			if b&^wm[o] != 0 {
				return nil, nil, fmt.Errorf("e1000e: pci: config byte %#x = %#x has bits that are not writable", o, b)
			}
			target[o] = target[o]&^wm[o] | b
		}
	}
	cur := make([]byte, size)
	_ = cs.Read(0, cur)
	write := make([]bool, size)
	for o := range target {
		// Only the writable bits, and no 1 to a write-1-to-clear bit.
		target[o] = target[o] & wm[o] &^ w1c[o]
		write[o] = wm[o] != 0 && cur[o]&wm[o] != target[o]
	}
	return target, write, nil
}

// restorePCIConfig writes the config space and the MSI-X table that
// preparePCI computed. Called without n.mu: the config space's hooks take
// it.
func (n *NIC) restorePCIConfig(s *PCIState, target []byte, write []bool) error {
	// Pending bits this NIC had are not the source's: clear them before
	// the config writes, so enabling MSI-X cannot deliver one.
	for v := 0; v < numMSIXVecs; v++ {
		n.pci.fn.IRQs.ClearPending(device.IRQMSIX, uint32(v))
	}
	cs := n.pci.fn.Config
	for o := 0; o < len(target); o++ {
		if !write[o] {
			continue
		}
		// Byte writes: the space behaves as if an access of any size
		// were its bytes written one at a time.
		if err := cs.Write(uint64(o), target[o:o+1]); err != nil {
			return fmt.Errorf("e1000e: pci: writing config byte %#x: %w", o, err)
		}
	}
	var e [device.MSIXEntrySize]byte
	for v := 0; v < numMSIXVecs; v++ {
		ent := msixEntry{Vector: uint8(v), Ctrl: device.MSIXEntryMaskBit}
		for _, m := range s.MSIX {
			if int(m.Vector) == v {
				ent = m
			}
		}
		binary.LittleEndian.PutUint64(e[0:], ent.Addr)
		binary.LittleEndian.PutUint32(e[8:], ent.Data)
		binary.LittleEndian.PutUint32(e[12:], ent.Ctrl)
		if err := n.pci.fn.WriteRegion(device.RegionBAR3, uint64(msixTableOff+v*device.MSIXEntrySize), e[:]); err != nil {
			return fmt.Errorf("e1000e: pci: MSI-X entry %d: %w", v, err)
		}
	}
	return nil
}

// restorePCI applies what of the section the NIC keeps itself. Called
// with n.mu held.
func (n *NIC) restorePCI(s *PCIState) {
	n.ioaddr = s.IOAddr
	n.mig.pendingMSIX = s.PBA
	n.mig.held = heldIRQ{msix: s.HeldMSIX, msi: s.HeldMSI}
}
