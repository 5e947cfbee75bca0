package e1000e

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"e1000e-vfu/device"
)

// Offloads are checked by an independent parser: gopacket decodes every
// frame the NIC sends and verifies lengths, sequence numbers and checksums.

var (
	dpSrcMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC}
	dpDstMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	dpSrc4   = net.IP{192, 0, 2, 1}
	dpDst4   = net.IP{198, 51, 100, 7}
	dpSrc6   = net.ParseIP("2001:db8::1")
	dpDst6   = net.ParseIP("2001:db8:ffff::42")
)

// buildTCP serialises an Ethernet/IP/TCP frame with correct lengths and
// checksums.
func buildTCP(t testing.TB, v6 bool, seq uint32, flags string, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: dpSrcMAC, DstMAC: dpDstMAC, EthernetType: layers.EthernetTypeIPv4}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: seq, Ack: 77, Window: 512, ACK: true}
	for _, f := range flags {
		switch f {
		case 'P':
			tcp.PSH = true
		case 'F':
			tcp.FIN = true
		case 'C':
			tcp.CWR = true
		}
	}
	var netl gopacket.SerializableLayer
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: dpSrc6, DstIP: dpDst6}
		tcp.SetNetworkLayerForChecksum(ip)
		netl = ip
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 0x1234, Protocol: layers.IPProtocolTCP, SrcIP: dpSrc4, DstIP: dpDst4}
		tcp.SetNetworkLayerForChecksum(ip)
		netl = ip
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, netl, tcp, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pseudoPartial is what Linux leaves in the TCP checksum field for an
// offload: the folded pseudo-header sum, with the L4 length for checksum
// offload and without it for TSO.
func pseudoPartial(frame []byte, v6 bool, l4Len int) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	if v6 {
		add(frame[14+8 : 14+40])
	} else {
		add(frame[14+12 : 14+20])
	}
	sum += ipProtoTCP + uint32(l4Len)
	for sum > 0xFFFF {
		sum = sum&0xFFFF + sum>>16
	}
	return uint16(sum)
}

// asTSO turns a finished frame into what the driver hands to the NIC for
// TSO: IP length and checksum zero, TCP checksum the length-less pseudo sum.
func asTSO(frame []byte, v6 bool) {
	l4 := 14 + 20
	if v6 {
		l4 = 14 + 40
		binary.BigEndian.PutUint16(frame[14+4:], 0)
	} else {
		binary.BigEndian.PutUint16(frame[14+2:], 0)
		binary.BigEndian.PutUint16(frame[14+10:], 0)
	}
	binary.BigEndian.PutUint16(frame[l4+16:], pseudoPartial(frame, v6, 0))
}

// asCsumOffload leaves the checksums to the NIC: IP checksum zero, TCP
// checksum the pseudo sum with length.
func asCsumOffload(frame []byte, v6 bool) {
	l4 := 14 + 20
	if v6 {
		l4 = 14 + 40
	} else {
		binary.BigEndian.PutUint16(frame[14+10:], 0)
	}
	binary.BigEndian.PutUint16(frame[l4+16:], pseudoPartial(frame, v6, len(frame)-l4))
}

// tsoContext is the context descriptor Linux's e1000_tso writes.
func tsoContext(v6 bool, payLen, mss int) txContext {
	c := txContext{ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, hdrLen: 54,
		payLen: payLen, mss: mss, tse: true, ipv4: true, tcp: true}
	if v6 {
		c = txContext{ipcss: 14, ipcso: 24, ipcse: 0, tucss: 54, tucso: 70, hdrLen: 74,
			payLen: payLen, mss: mss, tse: true, tcp: true}
	}
	return c
}

// sendFragmented puts frame in guest memory and queues it as data
// descriptors of at most frag bytes.
func (r *dpRig) sendFragmented(frame []byte, frag int, firstCmd uint32, popts byte, lastCmd uint32, special uint16, ctx []byte) {
	r.mem.put(dpTxBuf, frame)
	var descs [][]byte
	if ctx != nil {
		descs = append(descs, ctx)
	}
	for off := 0; off < len(frame); off += frag {
		n := min(frag, len(frame)-off)
		cmd := uint32(0)
		p := byte(0)
		if off == 0 {
			cmd |= firstCmd
			p = popts
		}
		if off+n == len(frame) {
			cmd |= lastCmd | txdCmdEOP | txdCmdRS
		}
		descs = append(descs, txDataDesc(dpTxBuf+uint64(off), n, cmd, p, special))
	}
	r.pushTX(descs...)
}

