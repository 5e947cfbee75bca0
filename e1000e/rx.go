package e1000e

import (
	"encoding/binary"
	"errors"
	"hash/crc32"

	"e1000e-vfu/device"
)

// Receive. A frame from the backend (or from loopback) is filtered on
// arrival, then written to ring 0 at once if enough descriptors are free
// for all of it; otherwise it waits, in order, in a bounded backlog that
// RDT writes, RCTL.EN, link up and Bus Master enable drain. The frame the
// guest sees has its VLAN tag stripped (CTRL.VME), is padded to 60 bytes
// and carries a computed FCS unless RCTL.SECRC strips it.

// Receive limits.
const (
	// rxBacklogMax frames wait, in buffers kept for reuse, while the ring
	// has no free descriptors; beyond it frames are dropped (MPC).
	rxBacklogMax = 256
	// rxMaxFrame is the longest frame accepted at all (the 82574's 16 KiB
	// long-packet limit); rxMaxStd without RCTL.LPE (1518 + a VLAN tag).
	rxMaxFrame = 16384
	rxMaxStd   = 1522
	rxBufSize  = rxMaxFrame + 64 // room for padding and the FCS

	// RXCSUM bits.
	rxcsumIPOFL = 0x00000100
	rxcsumTUOFL = 0x00000200
	rxcsumPCSD  = 0x00002000

	// RFCTL bits.
	rfctlIPFRSPDis = 0x00004000 // no header split of IP fragments
	rfctlEXTEN     = 0x00008000 // extended receive descriptors

	// Packet types in the extended status (bits 16-19).
	rxdPktIP4    = 1 << 16
	rxdPktIP4XDP = 2 << 16
	rxdPktIP6    = 5 << 16
	rxdPktIP6XDP = 6 << 16

	rxRingSlot      = 16 // RDH/RDT count 16-byte slots, even for packet split
	rxRingSlotShift = 4  // log2(rxRingSlot)
)

// rxState is the receive side's runtime state: the frame being written and
// a bounded backlog of frames waiting for descriptors. Buffers are
// allocated on first use and reused.
type rxState struct {
	frame rxFrame // the frame being delivered, its buffer kept for reuse
	desc  [rxPSDescSize]byte
	// Scratch space that GuestMemory and the filters see: kept here, not on
	// the stack, where escaping through an interface would allocate.
	status [4]byte
	short  [ethMinFrame]byte

	backlog     [rxBacklogMax][]byte
	blHead, blN int

	dropped uint64 // frames that could never fit the ring

	// busy is set while a frame is being written (the engine may let n.mu
	// go for guest memory messages); kicked records a kick that came
	// meanwhile, for the worker to take up.
	busy, kicked bool
}

// rxResult is what became of one frame's delivery.
type rxResult uint8

const (
	rxDone  rxResult = iota // written, or dropped for good
	rxWait                  // no DMA, ring unusable or not enough free descriptors
	rxStale                 // stopped during a guest memory message (errStale): RDH not moved
)

func (r *rxState) reset() {
	r.blHead, r.blN = 0, 0
}

// Receive takes one frame from the backend. Without link (STATUS.LU) the
// frame is lost, as on the wire; looped-back frames do not need the link.
func (n *NIC) Receive(frame []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reg(STATUS)&STATUS_LU == 0 {
		return
	}
	n.receiveLocked(frame)
}

