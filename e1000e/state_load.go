package e1000e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"e1000e-vfu/device"
	"e1000e-vfu/device/model"
	"e1000e-vfu/migration"
)

// BeginLoad implements migration.Stateful: the stream's parameter list
// must be exactly this NIC's (the state layout follows the parameters), so
// a version-2 stream (rx-filter-size=16) is refused by a version-1 NIC,
// naming rx-filter-size.
func (n *NIC) BeginLoad(h migration.Header) (migration.Loader, error) {
	m := model.E1000E()
	cfg := model.Config{Model: m, Values: map[string]model.Value{
		model.RXFilterSize: model.IntValue(int64(n.rxFilter)),
		model.HideMSIX:     model.BoolValue(n.hideMSIX),
	}}
	src := model.Source{Model: h.Model}
	var errs []error
	for _, p := range h.Params {
		mp := m.Param(p.Name)
		if mp == nil {
			errs = append(errs, fmt.Errorf("unknown parameter %s", p.Name))
			continue
		}
		v, err := mp.Parse(p.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("parameter %s: %w", p.Name, err))
			continue
		}
		src.Params = append(src.Params, model.Assignment{Name: p.Name, Value: v})
	}
	if len(errs) == 0 {
		for _, pr := range cfg.Matches(src) {
			errs = append(errs, errors.New(pr.Msg))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("e1000e: %w", errors.Join(errs...))
	}
	return &nicLoader{n: n}, nil
}

// nicLoader decodes a stream into plain state; only Apply touches the NIC.
type nicLoader struct {
	n *NIC

	cfg      configState
	regs     RegistersState
	nvm      NVMState
	phy      PHYState
	intr     InterruptsState
	rx, tx   ringsState
	inflight *txInflightState
	ctx      txContextState
	filters  *filtersState
	link     LinkState
	stats    StatsState
	pci      pciStateS
	fifo     rxFIFOState

	// cfgTarget and cfgWrite are the config bytes Apply writes, computed
	// (and checked) by Validate.
	cfgTarget []byte
	cfgWrite  []bool
}

func (l *nicLoader) DecodeSection(s migration.Section) error {
	var err error
	switch s.Name {
	case secConfig:
		err = s.Decode(&l.cfg)
	case secRegisters:
		err = s.Decode(&l.regs)
		if err == nil {
			err = checkNotInRegisters(&l.regs)
		}
	case secNVM:
		err = s.Decode(&l.nvm)
	case secPHY:
		err = s.Decode(&l.phy)
	case secInterrupts:
		err = s.Decode(&l.intr)
	case secRXRing:
		err = s.Decode(&l.rx)
		if err == nil {
			err = l.rx.check(rxQueue)
		}
	case secTXRing:
		err = s.Decode(&l.tx)
		if err == nil {
			err = l.tx.check(txQueue)
		}
	case secTXInflight:
		l.inflight = &txInflightState{}
		err = s.Decode(l.inflight)
	case secTXContext:
		err = s.Decode(&l.ctx)
	case secFilters:
		l.filters = &filtersState{}
		err = s.Decode(l.filters)
	case secLink:
		err = s.Decode(&l.link)
	case secStats:
		err = s.Decode(&l.stats)
	case secPCI:
		err = s.Decode(&l.pci)
	case secRXFIFO:
		err = s.Decode(&l.fifo)
	default:
		return fmt.Errorf("e1000e: unexpected section %s", s.Name)
	}
	if err != nil {
		return fmt.Errorf("e1000e: %w", err)
	}
	return nil
}

