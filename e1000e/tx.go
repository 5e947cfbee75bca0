package e1000e

import (
	"encoding/binary"
)

// Transmit. A packet is processed only once its EOP descriptor is inside
// [TDH, TDT): until then TDH stays at its first descriptor and nothing of it
// is held, so the packet in flight is exactly the ring's descriptors from
// TDH on (what migration saves), never a half-gathered buffer. Context
// descriptors take effect as they are read. A packet that cannot end well
// (too many descriptors, too long, unreadable) is consumed and dropped, and
// its remaining descriptors up to EOP are discarded.

// Transmit limits. A packet may span at most txMaxDataDescs data
// descriptors (QEMU's limit since CVE-2020-16092) and txMaxPacket bytes (a
// 64 KiB TSO payload plus its headers); the scan for a packet's end looks at
// no more than txMaxScan descriptors. Anything beyond is consumed and
// dropped, so a guest cannot make one doorbell do unbounded work.
const (
	txMaxDataDescs = 64
	txMaxScan      = 256
	txMaxPacket    = 0x10000 + 0x200
	// txHeadroom in front of a packet leaves room to insert a VLAN tag in
	// place; txTailroom behind it room to pad a short frame.
	txHeadroom = vlanTagLen
	txTailroom = ethMinFrame
	txBufSize  = txHeadroom + txMaxPacket + txTailroom

	tctlPSP = 0x00000008 // TCTL: pad short packets
)

// txContext is the offload context the last context descriptor set: where
// the IP and TCP/UDP checksums start, go and end, and how to segment.
type txContext struct {
	ipcss, ipcso, ipcse int
	tucss, tucso, tucse int
	payLen, hdrLen, mss int
	tse                 bool // TCP segmentation enabled
	ipv4                bool // IPv4 (else IPv6) for segmentation
	tcp                 bool // TCP (else UDP)
}

func (c *txContext) load(d txDesc) {
	cmd := d.cmdLen()
	*c = txContext{
		ipcss: d.ipcss(), ipcso: d.ipcso(), ipcse: d.ipcse(),
		tucss: d.tucss(), tucso: d.tucso(), tucse: d.tucse(),
		payLen: d.payLen(), hdrLen: d.hdrLen(), mss: d.mss(),
		tse:  cmd&txdCmdTSE != 0,
		ipv4: cmd&txdCmdIP != 0,
		tcp:  cmd&txdCmdTCP != 0,
	}
}

// txWriteBack is a descriptor whose status is due once its packet is done.
type txWriteBack struct {
	idx   uint32
	upper uint32 // status dword to write, DD set
	ide   bool
}

// txPacketOpts are the per-packet offload requests of its descriptors.
type txPacketOpts struct {
	popts    byte // IXSM/TXSM, from the first data descriptor
	tse      bool // TSE, from the first data descriptor
	legacyIC bool // a legacy descriptor asked for checksum insertion
	css, cso int  // its start and offset
	vle      bool // insert a VLAN tag (EOP descriptor)
	tci      uint16
}

// txState is the transmit side's runtime state: the offload context, and
// whether the rest of an oversized packet is being discarded. Buffers are
// allocated on first use and reused for every packet.
type txState struct {
	ctx     txContext
	discard bool

	buf  []byte // the gathered packet at txHeadroom
	seg  []byte // one TSO segment at txHeadroom
	desc [txDescSize]byte
	wb   [txMaxScan]txWriteBack
	// status holds a write-back's bytes: a buffer passed to GuestMemory
	// lives here rather than on the stack, which would move it to the heap.
	status [4]byte

	// Packets dropped: oversized, too many descriptors, DMA errors, bad TSO.
	dropped uint64
}

func (t *txState) ensureBuffers() {
	if t.buf == nil {
		t.buf = make([]byte, txBufSize)
		t.seg = make([]byte, txBufSize)
	}
}

// txRing is a transmit ring as its registers describe it.
type txRing struct {
	base             uint64
	size, head, tail uint32 // in descriptors
}