// receiveLocked filters a frame and writes it to the guest, or holds it in
// the backlog when the ring is full. Called with n.mu held; frame is not
// retained.
func (n *NIC) receiveLocked(frame []byte) {
	rctl := n.reg(RCTL)
	if rctl&RCTL_EN == 0 || len(frame) == 0 {
		return
	}
	// A device stopped for migration changes no register: frames only
	// wait in the backlog, which is saved with the state.
	quiet := n.mig.quiesced
	if len(frame) > rxMaxFrame || (len(frame) > rxMaxStd && rctl&(rctlLPE|rctlSBP) == 0) {
		if !quiet {
			n.addStat(ROC, 1)
		}
		return
	}
	// Filters look at the first bytes of the padded frame.
	fh := frame
	if len(fh) < ethMinFrame {
		clear(n.rx.short[:])
		copy(n.rx.short[:], frame)
		fh = n.rx.short[:]
	}
	if !filterFrame(n, fh, n.rxFilter).accept {
		return
	}
	if n.rx.busy || n.memMessaged() {
		// Delivery may wait for the client: the worker does it, in
		// order, from the backlog. (RNBC and RXO, below, count frames
		// that find no descriptor on arrival; this path does not look.)
		if !n.rxEnqueue(frame) && !quiet {
			n.addStat(MPC, 1)
		}
		n.kickRX()
		return
	}
	if n.rx.blN > 0 {
		n.kickRX() // older frames go first
	}
	if n.rx.blN == 0 {
		switch n.rxDeliver(frame) {
		case rxDone:
			return
		case rxStale:
			// Guest memory turned out to need messages: the worker
			// writes the frame.
			if !n.rxEnqueue(frame) && !quiet {
				n.addStat(MPC, 1)
			}
			n.schedule()
			return
		}
	}
	// No descriptors for it now: keep it, in order, if there is room.
	if !quiet {
		n.addStat(RNBC, 1)
		n.raise(ICR_RXO)
	}
	if !n.rxEnqueue(frame) && !quiet {
		n.addStat(MPC, 1)
	}
}

// rxEnqueue appends a copy of frame to the backlog; false when it is full.
func (n *NIC) rxEnqueue(frame []byte) bool {
	if n.rx.blN == rxBacklogMax {
		return false
	}
	slot := &n.rx.backlog[(n.rx.blHead+n.rx.blN)%rxBacklogMax]
	*slot = append((*slot)[:0], frame...)
	n.rx.blN++
	return true
}

// kickRX delivers backlogged frames once buffers are available, or has the
// worker do it. Called with n.mu held.
func (n *NIC) kickRX() {
	if n.rx.blN == 0 {
		return
	}
	if n.rx.busy || n.memMessaged() {
		// A frame is being written without n.mu, or guest memory may
		// need messages, which only the worker sends.
		n.rx.kicked = n.rx.kicked || n.rx.busy
		n.schedule()
		return
	}
	n.rxDrain()
}

// rxDrain delivers backlogged frames, oldest first, while descriptors
// last. Called with n.mu held. Frames that arrive while it lets n.mu go
// join the backlog; past rxBacklogMax deliveries it leaves them to the
// worker's next turn.
func (n *NIC) rxDrain() {
	for k := 0; n.rx.blN > 0; k++ {
		if k == rxBacklogMax {
			n.schedule()
			return
		}
		switch n.rxDeliver(n.rx.backlog[n.rx.blHead]) {
		case rxWait:
			return
		case rxStale:
			// The frame stays first in the backlog. When the ring can
			// still take it, the worker writes it again now: nothing
			// else would until the next frame or RDT write.
			if n.rxRunnable() {
				n.schedule()
			}
			return
		}
		n.rx.blHead = (n.rx.blHead + 1) % rxBacklogMax
		n.rx.blN--
	}
}

// rxRunnable reports whether receive may write to its ring at all.
func (n *NIC) rxRunnable() bool {
	return n.reg(RCTL)&RCTL_EN != 0 && n.busMaster() && !n.closed
}

// rxDMA reads or writes guest memory for the receive engine (see
// dmaAccess). It also stops when receive was disabled meanwhile: the frame
// waits, RDH not moved.
func (n *NIC) rxDMA(addr uint64, p []byte, write bool, gen uint64) error {
	err := n.dmaAccess(addr, p, write, engRX, gen)
	if err == nil && n.reg(RCTL)&RCTL_EN == 0 {
		return errStale
	}
	return err
}

// rxEnd ends a frame's delivery: a kick that came meanwhile gets the
// worker.
func (n *NIC) rxEnd() {
	n.rx.busy = false
	if n.rx.kicked {
		n.rx.kicked = false
		n.schedule()
	}
}

// rxBufSizes are the buffer sizes of one descriptor: one buffer for the
// legacy and extended formats, four for packet split.
type rxBufSizes [4]int