// Validate checks what spans sections and what depends on this NIC.
func (l *nicLoader) Validate() error {
	n := l.n
	if l.cfg.RXFilterSize != n.rxFilter {
		return fmt.Errorf("e1000e: config: rx-filter-size %d, this NIC %d", l.cfg.RXFilterSize, n.rxFilter)
	}
	if l.cfg.HideMSIX != n.hideMSIX {
		return fmt.Errorf("e1000e: config: hide-msix %v, this NIC %v", l.cfg.HideMSIX, n.hideMSIX)
	}
	if n.hideMSIX && (len(l.pci.MSIX) > 0 || l.pci.PBA != 0 || l.pci.HeldMSIX != 0) {
		return errors.New("e1000e: pci: MSI-X state for a NIC without MSI-X (hide-msix)")
	}
	if !bytes.Equal(l.cfg.MAC, n.perm[:]) {
		return fmt.Errorf("e1000e: config: the state is of a NIC with MAC %x, this NIC has %x: start the destination with the source's MAC", l.cfg.MAC, n.perm[:])
	}
	if l.inflight != nil {
		r := txQueue(0).loaded(l.tx.Queues[0])
		if l.inflight.Head != r.head {
			return fmt.Errorf("e1000e: tx-inflight: head %d, the ring's is %d", l.inflight.Head, r.head)
		}
		if l.inflight.Count != r.avail() {
			return fmt.Errorf("e1000e: tx-inflight: %d descriptors, the ring holds %d from its head", l.inflight.Count, r.avail())
		}
		want := r.spans(l.inflight.Count)
		if len(want) != len(l.inflight.Descs) {
			return fmt.Errorf("e1000e: tx-inflight: %d descriptor spans, the ring gives %d", len(l.inflight.Descs), len(want))
		}
		for i, sp := range want {
			if l.inflight.Descs[i] != sp {
				return fmt.Errorf("e1000e: tx-inflight: descriptors at %#x+%d, the ring has them at %#x+%d",
					l.inflight.Descs[i].Addr, l.inflight.Descs[i].Len, sp.Addr, sp.Len)
			}
		}
	}
	var err error
	l.cfgTarget, l.cfgWrite, err = l.pciWrites()
	return err
}

// Validate implements migration.Validator for config.
func (c *configState) Validate() error {
	if c.RXFilterSize < 0 || c.RXFilterSize > numRA {
		return fmt.Errorf("rx-filter-size %d is outside [0, %d]", c.RXFilterSize, numRA)
	}
	if len(c.MAC) != 6 || c.MAC[0]&1 != 0 {
		return fmt.Errorf("MAC %x is not a unicast address", c.MAC)
	}
	return nil
}

// checkNotInRegisters refuses registers that other sections carry.
func checkNotInRegisters(s *RegistersState) error {
	for _, name := range notInRegisters {
		if _, ok := s.Regs[name]; ok {
			return fmt.Errorf("registers: %s belongs in another section", name)
		}
		if _, ok := s.Arrays[name]; ok {
			return fmt.Errorf("registers: %s belongs in another section", name)
		}
	}
	return nil
}

// Validate implements migration.Validator.
func (s *txInflightState) Validate() error {
	if s.Count > ringIdxMask || len(s.Descs) > 2 {
		return fmt.Errorf("%d descriptors in %d spans in flight", s.Count, len(s.Descs))
	}
	return nil
}

// Validate implements migration.Validator: the fields' descriptor widths.
func (c *txContextState) Validate() error {
	fields := []struct {
		name   string
		v, max int
	}{
		{"ipcss", c.IPCSS, 0xFF}, {"ipcso", c.IPCSO, 0xFF}, {"ipcse", c.IPCSE, 0xFFFF},
		{"tucss", c.TUCSS, 0xFF}, {"tucso", c.TUCSO, 0xFF}, {"tucse", c.TUCSE, 0xFFFF},
		{"paylen", c.PayLen, txdLenMask}, {"hdrlen", c.HdrLen, 0xFF}, {"mss", c.MSS, 0xFFFF},
	}
	for _, f := range fields {
		if f.v < 0 || f.v > f.max {
			return fmt.Errorf("%s = %d is outside [0, %d]", f.name, f.v, f.max)
		}
	}
	return nil
}

// Validate implements migration.Validator.
func (s *filtersState) Validate() error {
	if len(s.RA) > numRA {
		return fmt.Errorf("%d receive addresses", len(s.RA))
	}
	seen := 0
	for _, e := range s.RA {
		if e.Index >= numRA {
			return fmt.Errorf("receive address %d beyond %d", e.Index, numRA)
		}
		if seen&(1<<e.Index) != 0 {
			return fmt.Errorf("receive address %d twice", e.Index)
		}
		seen |= 1 << e.Index
	}
	return nil
}

