package e1000e

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
	"e1000e-vfu/migration/migrationtest"
)

// newStateNIC builds a quiesced NIC (so timers stand still and two saves
// compare byte for byte) with rx-filter-size filters.
func newStateNIC(t testing.TB, filters int) *NIC {
	t.Helper()
	return newStateNICConfig(t, Config{RXFilterSize: filters})
}

func newStateNICConfig(t testing.TB, cfg Config) *NIC {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	n.Quiesce()
	return n
}

func stCfgWrite(t testing.TB, n *NIC, off int, v ...byte) {
	t.Helper()
	if err := n.WriteRegion(device.RegionConfig, uint64(off), v); err != nil {
		t.Fatal(err)
	}
}

// busyNIC programs every part of the state: rings, filters, MSI-X,
// moderation with running timers, PHY and NVM writes, statistics, a TX
// offload context, a half-sent packet and frames waiting in the FIFO.
func busyNIC(t testing.TB, filters int) *NIC {
	t.Helper()
	return busyNICConfig(t, Config{RXFilterSize: filters})
}

func busyNICConfig(t testing.TB, cfg Config) *NIC {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	// Memory and I/O decoding, no bus master (so nothing is DMAed), MSI-X
	// enabled with vector 1 programmed.
	stCfgWrite(t, n, device.CfgCommand, 0x03, 0x00)
	stCfgWrite(t, n, device.CfgBAR0, 0x00, 0x00, 0x0c, 0xfe)
	stCfgWrite(t, n, capMSIX+3, 0x80)
	var e [16]byte
	binary.LittleEndian.PutUint64(e[0:], 0xfee01000)
	binary.LittleEndian.PutUint32(e[8:], 0x4021)
	if err := n.WriteRegion(device.RegionBAR3, 16, e[:]); err != nil {
		t.Fatal(err)
	}
	w := n.WriteReg
	w(CTRL_EXT, CTRL_EXT_DRV_LOAD|CTRL_EXT_PBA_CLR)
	w(RDBAL0, 0x10000)
	w(RDLEN0, 4096)
	w(RDT0, 200)
	w(TDBAL0, 0x20000)
	w(TDLEN0, 4096)
	w(TDT0, 5)
	w(RCTL, RCTL_EN|rctlBAM|rctlSECRC)
	w(TCTL, TCTL_EN|tctlPSP)
	w(RXCSUM, 0x300)
	w(MTA+4*3, 0x00010000)
	w(VFTA+4, 0x8)
	w(RA+8, 0x33221100)
	w(RA+12, 0x5544|RAH_AV)
	w(IVAR, 0x80000000|0x8<<16|0x9<<8|0xa)
	w(EITR0+4, 500)
	w(IAM, ICR_RXQ0)
	w(EIAC, ICR_RXQ0|ICR_TXQ0)
	w(ITR, 1000)
	w(RDTR, 32)
	w(RADV, 64)
	w(IMS, ICR_LSC|ICR_RXQ0|ICR_TXQ0|ICR_OTHER)
	// A PHY write (page 2 register 0x10) and an NVM word.
	w(MDIC, 0x16<<mdicRegShift|phyAddr<<mdicPHYShift|MDIC_OP_WRITE|2)
	w(MDIC, 0x10<<mdicRegShift|phyAddr<<mdicPHYShift|MDIC_OP_WRITE|0x0099)
	//lint:ignore SA4016 the data field is written as 0 (page 0) like the page 2 select above
	w(MDIC, 0x16<<mdicRegShift|phyAddr<<mdicPHYShift|MDIC_OP_WRITE|0)
	w(EEWR, 0x30<<eerdAddrShift|0xbeef<<eerdDataShift|EERD_START)
	n.mu.Lock()
	n.addStat(GPRC, 12)
	n.addStat(GORCL, 1<<33)
	n.tx.ctx = txContext{ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, hdrLen: 54, mss: 1448, tse: true, ipv4: true, tcp: true, payLen: 9000}
	n.timers.rdtr.arm(1 << 20)
	n.mu.Unlock()
	// Causes pending: OTHER (LSC) in MSI-X mode, and a delayed RX cause.
	w(ICS, ICR_LSC)
	bcast := bytes.Repeat([]byte{0xff}, 6)
	frame := append(append(bcast, 0x52, 0x54, 0, 1, 2, 3, 0x08, 0x00), make([]byte, 50)...)
	for i := 0; i < 3; i++ {
		frame[20] = byte(i)
		n.Receive(frame)
	}
	n.Quiesce()
	return n
}

func kit(t testing.TB, filters int) migrationtest.Device {
	return migrationtest.Device{
		New: func() migration.Stateful {
			return newStateNIC(t, filters)
		},
		Busy: func() migration.Stateful {
			return busyNIC(t, filters)
		},
		MaxMutations: 64,
	}
}

func TestStateConformance(t *testing.T) {
	t.Run("version2", func(t *testing.T) { migrationtest.Run(t, kit(t, -1)) })
	t.Run("version1", func(t *testing.T) { migrationtest.Run(t, kit(t, 0)) })
}

