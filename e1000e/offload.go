package e1000e

import "encoding/binary"

// Packet parsing and checksum arithmetic shared by transmit offloads, the
// receive checksum status and RSS. Every function here works on a frame as
// the guest or the wire gave it: offsets are checked against the frame's
// length before any access, and loops over headers are bounded.

// Ethernet and IP constants.
const (
	ethHdrLen     = 14
	vlanTagLen    = 4
	ethMinFrame   = 60 // without FCS
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86DD
	etherTypeVLAN = 0x8100

	ipProtoTCP = 6
	ipProtoUDP = 17

	ipv4MinHdr = 20
	ipv6HdrLen = 40
	tcpMinHdr  = 20
	udpHdrLen  = 8

	// maxIPv6ExtHeaders bounds the walk over an IPv6 extension header chain.
	maxIPv6ExtHeaders = 8
)

// pktInfo is what the parser learned about a frame. Offsets are from the
// start of the frame; l4Off is 0 when there is no usable L4 header.
type pktInfo struct {
	vlan    bool   // an 802.1Q tag follows the MAC addresses
	tci     uint16 // the tag, when vlan
	l3Off   int
	ipv4    bool
	ipv6    bool
	l4Off   int
	proto   byte // L4 protocol, once extension headers are skipped
	frag    bool // an IP fragment: no checksum or port-based hashing
	ipv6Ext bool // the IPv6 header was followed by extension headers
}

// parseFrame classifies frame. vet is the VLAN ether type (VET register).
// It never fails: what it cannot recognise stays unset.
func parseFrame(frame []byte, vet uint16) pktInfo {
	var p pktInfo
	p.parse(frame, vet)
	return p
}

// parse is parseFrame into p, for a pktInfo that lives in a longer-lived
// struct: filling it in place spares the copy of a returned one.
func (p *pktInfo) parse(frame []byte, vet uint16) {
	*p = pktInfo{}
	if len(frame) < ethHdrLen {
		return
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	if et == vet && len(frame) >= ethHdrLen+vlanTagLen {
		p.vlan = true
		p.tci = binary.BigEndian.Uint16(frame[14:])
		off += vlanTagLen
		et = binary.BigEndian.Uint16(frame[off:])
	}
	off += 2
	p.l3Off = off
	switch et {
	case etherTypeIPv4:
		parseIPv4(frame, p)
	case etherTypeIPv6:
		parseIPv6(frame, p)
	}
}

func parseIPv4(frame []byte, p *pktInfo) {
	off := p.l3Off
	if len(frame) < off+ipv4MinHdr || frame[off]>>4 != 4 {
		return
	}
	ihl := int(frame[off]&0x0F) * 4
	if ihl < ipv4MinHdr || len(frame) < off+ihl {
		return
	}
	p.ipv4 = true
	p.proto = frame[off+9]
	fragField := binary.BigEndian.Uint16(frame[off+6:])
	p.frag = fragField&0x3FFF != 0 // MF or a fragment offset
	if !p.frag {
		p.l4Off = off + ihl
		p.checkL4(frame)
	}
}

func parseIPv6(frame []byte, p *pktInfo) {
	off := p.l3Off
	if len(frame) < off+ipv6HdrLen || frame[off]>>4 != 6 {
		return
	}
	p.ipv6 = true
	next := frame[off+6]
	off += ipv6HdrLen
	for i := 0; i < maxIPv6ExtHeaders; i++ {
		var n int
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(frame) < off+2 {
				return
			}
			n = (int(frame[off+1]) + 1) * 8
		case 51: // authentication header
			if len(frame) < off+2 {
				return
			}
			n = (int(frame[off+1]) + 2) * 4
		case 44: // fragment
			if len(frame) < off+8 {
				return
			}
			if binary.BigEndian.Uint16(frame[off+2:])&0xFFF9 != 0 {
				p.frag = true
			}
			n = 8
		default:
			p.proto = next
			p.l4Off = off
			p.checkL4(frame)
			return
		}
		if len(frame) < off+n {
			return
		}
		p.ipv6Ext = true
		next = frame[off]
		off += n
	}
	// Too many extension headers: treat as having no L4 header.
}

