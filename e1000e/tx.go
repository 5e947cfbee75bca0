package e1000e

import (
	"encoding/binary"
	"errors"

	"e1000e-vfu/device"
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
// dropped, so a guest cannot make one packet unbounded work; the budget
// below bounds what one doorbell does.
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

// The work of one turn of the transmit engine: the TDT write that rings the
// doorbell, and then each turn of the worker, does at most this much before
// it lets n.mu go; the worker carries on with the rest. The budget is
// checked between packets, so a turn ends at the first packet boundary
// past it (one packet adds at most txMaxSegments frames). Frames count
// those emitted and each packet dropped; bytes count those gathered from
// the guest and those emitted, so a packet read in full and then dropped
// (a TSO packet whose context cannot segment it) is work too.
//
// 256 frames fill a TAP device's default queue (txqueuelen 1000) a quarter
// of the way and cost well under a millisecond to emit; 1 MiB is 8 ms of a
// gigabit link. Either way a register access waits for at most a
// millisecond or so, while the common doorbell (a few packets, a TSO
// burst of 45 frames) is done at once, on the caller's goroutine, without
// a goroutine hop. The descriptor budget bounds the turns that emit
// nothing (context descriptors, packets being discarded).
const (
	txBudgetFrames = 256
	txBudgetBytes  = 1 << 20
	txBudgetDescs  = 4096
)

// txMinMSS is the smallest segment payload TSO cuts. The 82574L datasheet
// names no minimum, but an MSS of 1 turns one 64 KiB packet into 65536
// frames. Intel's E810 cannot take an MSS below 64 (its Linux driver, ice,
// segments such packets in software instead), and Linux's TCP never asks
// for less than 48 (tcp_min_snd_mss) less its options. A context asking
// for less is used with txMinMSS: the packet still goes out, in segments a
// little larger than asked, which receivers accept, rather than being
// dropped, which would stall the guest's connection until it retransmits
// without TSO. MSS 0 remains an invalid context (the packet is dropped).
const (
	txMinMSS      = 64
	txMaxSegments = (txMaxPacket + txMinMSS - 1) / txMinMSS
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
	// ctx and discard are as they stand at TDH: what a state saves, and
	// what reset and load set. A step works on copies (stepCtx,
	// stepDiscard) and commits them with TDH, so a step stopped half way
	// leaves nothing to undo, and one that waits for a message while a
	// reset or load replaces them cannot put them back.
	ctx         txContext
	discard     bool
	stepCtx     txContext
	stepDiscard bool

	buf  []byte // the gathered packet at txHeadroom
	seg  []byte // one TSO segment at txHeadroom
	desc [txDescSize]byte
	wb   [txMaxScan]txWriteBack
	// status holds a write-back's bytes: a buffer passed to GuestMemory
	// lives here rather than on the stack, which would move it to the heap.
	status [4]byte

	// Packets dropped: oversized, too many descriptors, DMA errors, bad TSO.
	dropped uint64

	// busy is set while an engine runs (it may let n.mu go for guest
	// memory messages); kicked records a kick that came meanwhile.
	busy, kicked bool
	// turnFrames and turnBytes count this turn's work against the budget:
	// frames emitted and packets dropped, bytes gathered from the guest
	// and bytes emitted.
	turnFrames, turnBytes int
	// causes (and ide, whether a write-back asked for a delayed
	// interrupt) are the interrupt causes of the packets committed and
	// not raised yet. They are raised before n.mu is let go, so no one
	// who takes it (Quiesce, a state save) sees a packet done without
	// its interrupt.
	causes uint32
	ide    bool
}

func (t *txState) ensureBuffers() {
	if t.buf == nil {
		t.buf = make([]byte, txBufSize)
		t.seg = make([]byte, txBufSize)
	}
}

// txStatus is what became of one txStep.
type txStatus uint8

const (
	txDone  txStatus = iota // descriptors consumed (a packet, or a lone context)
	txWait                  // nothing to do yet: the packet's end is not in the ring, or a descriptor is unreadable
	txStale                 // stopped during a guest memory message (errStale): nothing consumed
)

// kickTX processes transmit descriptors from TDH up to TDT, or has the
// worker do it. Called with n.mu held, from whatever goroutine wrote a
// register or resumed the NIC.
func (n *NIC) kickTX() {
	if n.tx.busy || n.memMessaged() {
		// An engine is under way without n.mu, or guest memory may need
		// messages, which only the worker sends.
		n.tx.kicked = n.tx.kicked || n.tx.busy
		n.schedule()
		return
	}
	n.txRun()
}

// txRun processes one budget of the ring, from TDH towards TDT, and has the
// worker continue when the budget ends first. Called with n.mu held. It
// does nothing when transmit is disabled, DMA is not allowed, or the ring
// registers are inconsistent (a tail beyond the ring).
func (n *NIC) txRun() {
	if !n.txRunnable() {
		return
	}
	var r ringView
	txQueue(0).view(n, &r)
	if !r.usable() || r.head == r.tail {
		return
	}
	t := &n.tx
	t.ensureBuffers()
	t.busy = true
	t.turnFrames, t.turnBytes = 0, 0
	gen := n.work.gen[engTX]
	st := txDone
	// Every step consumes at least one descriptor or stops, so the walk
	// ends within one turn of the ring, and sooner at the budget, which
	// is checked between packets.
	descBudget := min(r.size, txBudgetDescs)
	for descs := uint32(0); r.head != r.tail; {
		if descs >= descBudget || t.turnFrames >= txBudgetFrames || t.turnBytes >= txBudgetBytes {
			n.schedule()
			break
		}
		head := r.head
		if st = n.txStep(&r, gen); st != txDone {
			break
		}
		descs += (r.head + r.size - head) % r.size
	}
	t.busy = false
	if t.kicked {
		// The tail may have moved while n.mu was let go.
		t.kicked = false
		n.schedule()
	}
	if st == txStale {
		// Nothing of the step is committed, and it raises nothing: the
		// causes of the packets committed before it were raised before
		// n.mu was let go, and the NIC may be quiesced by now. When the
		// ring can still be worked on, the worker does it again now:
		// nothing else would (the guest's next doorbell may never come).
		if n.txRunnable() {
			n.schedule()
		}
	} else if r.head == r.tail {
		t.causes |= ICR_TXQE
	}
	n.txFlushCauses()
}

// txRunnable reports whether transmit may work on its ring at all.
func (n *NIC) txRunnable() bool {
	return n.reg(TCTL)&TCTL_EN != 0 && n.busMaster() && !n.closed
}

// txFlushCauses raises the causes of committed packets. Raising nothing
// would still release causes the delay timers hold, so it does not.
func (n *NIC) txFlushCauses() {
	t := &n.tx
	if t.causes != 0 {
		n.raiseTX(t.causes, t.ide)
	}
	t.causes, t.ide = 0, false
}

// txDoneCause is the cause a descriptor write-back raises.
func (n *NIC) txDoneCause() uint32 {
	if n.irq.Mode() == device.IRQModeMSIX {
		return ICR_TXQ0
	}
	return ICR_TXDW
}

// txDMA reads or writes guest memory for the transmit engine (see
// dmaAccess). Reads (descriptors, buffers) also stop when transmit was
// disabled meanwhile: the packet waits at TDH. Writes are the write-backs
// of a packet already sent, which finish while its ring is the same.
func (n *NIC) txDMA(addr uint64, p []byte, write bool, gen uint64) error {
	err := n.dmaAccess(addr, p, write, engTX, gen)
	if !write && err == nil && n.reg(TCTL)&TCTL_EN == 0 {
		return errStale
	}
	return err
}

// txStep handles what starts at r.head: a lone context descriptor, or a
// whole packet up to its EOP descriptor, and commits it: TDH, the context,
// and the causes of its write-backs. It returns txDone, with r.head moved;
// txWait when nothing can be done yet (the packet's end is not in the ring,
// or a descriptor cannot be read); txStale when the engine must stop
// (errStale), having committed nothing (it works on copies of the context
// and the discard flag), so the packet is done again from its first
// descriptor.
//
// A step can go stale after its frames went out, while it writes the
// descriptors back. It goes stale only when the ring itself was changed
// meanwhile (its registers, reset, load, guest memory, Bus Master) or the
// NIC was quiesced: not for a receive register, nor for transmit being
// disabled, after which it finishes the write-backs. Its frames go out
// again only if the same ring is worked on again after that, that is after
// a Quiesce and Resume (here or on a migration's destination), or with Bus
// Master turned off and on during the message: where the real part, reset
// or stopped half way through a packet, may resend one too.
func (n *NIC) txStep(r *ringView, gen uint64) txStatus {
	t := &n.tx
	var (
		opts   txPacketOpts
		nwb    int
		ndata  int
		pktLen int
		eop    bool
	)
	t.stepCtx, t.stepDiscard = t.ctx, t.discard
	dropped0 := t.dropped
	stale := func() txStatus {
		t.dropped = dropped0
		return txStale
	}
	everyWB := n.reg(IVAR)&IVAR_INT_ON_ALL_WB != 0
	i := r.head
	for steps := 0; ; steps++ {
		if i == r.tail || steps >= txMaxScan {
			if !t.stepDiscard && ndata <= txMaxDataDescs && steps < txMaxScan {
				return txWait // wait for the rest
			}
			// Too many descriptors without an end: drop what we have
			// and keep discarding up to the next EOP.
			if !t.stepDiscard {
				t.dropped++
			}
			t.stepDiscard = true
			break
		}
		d := txDesc(t.desc[:])
		if err := n.txDMA(r.addr(i), d, false, gen); err != nil {
			if errors.Is(err, errStale) {
				return stale()
			}
			// Nothing is consumed: the next doorbell retries.
			n.log.Debug("e1000e: tx descriptor read", "index", i, "err", err)
			t.dropped = dropped0
			return txWait
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
			t.stepCtx.load(d)
			if ndata == 0 && !t.stepDiscard {
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
		if ndata > txMaxDataDescs && !t.stepDiscard {
			t.stepDiscard = true
			t.dropped++
		}
		if !t.stepDiscard && length > 0 {
			if pktLen+length > txMaxPacket {
				t.stepDiscard = true
				t.dropped++
			} else if err := n.txDMA(d.addr(), t.buf[txHeadroom+pktLen:txHeadroom+pktLen+length], false, gen); err != nil {
				if errors.Is(err, errStale) {
					return stale()
				}
				n.log.Debug("e1000e: tx buffer read", "addr", d.addr(), "len", length, "err", err)
				t.stepDiscard = true
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
	// The budget counts the bytes gathered, and a dropped packet as a
	// frame, so that packets read in full and then dropped (a TSO packet
	// with an unusable context) cannot make a turn unbounded work.
	t.turnBytes += pktLen
	if eop {
		if !t.stepDiscard && pktLen > 0 {
			n.txPacket(&opts, pktLen)
		}
		t.stepDiscard = false
	}
	if t.dropped != dropped0 {
		t.turnFrames++
	}
	var causes uint32
	ide := false
	for k := 0; k < nwb; k++ {
		w := &t.wb[k]
		binary.LittleEndian.PutUint32(t.status[:], w.upper)
		if err := n.txDMA(r.addr(w.idx)+12, t.status[:], true, gen); err != nil {
			if errors.Is(err, errStale) {
				// The ring is not the one the frames came from, or
				// the NIC is quiesced: see above.
				return stale()
			}
			n.log.Debug("e1000e: tx write-back", "index", w.idx, "err", err)
			continue
		}
		causes |= n.txDoneCause()
		ide = w.ide
	}
	// Commit, with n.mu held since the last write-back.
	r.head = i
	txQueue(0).setHead(n, i)
	t.ctx, t.discard = t.stepCtx, t.stepDiscard
	t.causes |= causes
	t.ide = t.ide || ide
	return txDone
}

// txPacket applies the offloads to the gathered packet and sends it, as
// TSO segments when both the context and the packet ask for segmentation.
func (n *NIC) txPacket(o *txPacketOpts, pktLen int) {
	t := &n.tx
	pkt := t.buf[txHeadroom : txHeadroom+pktLen]
	c := &t.stepCtx
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
	c := &t.stepCtx
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
	// payload ≤ txMaxPacket and mss ≥ txMinMSS bound the loop to
	// txMaxSegments turns.
	mss := max(c.mss, txMinMSS)
	for off, i := 0, 0; off < payload; i++ {
		nb := min(mss, payload-off)
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
	n.tx.turnFrames++
	n.tx.turnBytes += l
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
	n.datapathChanged()
	n.tx.ctx = txContext{}
	n.tx.discard = false
	n.tx.causes, n.tx.ide = 0, false
	n.rx.reset()
}
