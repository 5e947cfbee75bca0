// Package e1000e emulates an Intel 82574L gigabit Ethernet controller as the
// Linux e1000e driver drives it.
//
// The package reaches guest memory, interrupts and the network through small
// interfaces (device.GuestMemory, netdev.Backend) and never imports the
// vfio-user protocol.
package e1000e

import (
	"sync"

	"e1000e-vfu/device"
	"e1000e-vfu/device/netdev"
)

// NIC is one 82574L function. Its mutex guards all device state: register
// accesses from the server, frames from the backend and timers all take it.
//
// The file split is a contract between the two halves of the model:
//   - the core (nic.go, regs*.go, nvm.go, phy.go, intr*.go, link.go,
//     stats.go, pci*.go) owns register storage, interrupts and the PCI glue;
//   - the datapath (tx*.go, rx*.go, desc*.go, offload*.go, filter*.go,
//     rss*.go) owns the rings, descriptors, offloads and filters.
//
// The core offers the datapath, all called with mu held:
//
//	n.reg(off) / n.setReg(off, v)  raw register storage by BAR0 byte offset
//	n.raise(causes)               set ICR causes and deliver per the rules
//	n.busMaster()                 whether DMA is allowed
//	n.addStat(off, delta)         bump a statistics register
//
// and the datapath offers the core, also with mu held:
//
//	n.kickTX()     after a TDT write or when transmit becomes possible
//	n.kickRX()     after an RDT write or when receive becomes possible
//	n.resetRings() on device reset
//
// plus Receive (netdev.Receiver), which takes mu itself.
type NIC struct {
	mu      sync.Mutex
	mem     device.GuestMemory
	backend netdev.Backend

	tx txState
	rx rxState
}

var _ netdev.Receiver = (*NIC)(nil)
