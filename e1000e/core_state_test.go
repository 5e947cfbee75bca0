package e1000e

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"e1000e-vfu/device"
)

// coreState bundles the core's sections for the round-trip tests.
type coreState struct {
	Regs  RegistersState
	PHY   PHYState
	NVM   NVMState
	Intr  InterruptsState
	Link  LinkState
	Stats StatsState
}

func saveCore(n *NIC) coreState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return coreState{n.saveRegisters(), n.savePHY(), n.saveNVM(), n.saveInterrupts(), n.saveLink(), n.saveStatsState()}
}

func (s *coreState) validate() error {
	for _, v := range []interface{ Validate() error }{&s.Regs, &s.PHY, &s.NVM, &s.Intr, &s.Link, &s.Stats} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func restoreCore(n *NIC, s *coreState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.restoreRegisters(&s.Regs)
	n.restorePHY(&s.PHY)
	n.restoreNVM(&s.NVM)
	n.restoreInterrupts(&s.Intr)
	n.restoreLink(&s.Link)
	n.restoreStats(&s.Stats)
}

// roundTrip encodes and decodes through msgpack, as the stream does.
func roundTrip(t *testing.T, s coreState) coreState {
	t.Helper()
	b, err := msgpack.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	var out coreState
	if err := msgpack.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCoreStateRoundTrip(t *testing.T) {
	src, _ := newNICWith(t, device.IRQModeMSIX, Config{AutonegDelay: 5 * time.Second})
	d := driver{t, src}
	src.WriteReg(RDBAL0, 0x10000)
	src.WriteReg(MTA+4*7, 0xF0F0)
	src.WriteReg(RA+8, 0x44332211)
	src.WriteReg(RA+12, 0x6655|RAH_AV)
	src.WriteReg(IVAR, 0x800A0908)
	src.WriteReg(EIAC, ICR_RXQ0)
	src.WriteReg(IMS, ICR_RXQ0|ICR_OTHER|ICR_LSC)
	src.WriteReg(EITR0+4, 300)
	src.WriteReg(EEWR, 0x1234<<16|0x30<<eerdAddrShift|EERD_START)
	d.writePHY(phyPage, 2)
	d.writePHY(0x10, 0x0ABC)
	d.writePHY(phyPage, 0)
	d.writePHY(phyBMCR, 0x1140|bmcrRestartAN) // autoneg runs for 5 s
	src.mu.Lock()
	src.addStat(GPRC, 12)
	src.addStat(GORCL, 1<<40)
	src.mu.Unlock()
	src.HoldTimers()

	st := roundTrip(t, saveCore(src))
	if err := st.validate(); err != nil {
		t.Fatal(err)
	}
	if !st.Link.Autoneg || st.Link.AutonegLeft <= 0 {
		t.Fatalf("autonegotiation not saved: %+v", st.Link)
	}
	if len(st.NVM.Words) != 1 || st.NVM.Words[0x30] != 0x1234 {
		t.Fatalf("NVM diff %v", st.NVM.Words)
	}

	dst, _ := newNICWith(t, device.IRQModeMSIX, Config{AutonegDelay: 5 * time.Second})
	dst.HoldTimers()
	restoreCore(dst, &st)
	again := roundTrip(t, saveCore(dst))
	if !reflect.DeepEqual(st, again) {
		t.Fatalf("state changed over save/restore/save:\n%+v\n%+v", st, again)
	}
	dd := driver{t, dst}
	if dst.ReadReg(MTA+4*7) != 0xF0F0 || dst.ReadReg(IVAR) != 0x800A0908 {
		t.Fatal("registers not restored")
	}
	dd.writePHY(phyPage, 2)
	if v, _ := dd.readPHY(0x10); v != 0x0ABC {
		t.Fatalf("PHY page 2 reg 0x10 = %#x", v)
	}
	if dst.Stats()["GORC"] != 1<<40 {
		t.Fatal("64-bit counter not restored")
	}
}

func TestCoreStateRejectsBadInput(t *testing.T) {
	n, _ := newNICWith(t, device.IRQModeMSI, Config{})
	good := saveCore(n)
	cases := []struct {
		name   string
		mutate func(s *coreState)
		want   string
	}{
		{"unknown register", func(s *coreState) { s.Regs.Regs["BOGUS"] = 1 }, "unknown register"},
		{"stat as register", func(s *coreState) { s.Regs.Regs["GPRC"] = 1 }, "belongs in section stats"},
		{"constant as register", func(s *coreState) { s.Regs.Regs["FWSM"] = 0 }, "unknown register"},
		{"short array", func(s *coreState) { s.Regs.Arrays["MTA"] = make([]uint32, 64) }, "has 64 entries"},
		{"long array", func(s *coreState) { s.Regs.Arrays["VFTA"] = make([]uint32, 1000) }, "has 1000 entries"},
		{"receive addresses", func(s *coreState) { s.Regs.Arrays["RA"] = make([]uint32, 2*numRA) }, "belongs in section filters"},
		{"read-only bits", func(s *coreState) { s.Regs.Regs["GCR"] = 0 }, "read-only"},
		{"reset in CTRL", func(s *coreState) { s.Regs.Regs["CTRL"] |= CTRL_RST }, "reset"},
		{"flash EECD", func(s *coreState) { s.Regs.Regs["EECD"] |= eecdFlash }, "NVM"},
		{"ring register", func(s *coreState) { s.Regs.Regs["RDLEN0"] = 0x80 }, "belongs in section rx-ring"},
		{"unimplemented bits", func(s *coreState) { s.Regs.Regs["PBS"] = 0x40 }, "read-only"},
		{"self-clearing bits", func(s *coreState) { s.Regs.Regs["CTRL_EXT"] = CTRL_EXT_EE_RST }, "self-clearing"},
		{"PHY id", func(s *coreState) { s.PHY.Regs["0.02"] = 0x1234 }, "identity"},
		{"PHY page", func(s *coreState) { s.PHY.Regs["9.10"] = 1 }, "unknown"},
		{"PHY key", func(s *coreState) { s.PHY.Regs["zz"] = 1 }, "unknown"},
		{"NVM word", func(s *coreState) { s.NVM.Words = map[uint8]uint16{200: 1} }, "beyond"},
		{"IMS bits", func(s *coreState) { s.Intr.IMS = 0x40000000 }, "IMS"},
		{"timer too long", func(s *coreState) { s.Intr.Timers = map[string]int64{"rdtr": int64(time.Second)} }, "left"},
		{"negative timer", func(s *coreState) { s.Intr.Timers = map[string]int64{"itr": -1} }, "left"},
		{"unknown timer", func(s *coreState) { s.Intr.Timers = map[string]int64{"x": 1} }, "unknown timer"},
		{"EITR width", func(s *coreState) { s.Intr.EITR[4] = 0x10000 }, "EITR4"},
		{"status bits", func(s *coreState) { s.Link.Status = STATUS_GIO_MASTER_ENABLE }, "computed"},
		{"autoneg forever", func(s *coreState) { s.Link.Autoneg, s.Link.AutonegLeft = true, int64(time.Hour) }, "left"},
		{"stat width", func(s *coreState) { s.Stats.Counters = map[string]uint64{"GPRC": 1 << 33} }, "32 bits"},
		{"stat name", func(s *coreState) { s.Stats.Counters = map[string]uint64{"GORCH": 1} }, "unknown counter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := roundTrip(t, good)
			c.mutate(&s)
			err := s.validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	s := roundTrip(t, good)
	if err := s.validate(); err != nil {
		t.Fatalf("fresh state refused: %v", err)
	}
}

// TestHeldTimersDoNotFire: a held (quiesced) NIC raises nothing from its
// timers; releasing them delivers what was due.
func TestHeldTimersDoNotFire(t *testing.T) {
	clk := newFakeClock()
	n, irq := newNICWith(t, device.IRQModeMSI, Config{TimerClock: clk})
	n.WriteReg(IMS, ICR_RXT0)
	n.WriteReg(RDTR, 1000) // about 1 ms
	n.mu.Lock()
	n.raiseRX(ICR_RXT0)
	for _, t := range n.allTimers() {
		t.hold()
	}
	n.mu.Unlock()
	clk.advance(time.Second)
	if irq.snapshot().msi != 0 {
		t.Fatal("held timer fired")
	}
	// The timer runs on with the time it had left.
	n.ReleaseTimers()
	clk.advance(1000*delayUnit - 1)
	if irq.snapshot().msi != 0 {
		t.Fatal("released timer fired early")
	}
	clk.advance(1)
	if irq.snapshot().msi != 1 {
		t.Fatal("released timer did not fire")
	}
}
