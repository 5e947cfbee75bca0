package e1000e

import "encoding/binary"

// MRQC bits (0x5818): RSS enable and the hash field selections.
const (
	mrqcEnableMask   = 0x00000003
	mrqcEnableRSS    = 0x00000001
	mrqcFieldTCPIPv4 = 0x00010000
	mrqcFieldIPv4    = 0x00020000
	mrqcFieldTCPIPv6 = 0x00040000 // TCP over IPv6 with extension headers
	mrqcFieldIPv6Ex  = 0x00080000
	mrqcFieldIPv6    = 0x00100000
	mrqcFieldTCPv6   = 0x00200000 // TCP over IPv6 without extension headers
)

// RSS types reported in the low bits of the write-back's MRQ field.
const (
	rssTypeNone    = 0
	rssTypeTCPIPv4 = 1
	rssTypeIPv4    = 2
	rssTypeTCPIPv6 = 3
	rssTypeIPv6Ex  = 4
	rssTypeIPv6    = 5
)

// rssKeyLen is the size of RSSRK: ten registers.
const rssKeyLen = 40

// rssResult is the hash of one frame and the queue RETA chose for it.
type rssResult struct {
	typ   uint32
	hash  uint32
	queue uint32
}

// mrq is the write-back MRQ field: the RSS type and the queue.
func (r rssResult) mrq() uint32 { return r.typ | r.queue<<8 }

// rssCompute hashes a parsed frame when MRQC enables RSS and selects a field
// set that matches it; otherwise the result has type none.
func rssCompute(r regReader, frame []byte, p *pktInfo) rssResult {
	mrqc := r.reg(MRQC)
	if mrqc&mrqcEnableMask != mrqcEnableRSS {
		return rssResult{}
	}
	var (
		in  [36]byte // addresses and ports: at most 16+16+2+2 bytes
		n   int
		typ uint32
	)
	tcp := p.proto == ipProtoTCP && p.l4Off != 0
	switch {
	case p.ipv4:
		a := frame[p.l3Off+12 : p.l3Off+20]
		switch {
		case tcp && mrqc&mrqcFieldTCPIPv4 != 0:
			n = copy(in[:], a)
			n += copy(in[n:], frame[p.l4Off:p.l4Off+4])
			typ = rssTypeTCPIPv4
		case mrqc&mrqcFieldIPv4 != 0:
			n = copy(in[:], a)
			typ = rssTypeIPv4
		}
	case p.ipv6:
		a := frame[p.l3Off+8 : p.l3Off+40]
		tcpOn := mrqcFieldTCPv6
		if p.ipv6Ext {
			tcpOn = mrqcFieldTCPIPv6
		}
		switch {
		case tcp && mrqc&uint32(tcpOn) != 0:
			n = copy(in[:], a)
			n += copy(in[n:], frame[p.l4Off:p.l4Off+4])
			typ = rssTypeTCPIPv6
		case p.ipv6Ext && mrqc&mrqcFieldIPv6Ex != 0:
			n = copy(in[:], a)
			typ = rssTypeIPv6Ex
		case mrqc&(mrqcFieldIPv6|mrqcFieldIPv6Ex) != 0:
			n = copy(in[:], a)
			typ = rssTypeIPv6
		}
	}
	if typ == rssTypeNone {
		return rssResult{}
	}
	var key [rssKeyLen]byte
	for i := 0; i < rssKeyLen/4; i++ {
		binary.LittleEndian.PutUint32(key[4*i:], r.reg(uint32(RSSRK+4*i)))
	}
	h := toeplitz(&key, in[:n])
	// RETA holds 128 one-byte entries; bit 7 of the entry picks the queue.
	idx := h & 0x7F
	entry := r.reg(uint32(RETA+4*(idx/4))) >> (8 * (idx % 4)) & 0xFF
	return rssResult{typ: typ, hash: h, queue: entry >> 7}
}

// toeplitz computes the Toeplitz hash of in with key: for every set bit of
// the input, the 32 key bits starting at that bit position are XORed into the
// result. in is at most 36 bytes, so the key window never runs past 40 bytes.
func toeplitz(key *[rssKeyLen]byte, in []byte) uint32 {
	var h uint32
	window := binary.BigEndian.Uint32(key[:4])
	for i, b := range in {
		next := key[i+4]
		for bit := 7; bit >= 0; bit-- {
			if b&(1<<bit) != 0 {
				h ^= window
			}
			window = window<<1 | uint32(next>>bit&1)
		}
	}
	return h
}