func ipv4ChecksumValid(t *testing.T, ip *layers.IPv4) bool {
	t.Helper()
	want := ip.Checksum
	buf := gopacket.NewSerializeBuffer()
	cp := *ip
	if err := cp.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
		t.Fatal(err)
	}
	return cp.Checksum == want
}

func testTSO(t *testing.T, v6 bool) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	payload := make([]byte, 65000)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	const seq0, mss = 1_000_000, 1448
	frame := buildTCP(t, v6, seq0, "PF", payload)
	asTSO(frame, v6)
	c := tsoContext(v6, len(payload), mss)
	popts := byte(txdPoptsTXSM)
	if !v6 {
		popts |= txdPoptsIXSM
	}
	r.sendFragmented(frame, 4096, txdCmdTSE, popts, 0, 0, txContextDesc(c, 0))

	frames := r.be.take()
	want := (len(payload) + mss - 1) / mss
	if len(frames) != want {
		t.Fatalf("%d segments, want %d", len(frames), want)
	}
	got := 0
	for i, f := range frames {
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("segment %d: %v", i, el.Error())
		}
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			t.Fatalf("segment %d: no TCP layer", i)
		}
		if v6 {
			ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if int(ip.Length) != len(f)-14-40 {
				t.Errorf("segment %d: IPv6 payload length %d, frame %d", i, ip.Length, len(f))
			}
			tcp.SetNetworkLayerForChecksum(ip)
		} else {
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if int(ip.Length) != len(f)-14 {
				t.Errorf("segment %d: IPv4 length %d, frame %d", i, ip.Length, len(f))
			}
			if ip.Id != uint16(0x1234+i) {
				t.Errorf("segment %d: IP id %#x, want %#x", i, ip.Id, 0x1234+i)
			}
			if !ipv4ChecksumValid(t, ip) {
				t.Errorf("segment %d: bad IPv4 header checksum %#x", i, ip.Checksum)
			}
			tcp.SetNetworkLayerForChecksum(ip)
		}
		if cs, err := tcp.ComputeChecksum(); err != nil || cs != 0 {
			t.Errorf("segment %d: TCP checksum does not verify (%#x, %v)", i, cs, err)
		}
		if tcp.Seq != uint32(seq0+got) {
			t.Errorf("segment %d: seq %d, want %d", i, tcp.Seq, seq0+got)
		}
		last := i == len(frames)-1
		if tcp.PSH != last || tcp.FIN != last || !tcp.ACK {
			t.Errorf("segment %d: flags PSH %v FIN %v ACK %v", i, tcp.PSH, tcp.FIN, tcp.ACK)
		}
		if !last && len(tcp.Payload) != mss {
			t.Errorf("segment %d: payload %d, want MSS %d", i, len(tcp.Payload), mss)
		}
		if !bytes.Equal(tcp.Payload, payload[got:got+len(tcp.Payload)]) {
			t.Fatalf("segment %d: payload differs", i)
		}
		got += len(tcp.Payload)
	}
	if got != len(payload) {
		t.Errorf("segments carry %d bytes, want %d", got, len(payload))
	}
	if r.stat(TSCTC) != 1 {
		t.Errorf("TSCTC %d, want 1", r.stat(TSCTC))
	}
	if st := r.txDesc(r.txTail - 1)[12]; st&txdStatDD == 0 {
		t.Error("last data descriptor not written back")
	}
}

func TestTSOIPv4(t *testing.T) { testTSO(t, false) }
func TestTSOIPv6(t *testing.T) { testTSO(t, true) }