// kickTX processes transmit descriptors from TDH up to TDT. Called with
// n.mu held. It does nothing when transmit is disabled, DMA is not allowed,
// or the ring registers are inconsistent (a tail beyond the ring).
func (n *NIC) kickTX() {
	if n.reg(TCTL)&TCTL_EN == 0 || !n.busMaster() {
		return
	}
	r := txRing{
		base: uint64(n.reg(TDBAH0))<<32 | uint64(n.reg(TDBAL0)),
		size: n.reg(TDLEN0) / txDescSize,
		head: n.reg(TDH0),
		tail: n.reg(TDT0),
	}
	if r.size == 0 || r.head >= r.size || r.tail >= r.size || r.head == r.tail {
		return
	}
	n.tx.ensureBuffers()
	var (
		causes uint32
		ide    bool
	)
	// Every step consumes at least one descriptor or stops, so the walk
	// ends within one turn of the ring.
	for budget := r.size; r.head != r.tail && budget > 0; {
		next, c, i, ok := n.txStep(&r)
		if !ok {
			break
		}
		budget -= min(budget, (next+r.size-r.head)%r.size)
		r.head = next
		n.setReg(TDH0, next)
		causes |= c
		ide = ide || i
	}
	if r.head == r.tail {
		causes |= ICR_TXQE
	}
	// Raising nothing would still release causes the delay timers hold.
	if causes != 0 {
		n.raiseTX(causes, ide)
	}
}

// txDoneCause is the cause a descriptor write-back raises.
func (n *NIC) txDoneCause() uint32 {
	if n.irq.Mode() == IRQModeMSIX {
		return ICR_TXQ0
	}
	return ICR_TXDW
}

// readTxDesc copies descriptor idx of r into n.tx.desc.
func (n *NIC) readTxDesc(r *txRing, idx uint32) (txDesc, error) {
	d := n.tx.desc[:]
	if err := n.mem.Read(r.base+uint64(idx)*txDescSize, d); err != nil {
		return nil, err
	}
	return txDesc(d), nil
}

// txStep handles what starts at r.head: a lone context descriptor, or a
// whole packet up to its EOP descriptor. It returns the new head, the causes
// of the write-backs and whether one asked for a delayed interrupt; ok is
// false when nothing can be done yet (the packet's end is not in the ring,
// or a descriptor cannot be read).
func (n *NIC) txStep(r *txRing) (next uint32, causes uint32, ide, ok bool) {
	t := &n.tx
	var (
		opts   txPacketOpts
		nwb    int
		ndata  int
		pktLen int
		eop    bool
	)
	everyWB := n.reg(IVAR)&IVAR_INT_ON_ALL_WB != 0
	i := r.head
	for steps := 0; ; steps++ {
		if i == r.tail || steps >= txMaxScan {
			if !t.discard && ndata <= txMaxDataDescs && steps < txMaxScan {
				return r.head, 0, false, false // wait for the rest
			}
			// Too many descriptors without an end: drop what we have
			// and keep discarding up to the next EOP.
			if !t.discard {
				t.dropped++
			}
			t.discard = true
			break
		}
		d, err := n.readTxDesc(r, i)
		if err != nil {
			// Nothing is consumed: the next doorbell retries.
			n.log.Debug("e1000e: tx descriptor read", "index", i, "err", err)
			return r.head, 0, false, false
		}
		idx := i
		i = (i + 1) % r.size
		cmd := d.cmdLen()
		if cmd&txdCmdRS != 0 || everyWB {
			t.wb[nwb] = txWriteBack{
				idx:   idx,
				upper: binary.LittleEndian.Uint32(d[12:]) | txdStatDD,
				ide:   cmd&txdCmdIDE != 0,
			}
			nwb++
		}
		if d.isContext() {
			t.ctx.load(d)
			if ndata == 0 && !t.discard {
				break // a context descriptor on its own
			}
			continue
		}
		var length int
		if d.isData() {
			length = d.dataLen()
			if ndata == 0 {
				opts.popts = d.popts()
				opts.tse = cmd&txdCmdTSE != 0
			}
		} else { // legacy
			length = d.legacyLen()
			if ndata == 0 && cmd&txdCmdIC != 0 {
				opts.legacyIC = true
				opts.css, opts.cso = d.legacyCSS(), d.legacyCSO()
			}
		}
		ndata++
		if ndata > txMaxDataDescs && !t.discard {
			t.discard = true
			t.dropped++
		}
		if !t.discard && length > 0 {
			if pktLen+length > txMaxPacket {
				t.discard = true
				t.dropped++
			} else if err := n.mem.Read(d.addr(), t.buf[txHeadroom+pktLen:txHeadroom+pktLen+length]); err != nil {
				n.log.Debug("e1000e: tx buffer read", "addr", d.addr(), "len", length, "err", err)
				t.discard = true
				t.dropped++
			} else {
				pktLen += length
			}
		}
		if cmd&txdCmdEOP != 0 {
			opts.vle = cmd&txdCmdVLE != 0
			opts.tci = d.special()
			eop = true
			break
		}
	}
	if eop {
		if !t.discard && pktLen > 0 {
			n.txPacket(&opts, pktLen)
		}
		t.discard = false
	}
	for k := 0; k < nwb; k++ {
		w := &t.wb[k]
		binary.LittleEndian.PutUint32(t.status[:], w.upper)
		if err := n.mem.Write(r.base+uint64(w.idx)*txDescSize+12, t.status[:]); err != nil {
			n.log.Debug("e1000e: tx write-back", "index", w.idx, "err", err)
			continue
		}
		causes |= n.txDoneCause()
		ide = w.ide
	}
	return i, causes, ide, true
}