// rxBSIZE decodes RCTL.BSIZE and BSEX.
func rxBSIZE(rctl uint32) int {
	bs := (rctl & rctlBSIZE) >> rctlBSIZESh
	if rctl&rctlBSEX != 0 {
		if bs == 0 {
			return 2048 // reserved encoding: the plain default
		}
		return 32768 >> bs
	}
	return 2048 >> bs
}

// psBufSizes decodes PSRCTL: buffer 0 in 128-byte units, 1-3 in KiB.
func psBufSizes(psrctl uint32) rxBufSizes {
	return rxBufSizes{
		int(psrctl&0x7F) * 128,
		int(psrctl>>8&0x3F) * 1024,
		int(psrctl>>16&0x3F) * 1024,
		int(psrctl>>24&0x3F) * 1024,
	}
}

// rxLayout is how a frame spreads over descriptors.
type rxLayout struct {
	ps, ext   bool
	descSlots uint32
	sizes     rxBufSizes
	hdrLen    int // packet split: header bytes put in buffer 0; 0 = no split
}

// capacity is how many bytes descriptor number i of a frame holds.
func (l *rxLayout) capacity(first bool) int {
	if !l.ps {
		return l.sizes[0]
	}
	c := l.sizes[1] + l.sizes[2] + l.sizes[3]
	switch {
	case l.hdrLen == 0:
		c += l.sizes[0]
	case first:
		c += l.hdrLen
	}
	return c
}

// descsFor counts the descriptors a frame of total bytes needs; 0 means it
// can never be stored.
func (l *rxLayout) descsFor(total int) int {
	first, next := l.capacity(true), l.capacity(false)
	if first <= 0 {
		return 0
	}
	if total <= first {
		return 1
	}
	if next <= 0 {
		return 0
	}
	return 1 + (total-first+next-1)/next
}

// rxFrame is one frame on its way to the guest ring, as the steps of
// rxDeliver fill it in: prepared (rxPrepare), laid out over descriptors
// (rxLayOut), given its write-back metadata (rxMetadata), written
// (rxWalk), and completed (rxComplete). It lives in rxState so that a
// frame's delivery does not allocate.
type rxFrame struct {
	// buf is the frame as the guest sees it: data, then the FCS unless
	// RCTL.SECRC strips it; dataLen is its length without the FCS. Its
	// array, rxBufSize long, is allocated once and reused.
	buf     []byte
	dataLen int
	p       pktInfo
	vlan    bool   // a VLAN tag was stripped (CTRL.VME)
	tci     uint16 // its tag control information
	lay     rxLayout
	need    int // descriptors the frame takes
	// The EOP descriptor's write-back fields.
	status, hiDword, mrq uint32
}

// data is the frame without its FCS.
func (f *rxFrame) data() []byte { return f.buf[:f.dataLen] }

// rxDeliver writes one frame to the guest ring. It returns rxWait when the
// frame has to wait (no DMA, ring unusable or not enough free
// descriptors), rxDone once it is written or dropped for good, and rxStale
// when the engine had to stop while n.mu was let go (the frame is to be
// written again; RDH has not moved). frame is read before n.mu is let go,
// never after.
func (n *NIC) rxDeliver(frame []byte) rxResult {
	if !n.busMaster() {
		return rxWait
	}
	rctl := n.reg(RCTL)
	if rctl&RCTL_EN == 0 {
		return rxWait
	}
	var r ringView
	rxQueue(0).view(n, &r)
	if !r.usable() {
		return rxWait
	}
	// The steps: prepare the frame, lay it out over descriptors, compute
	// its write-back metadata, walk the descriptors, complete.
	rx := &n.rx
	f := &rx.frame
	n.rxPrepare(f, frame, rctl)
	n.rxLayOut(f, rctl)
	// A frame no ring of this size could hold (a full ring keeps one
	// descriptor back) is dropped; one that needs more than is free
	// waits.
	if f.need == 0 || f.need > int((r.size-1)/f.lay.descSlots) {
		rx.dropped++
		n.addStat(RNBC, 1)
		return rxDone
	}
	freeBefore := r.avail()
	if f.need > int(freeBefore/f.lay.descSlots) {
		return rxWait
	}

	rx.busy = true
	defer n.rxEnd()
	f.status, f.hiDword, f.mrq = n.rxMetadata(f.data(), &f.p)
	if f.vlan {
		f.status |= rxdStatVP
	}
	res, written := n.rxWalk(f, &r, n.work.gen[engRX])
	if written {
		n.rxComplete(f, &r, rctl, freeBefore)
	}
	return res
}

