// Package e1000e emulates an Intel 82574L gigabit Ethernet controller as the
// Linux e1000e driver drives it.
//
// The package reaches guest memory, interrupts and the network through small
// interfaces (device.GuestMemory, netdev.Backend, Interrupter) and never
// imports the vfio-user protocol.
package e1000e

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/device/announce"
	"e1000e-vfu/device/netdev"
)

// NIC is one 82574L function. Its mutex guards all device state: register
// accesses from the server, frames from the backend and timers all take it.
//
// The file split is a contract between the two halves of the model:
//   - the core (nic.go, regs*.go, nvm*.go, phy*.go, intr*.go, link*.go,
//     stats*.go, pci*.go) owns register storage, interrupts and the PCI glue;
//   - the datapath (tx*.go, rx*.go, desc*.go, offload*.go, filter*.go,
//     rss*.go) owns the rings, descriptors, offloads and filters.
//
// The core offers the datapath, all called with mu held:
//
//	n.reg(off) / n.setReg(off, v)  raw register storage by BAR0 byte offset
//	                              (canonical offsets, no side effects)
//	n.raise(causes)               set ICR causes and deliver per the rules
//	n.raiseRX(causes)             same, subject to RDTR/RADV/RAID delays
//	n.raiseTX(causes, ide)        same, subject to TIDV/TADV when ide is set
//	n.busMaster()                 whether DMA is allowed
//	n.addStat(off, delta)         bump a statistics register (saturating;
//	                              64-bit pairs by their low offset)
//	n.loopback()                  whether TX frames loop back to RX
//
// The core's state for migration is in plain structs (RegistersState,
// PHYState, NVMState, InterruptsState, LinkState, StatsState) with
// n.saveX/n.restoreX under mu and a Validate method each.
//
// and the datapath offers the core, also with mu held:
//
//	n.kickTX()     after a TDT or TCTL write or when transmit becomes possible
//	n.kickRX()     after an RDT or RCTL write, on link up or bus master enable
//	n.resetRings() on device reset
//
// A kick may do its work later, on the datapath's worker (datapath.go):
// past a transmit budget, and always when guest memory is reached by
// messages to the client, which the datapath sends without mu.
//
// plus Receive (netdev.Receiver), which takes mu itself.
type NIC struct {
	mu      sync.Mutex
	mem     device.GuestMemory
	backend netdev.Backend
	log     *slog.Logger

	// Register storage by dword index; aliases resolve to one slot.
	mac [bar0Size / 4]uint32
	phy [phyPages][phyRegs]uint16
	nvm [nvmWords]uint16

	regs regFile // the register table, shared by every NIC (regs_table.go)

	perm     [6]byte // the MAC address of the NVM
	rxFilter int     // exact-match RA entries the RX filter honours
	hideMSIX bool    // no MSI-X capability (model parameter hide-msix)
	// caps82574l lays the capability list out as the 82574L does (model
	// parameter caps-82574l); see addStdCaps.
	caps82574l bool

	irq    Interrupter
	intr   intrState
	timers timerSet
	clock  TimerClock // makes the timers

	linkUp       bool // carrier from the backend or the administrator
	autoneg      *nicTimer
	autonegDelay time.Duration

	busMasterOn bool   // PCI command register Bus Master Enable
	ioaddr      uint32 // BAR2 IOADDR
	closed      bool

	tx   txState
	rx   rxState
	work workState // the datapath's worker (datapath.go)

	pci pciState

	mig migState // migration: quiescence and what waits for Resume

	// ann announces the guest's addresses after a load and on demand
	// (announce.go); it has its own lock and goroutine.
	ann           *announce.Announcer
	announceSched announce.Schedule // after a load; off: none
}

var _ netdev.Receiver = (*NIC)(nil)

// Config describes a NIC to build.
type Config struct {
	// MAC is the permanent address (NVM words 0-2). Nil picks a locally
	// administered default.
	MAC net.HardwareAddr
	// Backend carries frames; nil means none (frames are dropped).
	Backend netdev.Backend
	// Logger receives the NIC's logs; nil discards them.
	Logger *slog.Logger
	// RXFilterSize is how many receive-address (RA) entries the exact-match
	// filter honours: 16 is the hardware. 0, the model parameter's off
	// value, turns unicast address filtering off (every unicast frame is
	// accepted). Negative means 16.
	RXFilterSize int
	// HideMSIX leaves the MSI-X capability out of the function (the model
	// parameter hide-msix): drivers then use MSI.
	HideMSIX bool
	// Caps82574L lays out the PCI capability list as the 82574L does
	// (the model parameter caps-82574l). False, the parameter's off
	// value, is the first layout: MSI-X first, PM version 3.
	Caps82574L bool
	// AutonegDelay is how long PHY autonegotiation takes; zero means the
	// 500 ms of QEMU's model.
	AutonegDelay time.Duration
	// Interrupter delivers interrupts; nil means through the PCI
	// function's eventfds (the normal case). Tests set their own.
	Interrupter Interrupter
	// Announce is the schedule of the self-announcement the NIC sends
	// when it first runs after an incoming migration; nil means
	// announce.Default() (QEMU's), zero Rounds none.
	Announce *announce.Schedule
	// AnnounceClock times the announcement's rounds; nil is the real
	// clock. Tests set their own.
	AnnounceClock announce.Clock
	// TimerClock times the interrupt delay, moderation and
	// autonegotiation timers; nil is the real clock. Tests set their own.
	TimerClock TimerClock
}

