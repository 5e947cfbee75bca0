package e1000e

import (
	"encoding/binary"
	"testing"
)

// FuzzParseFrame feeds arbitrary frames to every function that reads
// headers: the parser, the checksum verifiers, RSS, header split and the
// filters. Beyond not panicking, the parser's offsets must lie inside the
// frame.
func FuzzParseFrame(f *testing.F) {
	f.Add(buildTCP(f, false, 1, "PF", []byte("seed")))
	f.Add(buildTCP(f, true, 1, "", []byte("seed")))
	v6ext := buildTCP(f, true, 1, "", nil)
	v6ext[14+6] = 0
	f.Add(append(append(v6ext[:54:54], 44, 0, 0, 1, 0, 0, 0, 0), v6ext[54:]...))
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 0x81, 0, 0, 5, 0x08, 0x00, 0x45})
	f.Add([]byte{})
	regs := mapRegs{MRQC: mrqcEnableRSS | 0x3F<<16, RCTL: RCTL_EN | rctlVFE | rctlBAM, VET: etherTypeVLAN}
	f.Fuzz(func(t *testing.T, frame []byte) {
		p := parseFrame(frame, etherTypeVLAN)
		if p.ipv4 || p.ipv6 {
			if p.l3Off < ethHdrLen || p.l3Off > len(frame) {
				t.Fatalf("l3Off %d outside a %d-byte frame", p.l3Off, len(frame))
			}
			if p.ipv4 {
				ipv4HeaderOK(frame, &p)
			}
		}
		if p.l4Off != 0 {
			if !(p.ipv4 || p.ipv6) || p.l4Off <= p.l3Off || p.l4Off+udpHdrLen > len(frame) {
				t.Fatalf("l4Off %d invalid (l3Off %d, len %d)", p.l4Off, p.l3Off, len(frame))
			}
			l4ChecksumOK(frame, &p)
			if h := psHeaderLen(frame, &p, 0, 1<<16); h > len(frame) {
				t.Fatalf("header split length %d past the frame", h)
			}
		}
		rssCompute(regs, frame, &p)
		if len(frame) >= ethHdrLen {
			filterFrame(regs, frame, numRA)
		}
	})
}

// FuzzInsertSum checks checksum insertion against its defining property:
// when the checksum field (zero beforehand) lies inside the summed range at an even offset,
// the range sums to 0xFFFF afterwards; otherwise nothing outside the field
// changes.
func FuzzInsertSum(f *testing.F) {
	f.Add(make([]byte, 60), uint8(14), uint8(24), uint16(33))
	f.Add(make([]byte, 34), uint8(34), uint8(50), uint16(0))
	f.Add([]byte{1, 2, 3}, uint8(0), uint8(1), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, css, cso uint8, cse uint16) {
		// The field starts at zero: what it held would be part of the sum.
		if int(cso)+2 <= len(data) {
			data[cso], data[int(cso)+1] = 0, 0
		}
		orig := append([]byte(nil), data...)
		insertSum(data, int(css), int(cso), int(cse))
		for i := range data {
			if data[i] != orig[i] && (i < int(cso) || i > int(cso)+1) {
				t.Fatalf("byte %d changed outside the checksum field", i)
			}
		}
		n := len(data)
		if cse != 0 && int(cse) < n {
			n = int(cse) + 1
		}
		if int(css) < n && int(cso) >= int(css) && int(cso)+2 <= n && (int(cso)-int(css))%2 == 0 {
			if s := csumFold(csumAdd(0, data[css:n])); s != 0xFFFF {
				t.Fatalf("range sums to %#x after insertion", s)
			}
		}
	})
}

// FuzzTSOSegment runs segmentation on arbitrary headers and contexts: no
// panic, and every segment within the buffer.
func FuzzTSOSegment(f *testing.F) {
	seed := buildTCP(f, false, 1, "", make([]byte, 300))
	ctx := txContextDesc(tsoContext(false, 300-54, 100), 0)
	f.Add(seed, ctx, byte(3))
	f.Add(buildTCP(f, true, 1, "", make([]byte, 300)), txContextDesc(tsoContext(true, 300-74, 7), 0), byte(2))
	f.Fuzz(func(t *testing.T, pkt, ctxDesc []byte, popts byte) {
		if len(ctxDesc) < txDescSize || len(pkt) > txMaxPacket {
			return
		}
		var c txContext
		c.load(txDesc(ctxDesc[:txDescSize]))
		if !tsoUsable(pkt, &c, popts, etherTypeVLAN) {
			return
		}
		seg := make([]byte, txBufSize)
		payload := len(pkt) - c.hdrLen
		for off, i := 0, 0; off < payload && i < 64; i++ {
			nb := min(c.mss, payload-off)
			s := seg[:c.hdrLen+nb]
			copy(s, pkt[:c.hdrLen])
			copy(s[c.hdrLen:], pkt[c.hdrLen+off:])
			tsoFixup(s, &c, popts, uint16(i), uint32(off), 1, off+nb >= payload)
			if c.ipv4 && binary.BigEndian.Uint16(s[c.ipcss+2:]) != uint16(len(s)-c.ipcss) {
				t.Fatal("IPv4 length not rewritten")
			}
			off += nb
		}
	})
}
