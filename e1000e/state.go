package e1000e

import (
	"encoding/binary"
	"strconv"

	"e1000e-vfu/device"
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

// rxFIFOMaxBytes bounds the frames the rx-fifo section carries; beyond it
// frames are left behind, as a full packet buffer drops them.
const rxFIFOMaxBytes = 2 << 20

type configState struct {
	RXFilterSize int    `msgpack:"rx-filter-size"`
	MAC          []byte `msgpack:"mac"`
	HideMSIX     bool   `msgpack:"hide-msix,omitempty"`
}

// txInflightState describes a packet whose descriptors the NIC has seen
// but not sent. The NIC consumes a packet's descriptors only once its EOP
// descriptor is in the ring, so the packet is exactly the Count
// descriptors from Head, which lie in guest memory at Descs (one span, or
// two when they wrap around the ring): the destination re-reads them and
// sends the packet once the rest arrives. Discard says the NIC is dropping
// the rest of an oversized packet up to its EOP.
type txInflightState struct {
	Head    uint32     `msgpack:"head"`
	Count   uint32     `msgpack:"count"`
	Descs   []descSpan `msgpack:"descs"`
	Discard bool       `msgpack:"discard,omitempty"`
}

// descSpan is a run of descriptors in guest memory.
type descSpan struct {
	Addr uint64 `msgpack:"addr"`
	Len  uint32 `msgpack:"len"`
}

type txContextState struct {
	IPCSS  int  `msgpack:"ipcss,omitempty"`
	IPCSO  int  `msgpack:"ipcso,omitempty"`
	IPCSE  int  `msgpack:"ipcse,omitempty"`
	TUCSS  int  `msgpack:"tucss,omitempty"`
	TUCSO  int  `msgpack:"tucso,omitempty"`
	TUCSE  int  `msgpack:"tucse,omitempty"`
	PayLen int  `msgpack:"paylen,omitempty"`
	HdrLen int  `msgpack:"hdrlen,omitempty"`
	MSS    int  `msgpack:"mss,omitempty"`
	TSE    bool `msgpack:"tse,omitempty"`
	IPv4   bool `msgpack:"ipv4,omitempty"`
	TCP    bool `msgpack:"tcp,omitempty"`
}

type raEntry struct {
	Index uint8  `msgpack:"index"`
	Low   uint32 `msgpack:"low"`
	High  uint32 `msgpack:"high"`
}

type filtersState struct {
	RA []raEntry `msgpack:"ra"`
}

type cfgRun struct {
	Off  uint16 `msgpack:"off"`
	Data []byte `msgpack:"data"`
}

type msixEntry struct {
	Vector uint8  `msgpack:"vector"`
	Addr   uint64 `msgpack:"addr"`
	Data   uint32 `msgpack:"data"`
	Ctrl   uint32 `msgpack:"ctrl"`
}

type pciStateS struct {
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

type rxFIFOState struct {
	Frames [][]byte `msgpack:"frames"`
}

var _ migration.Stateful = (*NIC)(nil)

// Model implements migration.Stateful.
func (n *NIC) Model() string { return model.E1000EName }

// Params implements migration.Stateful: each parameter not at its off value
// (rx-filter-size 0, hide-msix false).
func (n *NIC) Params() []migration.Param {
	var ps []migration.Param
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
	return w.PutCanonical(secConfig, true, &configState{RXFilterSize: n.rxFilter, MAC: n.perm[:], HideMSIX: n.hideMSIX})
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
		{secRXRing, n.saveRings(rxQueue)},
		{secTXRing, n.saveRings(txQueue)},
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

// notInRegisters are the registers other sections carry: the rings, and
// the receive address table ("filters", or nothing at all when
// rx-filter-size is 0).
var notInRegisters = [...]string{"RA",
	"RDBAL0", "RDBAH0", "RDLEN0", "RDH0", "RDT0", "RDBAL1", "RDBAH1", "RDLEN1", "RDH1", "RDT1",
	"TDBAL0", "TDBAH0", "TDLEN0", "TDH0", "TDT0", "TDBAL1", "TDBAH1", "TDLEN1", "TDH1", "TDT1"}

// pruneRegisters drops what other sections carry and what equals reset.
func pruneRegisters(s *RegistersState) {
	for _, name := range notInRegisters {
		delete(s.Regs, name)
		delete(s.Arrays, name)
	}
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

// saveTXInflight reports the packet the NIC holds between TDH and TDT, if
// any.
func (n *NIC) saveTXInflight() (txInflightState, bool) {
	r := txQueue(0).view(n)
	// A step under way without n.mu has committed nothing: ctx and
	// discard are still as they stand at TDH.
	s := txInflightState{Head: r.head, Count: r.avail(), Discard: n.tx.discard}
	s.Descs = r.spans(s.Count)
	return s, s.Count > 0 || s.Discard
}

func (n *NIC) saveTXContext() *txContextState {
	c := &n.tx.ctx
	return &txContextState{
		IPCSS: c.ipcss, IPCSO: c.ipcso, IPCSE: c.ipcse,
		TUCSS: c.tucss, TUCSO: c.tucso, TUCSE: c.tucse,
		PayLen: c.payLen, HdrLen: c.hdrLen, MSS: c.mss,
		TSE: c.tse, IPv4: c.ipv4, TCP: c.tcp,
	}
}

func (n *NIC) saveFilters() *filtersState {
	s := &filtersState{RA: []raEntry{}}
	for i := 0; i < numRA; i++ {
		lo, hi := n.mac[RA>>2+2*i], n.mac[RA>>2+2*i+1]
		if lo|hi != 0 {
			s.RA = append(s.RA, raEntry{Index: uint8(i), Low: lo, High: hi})
		}
	}
	return s
}

// pciReference is a function in its reset state, for saving only what the
// guest changed in config space.
func (n *NIC) pciReference() *device.Function {
	if n.mig.cfgRef == nil {
		tmp := &NIC{perm: n.perm, hideMSIX: n.hideMSIX}
		if err := tmp.pciInit(false); err != nil {
			// pciInit only fails on a layout error, which New has
			// already ruled out for this NIC.
			return n.pci.fn
		}
		n.mig.cfgRef = tmp.pci.fn
	}
	return n.mig.cfgRef
}

func (n *NIC) savePCI() *pciStateS {
	s := &pciStateS{IOAddr: n.ioaddr, PBA: n.mig.pendingMSIX,
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

func (n *NIC) saveRXFIFO() rxFIFOState {
	var s rxFIFOState
	total := 0
	for k := 0; k < n.rx.blN; k++ {
		f := n.rx.backlog[(n.rx.blHead+k)%rxBacklogMax]
		if total+len(f) > rxFIFOMaxBytes {
			n.log.Warn("e1000e: receive FIFO too large to migrate whole; later frames stay behind", "frames", n.rx.blN-k)
			break
		}
		total += len(f)
		s.Frames = append(s.Frames, f)
	}
	return s
}
