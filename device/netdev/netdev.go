// Package netdev holds network backends that any emulated NIC can use: TAP
// devices, QEMU's stream and datagram socket protocols, a pcap tee, a
// backend that drops everything (None) and an in-memory pair for tests.
// Parse and Open turn a QEMU-style --netdev spec into a backend; README.md
// lists the syntax.
package netdev

// Receiver takes the frames a backend receives. Receive is called from the
// backend's own goroutine, one frame at a time; frame is valid only during
// the call (the backend reuses its buffer) and has no FCS.
type Receiver interface {
	Receive(frame []byte)
}

// Backend moves Ethernet frames between a NIC and the outside.
type Backend interface {
	// Send transmits one frame (no FCS). It does not retain frame. It
	// may be called from several goroutines at once: a NIC's transmit
	// path and its announcer (device/announce) each send.
	Send(frame []byte) error
	// Start begins delivering received frames to rx until Close.
	Start(rx Receiver) error
	// Close stops delivery and releases the backend; Receive is not called
	// once Close has returned.
	Close() error
}
