package announce

import (
	"encoding/binary"
	"slices"
)

// RARP frame layout (RFC 903): an Ethernet header, optionally an 802.1Q
// tag, and an ARP-format payload with opcode 3, padded to the Ethernet
// minimum.
const (
	EtherTypeRARP = 0x8035
	EtherTypeVLAN = 0x8100 // the 802.1Q tag protocol identifier

	// FrameLen is the length of an untagged announcement: the 60-byte
	// Ethernet minimum without FCS. A tagged one is TaggedFrameLen, the
	// same payload behind a 4-byte tag.
	FrameLen       = 60
	TaggedFrameLen = FrameLen + 4

	rarpPayloadLen   = 28
	rarpOpReverseReq = 3
	arpHTypeEthernet = 1
	arpPTypeIPv4     = 0x0800
)

// AppendRARP appends to b the frame announcing a: a broadcast RARP reverse
// request whose sender and target hardware addresses are both a.MAC and
// whose protocol addresses are 0.0.0.0, sent from a.MAC, tagged with
// a.VLAN when a.Tagged (priority 0). The frame is FrameLen or
// TaggedFrameLen bytes.
func AppendRARP(b []byte, a Address) []byte {
	n := FrameLen
	if a.Tagged {
		n = TaggedFrameLen
	}
	start := len(b)
	b = slices.Grow(b, n)[:start+n]
	f := b[start:]
	clear(f)
	for i := 0; i < 6; i++ {
		f[i] = 0xFF
	}
	copy(f[6:12], a.MAC[:])
	p := f[12:]
	if a.Tagged {
		binary.BigEndian.PutUint16(p[0:], EtherTypeVLAN)
		binary.BigEndian.PutUint16(p[2:], a.VLAN&0x0FFF)
		p = p[4:]
	}
	binary.BigEndian.PutUint16(p[0:], EtherTypeRARP)
	r := p[2 : 2+rarpPayloadLen]
	binary.BigEndian.PutUint16(r[0:], arpHTypeEthernet)
	binary.BigEndian.PutUint16(r[2:], arpPTypeIPv4)
	r[4], r[5] = 6, 4
	binary.BigEndian.PutUint16(r[6:], rarpOpReverseReq)
	copy(r[8:14], a.MAC[:])  // sender hardware address; sender IP 0.0.0.0
	copy(r[18:24], a.MAC[:]) // target hardware address; target IP 0.0.0.0
	return b
}