// rxPrepare makes the frame the guest will see: the VLAN tag stripped
// when CTRL.VME asks, padded to the minimum length, the FCS appended
// unless RCTL.SECRC strips it, and its headers parsed.
func (n *NIC) rxPrepare(f *rxFrame, frame []byte, rctl uint32) {
	if f.buf == nil {
		f.buf = make([]byte, 0, rxBufSize)
	}
	vet := n.vet()
	f.vlan, f.tci = false, 0
	w := f.buf[:0]
	if n.reg(CTRL)&CTRL_VME != 0 && len(frame) >= ethHdrLen+vlanTagLen &&
		binary.BigEndian.Uint16(frame[12:]) == vet {
		f.vlan = true
		f.tci = binary.BigEndian.Uint16(frame[14:])
		w = append(w, frame[:12]...)
		w = append(w, frame[16:]...)
	} else {
		w = append(w, frame...)
	}
	for len(w) < ethMinFrame {
		w = append(w, 0)
	}
	f.dataLen = len(w)
	if rctl&rctlSECRC == 0 {
		w = binary.LittleEndian.AppendUint32(w, crc32.ChecksumIEEE(w))
	}
	f.buf = w
	f.p.parse(f.data(), vet)
}

// rxLayOut decides how the frame spreads over descriptors: one buffer of
// RCTL.BSIZE each, or packet split's four (PSRCTL) with the headers alone
// in the first, and so how many descriptors it takes.
func (n *NIC) rxLayOut(f *rxFrame, rctl uint32) {
	// Field by field, in place: f lives in rxState.
	lay := &f.lay
	lay.ext = n.reg(RFCTL)&rfctlEXTEN != 0
	lay.ps = lay.ext && rctl&rctlDTYPMask == rctlDTYPPS
	lay.descSlots, lay.hdrLen = 1, 0
	if lay.ps {
		lay.descSlots = 2
		lay.sizes = psBufSizes(n.reg(PSRCTL))
		lay.hdrLen = psHeaderLen(f.data(), &f.p, n.reg(RFCTL), lay.sizes[0])
	} else {
		lay.sizes = rxBufSizes{rxBSIZE(rctl)}
	}
	f.need = lay.descsFor(len(f.buf))
}

// buffers sets the buffer addresses descriptor d offers and how much of
// the frame each takes; first says d is the frame's first descriptor.
func (l *rxLayout) buffers(d []byte, first bool, addrs *[4]uint64, caps *rxBufSizes) {
	if !l.ps {
		*addrs = [4]uint64{binary.LittleEndian.Uint64(d)}
		*caps = rxBufSizes{l.sizes[0]}
		return
	}
	for j := range addrs {
		addrs[j] = rxPSDesc(d).addr(j)
	}
	*caps = l.sizes
	if l.hdrLen != 0 {
		if first {
			caps[0] = l.hdrLen
		} else {
			caps[0] = 0 // buffer 0 of later descriptors stays empty
		}
	}
}