func TestStateRoundTripActive(t *testing.T) {
	src := busyNIC(t, -1)
	b1, err := migration.Save(nil, src, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state of an active NIC: %d bytes", len(b1))
	if len(b1) > 4096 {
		t.Errorf("state is %d bytes, want under 4 KiB", len(b1))
	}
	_, secs, err := migration.Split(b1, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range secs {
		names[s.Name] = true
	}
	for _, want := range []string{secConfig, secRegisters, secNVM, secPHY, secInterrupts, secRXRing, secTXRing,
		secTXInflight, secTXContext, secFilters, secLink, secStats, secPCI, secRXFIFO} {
		if !names[want] {
			t.Errorf("busy NIC's state lacks section %s", want)
		}
	}
	dst := newStateNIC(t, -1)
	if err := migration.Load(b1, dst, migration.Limits{}, nil); err != nil {
		t.Fatal(err)
	}
	b2, err := migration.Save(nil, dst, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("save → load → save differs: %d and %d bytes", len(b1), len(b2))
	}
	// What the guest sees through registers is the same.
	for _, off := range []uint32{CTRL, CTRL_EXT, RCTL, TCTL, RDBAL0, RDLEN0, RDT0, TDT0, IMS, IVAR, ITR, EITR0 + 4, MTA + 12, RA + 12, STATUS} {
		if a, b := src.ReadReg(off), dst.ReadReg(off); a != b {
			t.Errorf("register %#x: source %#x, destination %#x", off, a, b)
		}
	}
	var a, b [16]byte
	src.ReadRegion(device.RegionBAR3, 16, a[:])
	dst.ReadRegion(device.RegionBAR3, 16, b[:])
	if a != b {
		t.Errorf("MSI-X entry 1: source %x, destination %x", a, b)
	}
	if dst.pci.fn.Config.Uint16(device.CfgCommand) != 0x03 || !dst.pci.fn.Config.MSIXEnabled() {
		t.Errorf("config space not restored: command %#x", dst.pci.fn.Config.Uint16(device.CfgCommand))
	}
	if dst.rx.blN != 3 {
		t.Errorf("receive FIFO holds %d frames, want 3", dst.rx.blN)
	}
}

func TestStateVersionCompatibility(t *testing.T) {
	v1 := busyNIC(t, 0)
	b, err := migration.Save(nil, v1, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, secs, _ := migration.Split(b, migration.Limits{})
	for _, s := range secs {
		if s.Name == secFilters {
			t.Error("a version-1 state carries filters")
		}
	}
	// A v2-capable NIC started as version 1 takes it.
	if err := migration.Load(b, newStateNIC(t, 0), migration.Limits{}, nil); err != nil {
		t.Fatalf("version-1 state into a version-1 NIC: %v", err)
	}
	// A version-2 NIC refuses it at the header, and vice versa.
	if err := migration.Load(b, newStateNIC(t, -1), migration.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Errorf("version-1 state into a version-2 NIC: %v, want a refusal naming rx-filter-size", err)
	}
	b2, err := migration.Save(nil, busyNIC(t, -1), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newStateNIC(t, 0)
	before, _ := migration.Save(nil, dst, migration.Limits{})
	_, _, _, err = migration.CheckHeader(b2, dst, migration.Limits{})
	if err == nil || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Errorf("version-2 header into a version-1 NIC: %v, want a refusal naming rx-filter-size", err)
	}
	if err := migration.Load(b2, dst, migration.Limits{}, nil); err == nil {
		t.Error("version-2 state loaded into a version-1 NIC")
	}
	if after, _ := migration.Save(nil, dst, migration.Limits{}); !bytes.Equal(before, after) {
		t.Error("the refused load changed the NIC")
	}
}

func TestStateRefusesOtherMAC(t *testing.T) {
	b, err := migration.Save(nil, busyNIC(t, -1), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := New(Config{MAC: []byte{0x52, 0x54, 0, 9, 9, 9}, RXFilterSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := migration.Load(b, dst, migration.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Errorf("state of another MAC: %v", err)
	}
}

// TestStateTXInflightMustMatchRing: an in-flight packet whose descriptors
// are not where the ring says is refused, and the NIC stays as it was.
func TestStateTXInflightMustMatchRing(t *testing.T) {
	b, err := migration.Save(nil, busyNIC(t, -1), migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	h, secs, err := migration.Split(b, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i, s := range secs {
		if s.Name != secTXInflight {
			continue
		}
		found = true
		var st txInflightState
		if err := s.Decode(&st); err != nil {
			t.Fatal(err)
		}
		if st.Count != 5 || len(st.Descs) != 1 || st.Descs[0] != (descSpan{Addr: 0x20000, Len: 5 * txDescSize}) {
			t.Errorf("in-flight packet %+v, want the 5 descriptors from 0x20000", st)
		}
		st.Descs[0].Addr += txDescSize
		p, err := msgpack.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		secs[i].Payload = p
	}
	if !found {
		t.Fatal("no tx-inflight section")
	}
	bad, err := migration.Assemble(h, secs, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newStateNIC(t, -1)
	before, _ := migration.Save(nil, dst, migration.Limits{})
	if err := migration.Load(bad, dst, migration.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "tx-inflight") {
		t.Errorf("moved in-flight descriptors: %v, want a refusal naming tx-inflight", err)
	}
	if after, _ := migration.Save(nil, dst, migration.Limits{}); !bytes.Equal(before, after) {
		t.Error("the refused load changed the NIC")
	}
}

// A guest can leave a head or tail beyond its ring's length (the engines
// then leave the ring idle): the state still saves, loads and restores the
// registers as the guest left them.
func TestStateRingIndexBeyondLength(t *testing.T) {
	src := newStateNIC(t, -1)
	regs := map[uint32]uint32{RDLEN0: 128, RDT0: 0xFFFF, TDLEN0: 128, TDT0: 0x100}
	for off, v := range regs {
		src.WriteReg(off, v)
	}
	b, err := migration.Save(nil, src, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newStateNIC(t, -1)
	if err := migration.Load(b, dst, migration.Limits{}, nil); err != nil {
		t.Fatalf("a state with a tail beyond its ring refused: %v", err)
	}
	for off, v := range regs {
		if got := dst.ReadReg(off); got != v {
			t.Errorf("register %#x: %#x after the load, want %#x", off, got, v)
		}
	}
}