func TestChecksumOffload(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		r := newRig(t, device.IRQModeMSIX, Config{})
		frame := buildTCP(t, v6, 5, "P", []byte("some payload of odd length"))
		asCsumOffload(frame, v6)
		c := tsoContext(v6, 0, 0)
		c.tse = false
		popts := byte(txdPoptsTXSM)
		if !v6 {
			popts |= txdPoptsIXSM
		}
		r.sendFragmented(frame, 16, 0, popts, 0, 0, txContextDesc(c, 0))
		frames := r.be.take()
		if len(frames) != 1 {
			t.Fatalf("v6=%v: %d frames, want 1", v6, len(frames))
		}
		pkt := gopacket.NewPacket(frames[0], layers.LayerTypeEthernet, gopacket.Default)
		tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if v6 {
			tcp.SetNetworkLayerForChecksum(pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6))
		} else {
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ipv4ChecksumValid(t, ip) {
				t.Errorf("bad IPv4 header checksum")
			}
			tcp.SetNetworkLayerForChecksum(ip)
		}
		if cs, _ := tcp.ComputeChecksum(); cs != 0 {
			t.Errorf("v6=%v: TCP checksum does not verify", v6)
		}
	}
}

func TestLegacyChecksumInsertion(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	frame := buildTCP(t, false, 9, "", []byte("legacy"))
	binary.BigEndian.PutUint16(frame[50:], pseudoPartial(frame, false, len(frame)-34))
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txLegacyDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS|txdCmdIC, 34, 50))
	frames := r.be.take()
	if len(frames) != 1 {
		t.Fatalf("%d frames, want 1", len(frames))
	}
	pkt := gopacket.NewPacket(frames[0], layers.LayerTypeEthernet, gopacket.Default)
	tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	tcp.SetNetworkLayerForChecksum(pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4))
	if cs, _ := tcp.ComputeChecksum(); cs != 0 {
		t.Error("TCP checksum from a legacy descriptor does not verify")
	}
}

func TestVLANInsertAndStrip(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(CTRL, r.rd(CTRL)|CTRL_VME)
	frame := buildTCP(t, false, 1, "", []byte("tagged"))
	r.sendFragmented(frame, 2048, 0, 0, txdCmdVLE, 0x6123, nil)
	frames := r.be.take()
	if len(frames) != 1 {
		t.Fatalf("%d frames, want 1", len(frames))
	}
	pkt := gopacket.NewPacket(frames[0], layers.LayerTypeEthernet, gopacket.Default)
	q, _ := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q)
	if q == nil || q.VLANIdentifier != 0x123 || q.Priority != 3 {
		t.Fatalf("no 802.1Q tag with VID 0x123 and priority 3: %v", pkt)
	}
	if pkt.Layer(layers.LayerTypeTCP) == nil || len(frames[0]) != len(frame)+4 {
		t.Fatalf("tagged frame is not the original plus 4 bytes")
	}

	// The tagged frame comes back: CTRL.VME strips the tag into the
	// descriptor.
	idx := r.rxTail
	r.pushRX(1)
	r.n.Receive(frames[0])
	d := rxExtDesc(r.rxDesc(idx))
	if d.statusError()&rxdStatVP == 0 || d.vlan() != 0x6123 {
		t.Fatalf("status %#x vlan %#x, want VP and 0x6123", d.statusError(), d.vlan())
	}
	got := r.mem.get(r.rxBufAddr(idx), len(frame))
	if !bytes.Equal(got, frame) {
		t.Fatal("stripped frame differs from the untagged original")
	}
}

func TestRXChecksumStatus(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(RXCSUM, rxcsumIPOFL|rxcsumTUOFL)
	good := buildTCP(t, false, 3, "", []byte("checked"))
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xFF
	badIP := append([]byte(nil), good...)
	badIP[14+8]-- // TTL without fixing the header checksum
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint32
		nowan uint32
	}{
		{"good", good, rxdStatIPCS | rxdStatTCPCS, rxdExtErrTCPE | rxdExtErrIPE},
		{"bad tcp", bad, rxdStatIPCS | rxdStatTCPCS | rxdExtErrTCPE, rxdExtErrIPE},
		{"bad ip", badIP, rxdStatIPCS | rxdExtErrIPE, 0},
	} {
		idx := r.rxTail
		r.pushRX(1)
		r.n.Receive(c.frame)
		st := rxExtDesc(r.rxDesc(idx)).statusError()
		if st&c.want != c.want || st&c.nowan != 0 {
			t.Errorf("%s: status %#x, want %#x set and %#x clear", c.name, st, c.want, c.nowan)
		}
	}
}

