package e1000e

import (
	"errors"
	"fmt"

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
		model.Caps82574L:   model.BoolValue(n.caps82574l),
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
	pci      PCIState
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
	case secNVM:
		err = s.Decode(&l.nvm)
	case secPHY:
		err = s.Decode(&l.phy)
	case secInterrupts:
		err = s.Decode(&l.intr)
	case secRXRing:
		err = s.Decode(&l.rx)
		if err == nil {
			err = l.rx.check(rxRings())
		}
	case secTXRing:
		err = s.Decode(&l.tx)
		if err == nil {
			err = l.tx.check(txRings())
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
	if err := n.checkConfig(&l.cfg); err != nil {
		return err
	}
	if l.inflight != nil {
		if err := l.inflight.checkRing(txQueue(0).loaded(l.tx.Queues[0])); err != nil {
			return fmt.Errorf("e1000e: tx-inflight: %w", err)
		}
	}
	var err error
	l.cfgTarget, l.cfgWrite, err = n.preparePCI(&l.pci)
	return err
}

// Apply installs the state. The config space goes first, without n.mu
// (its hooks take it); then the NIC under n.mu.
func (l *nicLoader) Apply() error {
	n := l.n
	target, write := l.cfgTarget, l.cfgWrite
	if target == nil {
		return errors.New("e1000e: apply before validate")
	}
	if err := n.restorePCIConfig(&l.pci, target, write); err != nil {
		return err
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

	n.restoreRings(rxRings(), &l.rx)
	n.restoreRings(txRings(), &l.tx)
	n.restoreTXInflight(l.inflight)
	n.restoreTXContext(&l.ctx)
	n.restoreFilters(l.filters)
	n.restorePCI(&l.pci)
	n.restoreRXFIFO(&l.fifo)
	// After resetLocked, which clears it: the NIC owes the network an
	// announcement when it next runs.
	n.mig.loaded = true
	if !n.mig.quiesced && !n.closed {
		n.deliverLocked()
	}
}
