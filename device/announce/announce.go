// Package announce tells a learning switch where a NIC's addresses are now:
// after a live migration, and when an operator asks, it sends RARP
// broadcasts from each address in rounds, as QEMU's self-announce does for
// the NICs it emulates. It knows nothing of the NIC: a Source supplies the
// addresses, read again at every round, and a Sender (a netdev.Backend)
// carries the frames.
package announce

// Address is one identity to announce: a MAC address, untagged or on one
// VLAN.
type Address struct {
	MAC [6]byte
	// Tagged sends the frame with an 802.1Q tag carrying VLAN.
	Tagged bool
	VLAN   uint16
}

// MaxAddresses bounds the addresses announced in one round (untagged and
// tagged copies together): 16 receive addresses on a few hundred VLANs fit;
// a Source offering more is cut short, and the cut is logged.
const MaxAddresses = 4096

// Source supplies the addresses to announce. It is called from the
// announcer's own goroutine and from Start, never with the announcer's
// lock held, and may append to dst.
type Source interface {
	AnnounceAddresses(dst []Address) []Address
}

// Sender carries frames; netdev.Backend is one. Send must be safe to call
// while the NIC sends frames of its own.
type Sender interface {
	Send(frame []byte) error
}