// checkL4 drops the L4 offset when the frame cannot hold the L4 header.
func (p *pktInfo) checkL4(frame []byte) {
	if p.frag {
		p.l4Off = 0
		return
	}
	switch p.proto {
	case ipProtoTCP:
		if len(frame) < p.l4Off+tcpMinHdr {
			p.l4Off = 0
			return
		}
		doff := int(frame[p.l4Off+12]>>4) * 4
		if doff < tcpMinHdr || len(frame) < p.l4Off+doff {
			p.l4Off = 0
		}
	case ipProtoUDP:
		if len(frame) < p.l4Off+udpHdrLen {
			p.l4Off = 0
		}
	default:
		p.l4Off = 0
	}
}

// csumAdd adds b, as big-endian 16-bit words starting at b[0], to the
// one's-complement accumulator sum. An odd last byte is the high half of a
// word. The result is not folded.
func csumAdd(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// csumFold folds the accumulator into 16 bits (not complemented).
func csumFold(sum uint64) uint16 {
	for sum>>16 != 0 {
		sum = (sum & 0xFFFF) + sum>>16
	}
	return uint16(sum)
}

// insertSum implements the checksum insertion of a context or legacy
// descriptor: the one's-complement sum of data from css through cse
// (inclusive; 0 means the end of the packet) is complemented and stored
// big-endian at cso. An offset outside the packet, or a checksum field that
// does not fit before the end, leaves the packet unchanged.
func insertSum(data []byte, css, cso, cse int) {
	n := len(data)
	if cse != 0 && cse < n {
		n = cse + 1
	}
	if css >= n || cso+2 > n {
		return
	}
	v := ^csumFold(csumAdd(0, data[css:n]))
	if v == 0 {
		v = 0xFFFF // a zero UDP checksum would mean "none"
	}
	binary.BigEndian.PutUint16(data[cso:], v)
}

// pseudoSum is the one's-complement sum of the TCP/UDP pseudo-header of the
// packet described by p, for an L4 length of l4Len bytes.
func pseudoSum(frame []byte, p *pktInfo, l4Len int) uint64 {
	var sum uint64
	if p.ipv4 {
		sum = csumAdd(0, frame[p.l3Off+12:p.l3Off+20])
	} else {
		sum = csumAdd(0, frame[p.l3Off+8:p.l3Off+40])
	}
	return sum + uint64(p.proto) + uint64(l4Len)
}

// ipv4HeaderOK verifies the IPv4 header checksum of a parsed frame.
func ipv4HeaderOK(frame []byte, p *pktInfo) bool {
	ihl := int(frame[p.l3Off]&0x0F) * 4
	return csumFold(csumAdd(0, frame[p.l3Off:p.l3Off+ihl])) == 0xFFFF
}

// l4ChecksumOK verifies the TCP or UDP checksum of a parsed frame whose l4Off
// is set. The L4 length comes from the IP header, bounded by the frame (a
// padded short frame carries bytes that are not part of the datagram).
// zeroUDP reports an IPv4 UDP datagram sent without a checksum.
func l4ChecksumOK(frame []byte, p *pktInfo) (ok, zeroUDP bool) {
	end := len(frame)
	if p.ipv4 {
		if e := p.l3Off + int(binary.BigEndian.Uint16(frame[p.l3Off+2:])); e < end {
			end = e
		}
	} else {
		if e := p.l3Off + ipv6HdrLen + int(binary.BigEndian.Uint16(frame[p.l3Off+4:])); e < end {
			end = e
		}
	}
	if end <= p.l4Off {
		return false, false
	}
	if p.proto == ipProtoUDP && p.ipv4 && binary.BigEndian.Uint16(frame[p.l4Off+6:]) == 0 {
		return true, true
	}
	l4 := frame[p.l4Off:end]
	return csumFold(csumAdd(pseudoSum(frame, p, len(l4)), l4)) == 0xFFFF, false
}