// Validate implements migration.Validator; offsets against the NIC's
// config space are checked in Apply's preparation (prepPCI).
func (s *pciStateS) Validate() error {
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

// Validate implements migration.Validator.
func (s *rxFIFOState) Validate() error {
	if len(s.Frames) > rxBacklogMax {
		return fmt.Errorf("%d frames, at most %d", len(s.Frames), rxBacklogMax)
	}
	for i, f := range s.Frames {
		if len(f) == 0 || len(f) > rxMaxFrame {
			return fmt.Errorf("frame %d of %d bytes", i, len(f))
		}
	}
	return nil
}

// pciWrites computes the config-space bytes to write: every writable byte
// set to the loaded value or else its reset value, written only where it
// differs from the NIC's current value. It checks the runs against the
// NIC's write mask, so nothing is written when one is refused.
func (l *nicLoader) pciWrites() ([]byte, []bool, error) {
	n := l.n
	cs := n.pci.fn.Config
	size := cs.Size()
	target := make([]byte, size)
	_ = n.pciReference().Config.Read(0, target)
	wm, w1c := cs.Masks(0, size)
	for _, r := range l.pci.Config {
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

// Apply installs the state. The config space goes first, without n.mu
// (its hooks take it); then the NIC under n.mu.
func (l *nicLoader) Apply() error {
	n := l.n
	target, write := l.cfgTarget, l.cfgWrite
	if target == nil {
		return errors.New("e1000e: apply before validate")
	}
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
		for _, m := range l.pci.MSIX {
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

	n.mu.Lock()
	l.applyLocked()
	n.mu.Unlock()
	// Into a NIC that runs (not through the migration machine, which
	// quiesces first), the announcement starts at once.
	n.announceAfterLoad()
	return nil
}

func (l *nicLoader) applyLocked() {
	n := l.n
	// The NVM first: reset loads RA[0] from it.
	n.restoreNVM(&l.nvm)
	n.linkUp = l.link.Carrier
	n.resetLocked(false)
	n.restoreRegisters(&l.regs)
	n.restorePHY(&l.phy)
	n.restoreInterrupts(&l.intr)
	n.restoreLink(&l.link)
	n.restoreStats(&l.stats)

	n.restoreRings(rxQueue, &l.rx)
	n.restoreRings(txQueue, &l.tx)
	n.tx.discard = l.inflight != nil && l.inflight.Discard
	c := &l.ctx
	n.tx.ctx = txContext{
		ipcss: c.IPCSS, ipcso: c.IPCSO, ipcse: c.IPCSE,
		tucss: c.TUCSS, tucso: c.TUCSO, tucse: c.TUCSE,
		payLen: c.PayLen, hdrLen: c.HdrLen, mss: c.MSS,
		tse: c.TSE, ipv4: c.IPv4, tcp: c.TCP,
	}
	if l.filters != nil {
		for i := 0; i < 2*numRA; i++ {
			n.mac[RA>>2+i] = 0
		}
		for _, e := range l.filters.RA {
			n.mac[RA>>2+2*int(e.Index)] = e.Low
			// RAH keeps only the bits the part implements; an older
			// server kept them all.
			n.mac[RA>>2+2*int(e.Index)+1] = e.High & rahMask
		}
	}

	n.ioaddr = l.pci.IOAddr
	n.mig.pendingMSIX = l.pci.PBA
	n.mig.held = heldIRQ{msix: l.pci.HeldMSIX, msi: l.pci.HeldMSI}
	n.rx.blHead, n.rx.blN = 0, 0
	for _, f := range l.fifo.Frames {
		slot := &n.rx.backlog[n.rx.blN]
		*slot = append((*slot)[:0], f...)
		n.rx.blN++
	}
	// After resetLocked, which clears it: the NIC owes the network an
	// announcement when it next runs.
	n.mig.loaded = true
	if !n.mig.quiesced && !n.closed {
		n.deliverLocked()
	}
}