// rxWalk writes the frame into the ring from r.head on: each descriptor
// read, its buffers written, and written back, r.head moved past it.
// written says all of it is, for rxComplete to hand over. A descriptor
// that cannot be read drops the frame (rxDone): what was written stays
// consumed, RDH moved up to it. rxStale is when the engine must stop, RDH
// not moved.
func (n *NIC) rxWalk(f *rxFrame, r *ringView, gen uint64) (res rxResult, written bool) {
	rx := &n.rx
	descLen := int(f.lay.descSlots) * rxRingSlot
	off := 0
	for k := 0; k < f.need; k++ {
		addr := r.addr(r.head)
		d := rx.desc[:descLen]
		if err := n.rxDMA(addr, d, false, gen); err != nil {
			if errors.Is(err, errStale) {
				return rxStale, false
			}
			n.log.Debug("e1000e: rx descriptor read", "index", r.head, "err", err)
			rx.dropped++
			rxQueue(0).setHead(n, r.head) // what was written stays consumed
			return rxDone, false
		}
		var addrs [4]uint64
		var caps rxBufSizes
		f.lay.buffers(d, k == 0, &addrs, &caps)
		// A descriptor without a buffer address is consumed without a
		// write (CVE-2020-28916: it must not stall the walk).
		skip := addrs[0] == 0
		var lens [4]int
		for j := 0; j < 4 && off < len(f.buf); j++ {
			nb := min(caps[j], len(f.buf)-off)
			if nb <= 0 {
				continue
			}
			if !skip {
				if err := n.rxDMA(addrs[j], f.buf[off:off+nb], true, gen); err != nil {
					if errors.Is(err, errStale) {
						return rxStale, false
					}
					n.log.Debug("e1000e: rx buffer write", "addr", addrs[j], "err", err)
				}
				lens[j] = nb
			}
			off += nb
		}
		if !n.rxWriteBack(f, d, addr, &lens, k == f.need-1, gen) {
			return rxStale, false
		}
		r.head += f.lay.descSlots
		if r.head >= r.size {
			r.head = 0
		}
	}
	return rxDone, true
}

// rxComplete hands a written frame to the guest: RDH moved past it, the
// statistics counted, and the receive causes raised (RXDMT0 when the free
// descriptors fell to the threshold RCTL.RDMTS sets). A frame stopped
// half way (rxStale) never gets here and is written again to the same
// descriptors.
func (n *NIC) rxComplete(f *rxFrame, r *ringView, rctl, freeBefore uint32) {
	rxQueue(0).setHead(n, r.head)
	n.countFrame(f.data(), &rxCounters)

	var causes uint32
	if n.irq.Mode() == device.IRQModeMSIX {
		causes = ICR_RXQ0
	} else {
		causes = ICR_RXT0
		thr := r.size >> ((rctl&rctlRDMTS)>>rctlRDMTSSh + 1)
		if after := r.avail(); freeBefore > thr && after <= thr {
			causes |= ICR_RXDMT0
		}
	}
	n.raiseRX(causes)
}

// psHeaderLen is how many header bytes packet split puts in buffer 0: the
// headers up to the TCP/UDP payload, when they fit; 0 when the frame is not
// split.
func psHeaderLen(frame []byte, p *pktInfo, rfctl uint32, b0 int) int {
	if !p.ipv4 && !p.ipv6 {
		return 0
	}
	if p.frag && rfctl&rfctlIPFRSPDis != 0 {
		return 0
	}
	if p.l4Off == 0 {
		return 0
	}
	h := p.l4Off + udpHdrLen
	if p.proto == ipProtoTCP {
		h = p.l4Off + int(frame[p.l4Off+12]>>4)*4
	}
	if h > b0 || h > len(frame) {
		return 0
	}
	return h
}

// rxMetadata computes the EOP status bits (packet type, checksum results)
// and the write-back's high dword (RSS hash, or the IPv4 id) and MRQ field.
// It runs only for a frame the ring has room for now, not for one that
// waits.
func (n *NIC) rxMetadata(frame []byte, p *pktInfo) (status, hiDword, mrq uint32) {
	status = rxdStatDD | rxdStatEOP
	rxcsum := n.reg(RXCSUM)
	if rxcsum&rxcsumPCSD != 0 {
		rss := rssCompute(n, frame, p)
		if rss.typ != rssTypeNone {
			hiDword, mrq = rss.hash, rss.mrq()
		}
	} else if p.ipv4 {
		status |= rxdStatIPIDV
		hiDword = uint32(binary.BigEndian.Uint16(frame[p.l3Off+4:]))
	}
	switch {
	case p.l4Off != 0 && p.ipv4:
		status |= rxdPktIP4XDP
	case p.l4Off != 0:
		status |= rxdPktIP6XDP
	case p.ipv4:
		status |= rxdPktIP4
	case p.ipv6:
		status |= rxdPktIP6
	}
	if rxcsum&(rxcsumIPOFL|rxcsumTUOFL) == 0 {
		status |= rxdStatIXSM
		return
	}
	if rxcsum&rxcsumIPOFL != 0 && p.ipv4 {
		status |= rxdStatIPCS
		if !ipv4HeaderOK(frame, p) {
			status |= rxdExtErrIPE
		}
	}
	if rxcsum&rxcsumTUOFL != 0 && p.l4Off != 0 {
		ok, zeroUDP := l4ChecksumOK(frame, p)
		if !zeroUDP {
			status |= rxdStatTCPCS
			if p.proto == ipProtoUDP {
				status |= rxdStatUDPCS
			}
			if !ok {
				status |= rxdExtErrTCPE
			}
		}
	}
	return
}