// txPacket applies the offloads to the gathered packet and sends it, as
// TSO segments when both the context and the packet ask for segmentation.
func (n *NIC) txPacket(o *txPacketOpts, pktLen int) {
	t := &n.tx
	pkt := t.buf[txHeadroom : txHeadroom+pktLen]
	c := &t.ctx
	if o.tse && c.tse {
		n.txTSO(o, pkt)
		return
	}
	if o.legacyIC {
		insertSum(pkt, o.css, o.cso, 0)
	}
	if o.popts&txdPoptsTXSM != 0 {
		insertSum(pkt, c.tucss, c.tucso, c.tucse)
	}
	if o.popts&txdPoptsIXSM != 0 {
		insertSum(pkt, c.ipcss, c.ipcso, c.ipcse)
	}
	n.txEmit(o, t.buf, pktLen)
}

// tsoUsable checks that a packet and the context agree well enough to
// segment: an IPv4 or IPv6 header at IPCSS, and every field segmentation
// rewrites inside the header length.
func tsoUsable(pkt []byte, c *txContext, popts byte, vet uint16) bool {
	hdr := c.hdrLen
	if c.mss == 0 || hdr == 0 || hdr >= len(pkt) {
		return false
	}
	p := parseFrame(pkt, vet)
	if !(p.ipv4 || p.ipv6) || p.l3Off != c.ipcss || p.ipv4 != c.ipv4 {
		return false
	}
	ipEnd := c.ipcss + ipv6HdrLen
	if c.ipv4 {
		ipEnd = c.ipcss + ipv4MinHdr
	}
	l4End := c.tucss + udpHdrLen
	if c.tcp {
		l4End = c.tucss + tcpMinHdr
	}
	if ipEnd > hdr || l4End > hdr || c.tucss < ipEnd {
		return false
	}
	if popts&txdPoptsTXSM != 0 && c.tucso+2 > hdr {
		return false
	}
	return true
}

// txTSO cuts a packet into segments of at most MSS payload bytes, each with
// a copy of the headers fixed up for its place in the stream.
func (n *NIC) txTSO(o *txPacketOpts, pkt []byte) {
	t := &n.tx
	c := &t.ctx
	if !tsoUsable(pkt, c, o.popts, n.vet()) {
		t.dropped++
		n.addStat(TSCTFC, 1)
		return
	}
	hdr := c.hdrLen
	payload := len(pkt) - hdr
	var seq uint32
	var id uint16
	if c.tcp {
		seq = binary.BigEndian.Uint32(pkt[c.tucss+4:])
	}
	if c.ipv4 {
		id = binary.BigEndian.Uint16(pkt[c.ipcss+4:])
	}
	// payload ≤ txMaxPacket and mss ≥ 1 bound the loop.
	for off, i := 0, 0; off < payload; i++ {
		nb := min(c.mss, payload-off)
		seg := t.seg[txHeadroom : txHeadroom+hdr+nb]
		copy(seg, pkt[:hdr])
		copy(seg[hdr:], pkt[hdr+off:hdr+off+nb])
		tsoFixup(seg, c, o.popts, uint16(i), seq+uint32(off), id, off+nb >= payload)
		n.txEmit(o, t.seg, len(seg))
		off += nb
	}
	n.addStat(TSCTC, 1)
}