// defaultMAC is the address used when Config.MAC is nil.
var defaultMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// New builds a NIC in its power-on state with the link up.
func New(cfg Config) (*NIC, error) {
	n := &NIC{
		backend:      cfg.Backend,
		log:          cfg.Logger,
		rxFilter:     cfg.RXFilterSize,
		hideMSIX:     cfg.HideMSIX,
		caps82574l:   cfg.Caps82574L,
		autonegDelay: cfg.AutonegDelay,
		irq:          cfg.Interrupter,
		clock:        cfg.TimerClock,
		linkUp:       true,
		regs:         regFile{rows: regTable, idx: regIdx},
	}
	if n.clock == nil {
		n.clock = realClock{}
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.rxFilter < 0 {
		n.rxFilter = numRA
	}
	if n.rxFilter > numRA {
		return nil, fmt.Errorf("e1000e: rx filter size %d exceeds %d entries", n.rxFilter, numRA)
	}
	if n.autonegDelay <= 0 {
		n.autonegDelay = 500 * time.Millisecond
	}
	n.announceSched = announce.Default()
	if cfg.Announce != nil {
		n.announceSched = *cfg.Announce
	}
	if err := n.announceSched.Validate(); err != nil {
		return nil, fmt.Errorf("e1000e: announce schedule: %w", err)
	}
	switch len(cfg.MAC) {
	case 0:
		n.perm = defaultMAC
	case 6:
		if cfg.MAC[0]&1 != 0 {
			return nil, fmt.Errorf("e1000e: MAC %s is a multicast address", cfg.MAC)
		}
		copy(n.perm[:], cfg.MAC)
	default:
		return nil, errors.New("e1000e: MAC must be 6 bytes")
	}
	var out netdev.Backend = netdev.None{}
	if n.backend != nil {
		out = n.backend
	}
	n.ann = announce.New(announce.Config{Source: n, Sender: out, Clock: cfg.AnnounceClock, Logger: n.log})
	n.initWork()
	n.buildNVM()
	n.initTimers()
	n.autoneg = n.newTimer(n.autonegDone)
	// Without an Interrupter of its own, the NIC signals through the PCI
	// function's eventfds.
	if err := n.pciInit(cfg.Interrupter == nil); err != nil {
		return nil, err
	}

	n.mu.Lock()
	n.resetLocked(false)
	n.mu.Unlock()
	return n, nil
}

// MAC returns the permanent MAC address.
func (n *NIC) MAC() net.HardwareAddr {
	return net.HardwareAddr(append([]byte(nil), n.perm[:]...))
}

// Close stops the NIC's timers and its announcement, waiting for the
// announcer's goroutine; the NIC must not be used afterwards. A datapath
// worker still starting finds the NIC closed and does nothing.
func (n *NIC) Close() error {
	n.mu.Lock()
	n.closed = true
	n.datapathChanged()
	n.stopAllTimers()
	n.autoneg.stop()
	n.mu.Unlock()
	// Without n.mu: a round in progress takes it to read the addresses.
	n.ann.Close()
	return nil
}

// reg returns raw register storage at a canonical BAR0 byte offset.
func (n *NIC) reg(off uint32) uint32 {
	return n.mac[(off>>2)&(bar0Size/4-1)]
}

// setReg writes raw register storage at a canonical BAR0 byte offset.
func (n *NIC) setReg(off, v uint32) {
	n.mac[(off>>2)&(bar0Size/4-1)] = v
}

// busMaster reports whether the guest allows the NIC to master the bus.
// A quiesced NIC (migration) does no DMA at all.
func (n *NIC) busMaster() bool { return n.busMasterOn && n.mem != nil && !n.mig.quiesced }

// loopback reports whether transmitted frames should be received back:
// MAC loopback (RCTL.LBM) or PHY loopback (BMCR bit 14).
func (n *NIC) loopback() bool {
	return n.reg(RCTL)&RCTL_LBM_MASK != 0 || n.phy[0][phyBMCR]&bmcrLoopback != 0
}

// ReadReg reads a BAR0 register as the guest would (with side effects).
func (n *NIC) ReadReg(off uint32) uint32 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readReg(off)
}

// WriteReg writes a BAR0 register as the guest would.
func (n *NIC) WriteReg(off, v uint32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.writeReg(off, v)
}

// resetLocked puts the MAC, PHY and interrupt logic in their reset state.
// A software reset (CTRL.RST) keeps the registers marked keep.
func (n *NIC) resetLocked(soft bool) {
	// A reset ends any announcement, and a loaded state no longer owes
	// one: the guest starts over.
	n.ann.Cancel()
	n.mig.loaded = false
	n.stopAllTimers()
	n.autoneg.stop()
	n.intr = intrState{}
	for i := range n.regs.rows {
		row := &n.regs.rows[i]
		if soft && row.keep {
			continue
		}
		base := row.off / 4
		for d := uint32(0); d < row.n; d++ {
			n.mac[base+d] = row.reset
		}
	}
	n.resetPHY()
	n.loadFromNVM()
	if !n.linkUp {
		n.linkDownRegs()
	}
	n.irq.SetINTx(false)
	n.resetRings()
}