// rxWriteBack writes descriptor d, at addr, back in the ring's format:
// the body first, then the status, so the guest never sees DD before the
// rest. Only the frame's last descriptor carries its status and VLAN tag;
// the others say DD. It returns false when the engine must stop
// (errStale).
func (n *NIC) rxWriteBack(f *rxFrame, d []byte, addr uint64, lens *[4]int, last bool, gen uint64) bool {
	l := &f.lay
	status, hiDword, mrq := uint32(rxdStatDD), f.hiDword, f.mrq
	var vlan uint16
	if last {
		status = f.status
		if f.vlan {
			vlan = f.tci
		}
	}
	var stOff int
	var st []byte
	stBuf := &n.rx.status
	switch {
	case l.ps:
		hs := uint16(0)
		if l.hdrLen != 0 {
			hs = uint16(l.hdrLen)&rxdPSHdrStatLenMask | rxdPSHdrStatHDRSP
		}
		rxPSDesc(d).writeBack(mrq, hiDword, lens, hs, vlan)
		rxPSDesc(d).setStatusError(0)
		stOff = 8
		binary.LittleEndian.PutUint32(stBuf[:], status)
		st = stBuf[:4]
	case l.ext:
		rxExtDesc(d).writeBack(mrq, hiDword, lens[0], vlan)
		rxExtDesc(d).setStatusError(0)
		stOff = 8
		binary.LittleEndian.PutUint32(stBuf[:], status)
		st = stBuf[:4]
	default:
		rxLegacyDesc(d).writeBack(lens[0], 0, byte(status>>24), vlan)
		rxLegacyDesc(d).setStatus(0)
		stOff = 12
		stBuf[0] = byte(status)
		st = stBuf[:1]
	}
	if err := n.rxDMA(addr, d, true, gen); err != nil {
		if errors.Is(err, errStale) {
			return false
		}
		n.log.Debug("e1000e: rx write-back", "addr", addr, "err", err)
		return true
	}
	if err := n.rxDMA(addr+uint64(stOff), st, true, gen); err != nil {
		if errors.Is(err, errStale) {
			return false
		}
		n.log.Debug("e1000e: rx write-back status", "addr", addr, "err", err)
	}
	return true
}

// frameCounters names the statistics registers one direction counts a
// frame in.
type frameCounters struct {
	packets, good, octets, goodOctets, size64, broadcast, multicast uint32
}

var (
	rxCounters = frameCounters{TPR, GPRC, TORL, GORCL, PRC64, BPRC, MPRC}
	txCounters = frameCounters{TPT, GPTC, TOTL, GOTCL, PTC64, BPTC, MPTC}
)

// countFrame updates one direction's statistics for a frame (without FCS);
// sizes count the FCS as the wire does.
func (n *NIC) countFrame(frame []byte, c *frameCounters) {
	size := uint64(len(frame)) + 4
	n.addStat(c.packets, 1)
	n.addStat(c.good, 1)
	n.addStat(c.octets, size)
	n.addStat(c.goodOctets, size)
	n.addStat(sizeBucket(c.size64, size), 1)
	if frame[0]&1 != 0 {
		if isBroadcast(frame) {
			n.addStat(c.broadcast, 1)
		} else {
			n.addStat(c.multicast, 1)
		}
	}
}