// tsoFixup rewrites the headers of one segment: IP length and (IPv4) id,
// TCP sequence number and flags (FIN and PSH only on the last segment) or
// UDP length, and the checksums the packet asked for. tsoUsable has checked
// every offset against the header length.
func tsoFixup(seg []byte, c *txContext, popts byte, i uint16, seq uint32, id uint16, last bool) {
	if c.ipv4 {
		binary.BigEndian.PutUint16(seg[c.ipcss+2:], uint16(len(seg)-c.ipcss))
		binary.BigEndian.PutUint16(seg[c.ipcss+4:], id+i)
	} else {
		binary.BigEndian.PutUint16(seg[c.ipcss+4:], uint16(len(seg)-c.ipcss-ipv6HdrLen))
	}
	l4Len := len(seg) - c.tucss
	if c.tcp {
		binary.BigEndian.PutUint32(seg[c.tucss+4:], seq)
		if !last {
			seg[c.tucss+13] &^= 0x09 // FIN, PSH
		}
	} else {
		binary.BigEndian.PutUint16(seg[c.tucss+4:], uint16(l4Len))
	}
	if popts&txdPoptsTXSM != 0 {
		// The driver leaves the pseudo-header sum without the length in
		// the checksum field; the length is this segment's.
		s := uint64(binary.BigEndian.Uint16(seg[c.tucso:])) + uint64(l4Len)
		binary.BigEndian.PutUint16(seg[c.tucso:], csumFold(s))
		insertSum(seg, c.tucss, c.tucso, c.tucse)
	}
	if popts&txdPoptsIXSM != 0 {
		insertSum(seg, c.ipcss, c.ipcso, c.ipcse)
	}
}

// vet is the VLAN ether type; a zero register means the 802.1Q default.
func (n *NIC) vet() uint16 {
	if v := uint16(n.reg(VET)); v != 0 {
		return v
	}
	return etherTypeVLAN
}

// txEmit sends the frame of length l that starts at buf[txHeadroom],
// inserting a VLAN tag in the headroom and padding a short frame in the
// tailroom, to the backend or, in loopback, to the receive path.
func (n *NIC) txEmit(o *txPacketOpts, buf []byte, l int) {
	start := txHeadroom
	if o.vle && n.reg(CTRL)&CTRL_VME != 0 && l >= 12 {
		start = 0
		copy(buf[0:12], buf[txHeadroom:txHeadroom+12])
		binary.BigEndian.PutUint16(buf[12:], n.vet())
		binary.BigEndian.PutUint16(buf[14:], o.tci)
		l += vlanTagLen
	}
	if l < ethMinFrame && n.reg(TCTL)&tctlPSP != 0 {
		clear(buf[start+l : start+ethMinFrame])
		l = ethMinFrame
	}
	frame := buf[start : start+l]
	n.countFrame(frame, &txCounters)
	if n.loopback() {
		// The receive path copies the frame and never transmits, so a
		// looped frame cannot come back here.
		n.receiveLocked(frame)
		return
	}
	if n.backend != nil {
		if err := n.backend.Send(frame); err != nil {
			n.log.Debug("e1000e: backend send", "err", err)
		}
	}
}

// sizeBucket picks the 64/127/255/511/1023/1522+ counter of a series
// starting at first (PRC64 or PTC64).
func sizeBucket(first uint32, size uint64) uint32 {
	switch {
	case size <= 64:
		return first
	case size <= 127:
		return first + 4
	case size <= 255:
		return first + 8
	case size <= 511:
		return first + 12
	case size <= 1023:
		return first + 16
	default:
		return first + 20
	}
}

// resetRings drops ring runtime state on device reset. Called with n.mu held.
// Buffers are kept for reuse.
func (n *NIC) resetRings() {
	n.tx.ctx = txContext{}
	n.tx.discard = false
	n.rx.reset()
}
