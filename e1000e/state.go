package e1000e

import (
	"strconv"

	"e1000e-vfu/device/model"
	"e1000e-vfu/migration"
)

// The NIC's state in problem terms (migration/FORMAT.md, "Sections of the
// e1000e"). Every section is a plain struct encoded as a msgpack map, and
// what equals its reset value is left out, so an active NIC's state is a
// few hundred bytes where a register dump would be 128 KiB.
//
// Two choices differ from a literal reading of the planned table:
//   - MTA and VFTA travel in "registers", not "filters": the multicast hash
//     and the VLAN filter work whatever rx-filter-size is, so a version-1
//     NIC (no filters section) must carry them too. "filters" is the
//     exact-match receive address table that rx-filter-size governs.
//   - "rx-fifo" (optional) holds frames the NIC accepted but could not yet
//     write to the ring: the 82574's receive packet buffer. A destination
//     that drops it loses those frames, as a link would.

// Section names.
const (
	secConfig     = "config"
	secRegisters  = "registers"
	secNVM        = "nvm"
	secPHY        = "phy"
	secInterrupts = "interrupts"
	secRXRing     = "rx-ring"
	secTXRing     = "tx-ring"
	secTXInflight = "tx-inflight"
	secTXContext  = "tx-context"
	secFilters    = "filters"
	secLink       = "link"
	secStats      = "stats"
	secPCI        = "pci"
	secRXFIFO     = "rx-fifo"
)

var _ migration.Stateful = (*NIC)(nil)

// Model implements migration.Stateful.
func (n *NIC) Model() string { return model.E1000EName }

// Params implements migration.Stateful: each parameter not at its off value
// (caps-82574l false, rx-filter-size 0, hide-msix false).
func (n *NIC) Params() []migration.Param {
	var ps []migration.Param
	if n.caps82574l {
		ps = append(ps, migration.Param{Name: model.Caps82574L, Value: "true"})
	}
	if n.rxFilter != 0 {
		ps = append(ps, migration.Param{Name: model.RXFilterSize, Value: strconv.Itoa(n.rxFilter)})
	}
	if n.hideMSIX {
		ps = append(ps, migration.Param{Name: model.HideMSIX, Value: "true"})
	}
	return ps
}

// Sections implements migration.Stateful.
func (n *NIC) Sections() []migration.SectionSpec {
	return []migration.SectionSpec{
		{Name: secConfig},
		{Name: secRegisters},
		{Name: secNVM, Rule: migration.Always(migration.Optional)},
		{Name: secPHY},
		{Name: secInterrupts},
		{Name: secRXRing},
		{Name: secTXRing},
		{Name: secTXInflight, Rule: migration.Always(migration.Optional)},
		{Name: secTXContext},
		{Name: secFilters, Rule: migration.When(model.RXFilterSize, migration.Required, migration.Forbidden)},
		{Name: secLink},
		{Name: secStats, Rule: migration.Always(migration.Optional)},
		{Name: secPCI},
		{Name: secRXFIFO, Rule: migration.Always(migration.Optional)},
	}
}

// SaveConfig implements migration.Stateful.
func (n *NIC) SaveConfig(w *migration.SectionWriter) error {
	return w.PutCanonical(secConfig, true, n.saveConfig())
}

// SaveState implements migration.Stateful. The core's component states
// (registers, PHY, NVM, interrupts, link, stats) are saved without what
// equals reset, which a load restores by resetting first.
func (n *NIC) SaveState(w *migration.SectionWriter) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	regs := n.saveRegisters()
	pruneRegisters(&regs)
	phy := n.savePHY()
	ref := n.phyReference()
	for k, v := range phy.Regs {
		if page, reg, ok := parsePHYKey(k); ok && ref[page][reg] == v {
			delete(phy.Regs, k)
		}
	}
	stats := n.saveStatsState()
	for k, v := range stats.Counters {
		if v == 0 {
			delete(stats.Counters, k)
		}
	}
	intr := n.saveInterrupts()
	link := n.saveLink()
	puts := []struct {
		name string
		v    any
	}{
		{secRegisters, &regs},
		{secPHY, &phy},
		{secInterrupts, &intr},
		{secRXRing, n.saveRings(rxRings())},
		{secTXRing, n.saveRings(txRings())},
		{secTXContext, n.saveTXContext()},
		{secLink, &link},
		{secPCI, n.savePCI()},
	}
	for _, p := range puts {
		if err := w.PutCanonical(p.name, true, p.v); err != nil {
			return err
		}
	}
	if nv := n.saveNVM(); len(nv.Words) > 0 {
		if err := w.PutCanonical(secNVM, false, &nv); err != nil {
			return err
		}
	}
	if ti, ok := n.saveTXInflight(); ok {
		if err := w.PutCanonical(secTXInflight, true, &ti); err != nil {
			return err
		}
	}
	if n.rxFilter > 0 {
		if err := w.PutCanonical(secFilters, true, n.saveFilters()); err != nil {
			return err
		}
	}
	if err := w.PutCanonical(secStats, false, &stats); err != nil {
		return err
	}
	if f := n.saveRXFIFO(); len(f.Frames) > 0 {
		if err := w.PutCanonical(secRXFIFO, false, &f); err != nil {
			return err
		}
	}
	return nil
}

// pruneRegisters drops what equals reset.
func pruneRegisters(s *RegistersState) {
	for name, v := range s.Regs {
		if r, ok := rowByName(name); ok && v == r.reset {
			delete(s.Regs, name)
		}
	}
	for name, a := range s.Arrays {
		r, ok := rowByName(name)
		if !ok {
			continue
		}
		same := true
		for _, v := range a {
			same = same && v == r.reset
		}
		if same {
			delete(s.Arrays, name)
		}
	}
}

// phyReference is the PHY's reset image.
func (n *NIC) phyReference() *[phyPages][phyRegs]uint16 {
	if n.mig.phyRef == nil {
		tmp := new(NIC)
		tmp.resetPHY()
		ref := tmp.phy
		n.mig.phyRef = &ref
	}
	return n.mig.phyRef
}