func TestRSSToeplitzVectors(t *testing.T) {
	// The verification suite of Microsoft's RSS specification.
	key := []byte{0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d,
		0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4,
		0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b,
		0xbe, 0xac, 0x01, 0xfa}
	regs := mapRegs{MRQC: mrqcEnableRSS | mrqcFieldIPv4 | mrqcFieldTCPIPv4 | mrqcFieldIPv6 | mrqcFieldTCPv6}
	for i := 0; i < 10; i++ {
		regs[uint32(RSSRK+4*i)] = binary.LittleEndian.Uint32(key[4*i:])
	}
	regs[RETA] = 0x80 // entry 0 → queue 1
	for _, c := range []struct {
		src, dst        string
		sport, dport    uint16
		ipHash, tcpHash uint32
		ipType, tcpType uint32
	}{
		{"66.9.149.187", "161.142.100.80", 2794, 1766, 0x323e8fc2, 0x51ccc178, rssTypeIPv4, rssTypeTCPIPv4},
		{"199.92.111.2", "65.69.140.83", 14230, 4739, 0xd718262a, 0xc626b0ea, rssTypeIPv4, rssTypeTCPIPv4},
		{"3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794, 1766, 0x2cc18cd5, 0x40207d3d, rssTypeIPv6, rssTypeTCPIPv6},
	} {
		src, dst := net.ParseIP(c.src), net.ParseIP(c.dst)
		v6 := src.To4() == nil
		eth := &layers.Ethernet{SrcMAC: dpSrcMAC, DstMAC: dpDstMAC, EthernetType: layers.EthernetTypeIPv4}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(c.sport), DstPort: layers.TCPPort(c.dport)}
		var ipl gopacket.SerializableLayer
		if v6 {
			eth.EthernetType = layers.EthernetTypeIPv6
			ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
			tcp.SetNetworkLayerForChecksum(ip)
			ipl = ip
		} else {
			ip := &layers.IPv4{Version: 4, IHL: 5, Protocol: layers.IPProtocolTCP, SrcIP: src.To4(), DstIP: dst.To4()}
			tcp.SetNetworkLayerForChecksum(ip)
			ipl = ip
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, ipl, tcp); err != nil {
			t.Fatal(err)
		}
		f := buf.Bytes()
		p := parseFrame(f, etherTypeVLAN)
		res := rssCompute(regs, f, &p)
		if res.hash != c.tcpHash || res.typ != c.tcpType {
			t.Errorf("%s: TCP hash %#x type %d, want %#x type %d", c.src, res.hash, res.typ, c.tcpHash, c.tcpType)
		}
		wantQ := uint32(0)
		if c.tcpHash&0x7F == 0 {
			wantQ = 1
		}
		if res.queue != wantQ {
			t.Errorf("%s: queue %d, want %d", c.src, res.queue, wantQ)
		}
		// Without the TCP field the hash covers the addresses only.
		regs[MRQC] &^= mrqcFieldTCPIPv4 | mrqcFieldTCPv6
		res = rssCompute(regs, f, &p)
		regs[MRQC] |= mrqcFieldTCPIPv4 | mrqcFieldTCPv6
		if res.hash != c.ipHash || res.typ != c.ipType {
			t.Errorf("%s: IP hash %#x type %d, want %#x type %d", c.src, res.hash, res.typ, c.ipHash, c.ipType)
		}
	}
	// RSS off: no hash.
	off := mapRegs{}
	p := parseFrame(buildTCP(t, false, 1, "", nil), etherTypeVLAN)
	if res := rssCompute(off, buildTCP(t, false, 1, "", nil), &p); res.typ != rssTypeNone {
		t.Errorf("RSS disabled still hashed: %+v", res)
	}
}

func TestRSSInWriteBack(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(MRQC, mrqcEnableRSS|mrqcFieldIPv4|mrqcFieldTCPIPv4)
	// Linux sets RXCSUM.PCSD with RSS; stored raw so the test does not
	// depend on the register's write mask.
	r.n.mu.Lock()
	r.n.setReg(RXCSUM, rxcsumPCSD|rxcsumIPOFL|rxcsumTUOFL)
	r.n.mu.Unlock()
	for i := 0; i < 10; i++ {
		r.w(uint32(RSSRK+4*i), 0x01020304*uint32(i+1))
	}
	f := buildTCP(t, false, 1, "", []byte("hash me"))
	idx := r.rxTail
	r.pushRX(1)
	r.n.Receive(f)
	d := r.rxDesc(idx)
	p := parseFrame(f, etherTypeVLAN)
	r.n.mu.Lock()
	want := rssCompute(r.n, f, &p)
	r.n.mu.Unlock()
	if want.typ != rssTypeTCPIPv4 || want.hash == 0 {
		t.Fatalf("unexpected reference hash %+v", want)
	}
	if got := binary.LittleEndian.Uint32(d[4:]); got != want.hash {
		t.Errorf("write-back RSS hash %#x, want %#x", got, want.hash)
	}
	if got := binary.LittleEndian.Uint32(d[0:]) & 0xF; got != rssTypeTCPIPv4 {
		t.Errorf("write-back RSS type %d, want %d", got, rssTypeTCPIPv4)
	}
}

// Every TSO segment carries the VLAN tag of the EOP descriptor, inserted
// after the checksums (which do not cover it).
func TestTSOWithVLAN(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.w(CTRL, r.rd(CTRL)|CTRL_VME)
	payload := make([]byte, 10000)
	for i := range payload {
		payload[i] = byte(i)
	}
	frame := buildTCP(t, false, 42, "P", payload)
	asTSO(frame, false)
	r.sendFragmented(frame, 3000, txdCmdTSE, txdPoptsIXSM|txdPoptsTXSM, txdCmdVLE, 0x0064,
		txContextDesc(tsoContext(false, len(payload), 1000), 0))
	frames := r.be.take()
	if len(frames) != 10 {
		t.Fatalf("%d segments, want 10", len(frames))
	}
	for i, f := range frames {
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		q, _ := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q)
		if q == nil || q.VLANIdentifier != 100 {
			t.Fatalf("segment %d: no VLAN 100 tag", i)
		}
		ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		tcp.SetNetworkLayerForChecksum(ip)
		if cs, _ := tcp.ComputeChecksum(); cs != 0 || !ipv4ChecksumValid(t, ip) {
			t.Fatalf("segment %d: checksums do not verify", i)
		}
		if tcp.Seq != uint32(42+1000*i) || len(tcp.Payload) != 1000 {
			t.Fatalf("segment %d: seq %d payload %d", i, tcp.Seq, len(tcp.Payload))
		}
	}
}

// A TSO send in MAC loopback arrives as MSS-sized frames whose checksums
// the receive side verifies: the two halves agree.
func TestTSOLoopbackChecksums(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		r := newRig(t, device.IRQModeMSIX, Config{})
		r.w(RCTL, r.rd(RCTL)|rctlLBMMAC|rctlSECRC)
		r.w(RXCSUM, rxcsumIPOFL|rxcsumTUOFL)
		r.pushRX(50)
		payload := make([]byte, 20000)
		for i := range payload {
			payload[i] = byte(i * 13)
		}
		frame := buildTCP(t, v6, 7, "", payload)
		asTSO(frame, v6)
		popts := byte(txdPoptsTXSM)
		if !v6 {
			popts |= txdPoptsIXSM
		}
		mss := 1460 // segments of 1514 bytes, the most without RCTL.LPE
		if v6 {
			mss = 1440
		}
		r.sendFragmented(frame, 8192, txdCmdTSE, popts, 0, 0, txContextDesc(tsoContext(v6, len(payload), mss), 0))
		want := (len(payload) + mss - 1) / mss
		if h := r.rd(RDH0); h != uint32(want) {
			t.Fatalf("v6=%v: %d frames looped back, want %d", v6, h, want)
		}
		for i := uint32(0); i < uint32(want); i++ {
			st := rxExtDesc(r.rxDesc(i)).statusError()
			ok := uint32(rxdStatDD | rxdStatEOP | rxdStatTCPCS)
			if !v6 {
				ok |= rxdStatIPCS
			}
			if st&ok != ok || st&(rxdExtErrTCPE|rxdExtErrIPE) != 0 {
				t.Fatalf("v6=%v frame %d: status %#x", v6, i, st)
			}
		}
	}
}
