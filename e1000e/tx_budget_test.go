package e1000e

import (
	"sync"
	"testing"
	"time"

	"e1000e-vfu/device"
)

// One TX doorbell does at most a budget of work; the rest continues on the
// NIC's worker, with the lock free between turns (hostile rings: many
// packets, TSO at a tiny MSS).

// handWorker runs the NIC's worker turns when the test says so, so what a
// doorbell does by itself is seen exactly.
type handWorker struct {
	mu    sync.Mutex
	turns []func()
}

func useHandWorker(n *NIC) *handWorker {
	h := &handWorker{}
	n.mu.Lock()
	n.work.spawn = h.spawn
	n.work.run = n.runTurn
	n.mu.Unlock()
	return h
}

func (h *handWorker) spawn(f func()) {
	h.mu.Lock()
	h.turns = append(h.turns, f)
	h.mu.Unlock()
}

// step runs the oldest turn started; false when there is none.
func (h *handWorker) step() bool {
	h.mu.Lock()
	if len(h.turns) == 0 {
		h.mu.Unlock()
		return false
	}
	f := h.turns[0]
	h.turns = h.turns[1:]
	h.mu.Unlock()
	f()
	return true
}

func (h *handWorker) waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.turns)
}

func (b *dpBackend) sent() (frames, bytes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.bytes
}

// A large TX ring after the rig's buffers: up to 64 Ki descriptors.
const hostileRing = 0x300000

// bigTXRing moves TX to a ring of descs descriptors at hostileRing.
func (r *dpRig) bigTXRing(descs uint32) {
	r.w(TDBAL0, hostileRing)
	r.w(TDLEN0, descs*txDescSize)
	r.w(TDH0, 0)
	r.w(TDT0, 0)
}

func (r *dpRig) putBigTX(idx uint32, d []byte) {
	r.mem.put(hostileRing+uint64(idx)*txDescSize, d)
}

// ringOfSmallPackets fills a ring of descs descriptors with packets of
// perPkt descriptors each (the last with EOP), every one a 64-byte frame;
// it returns the descriptors used (a whole number of packets).
func ringOfSmallPackets(r *dpRig, descs, perPkt uint32) uint32 {
	r.bigTXRing(descs)
	r.mem.put(dpTxBuf, make([]byte, 64))
	used := (descs - 1) / perPkt * perPkt
	for i := uint32(0); i < used; i++ {
		cmd := uint32(txdCmdRS)
		if i%perPkt == perPkt-1 {
			cmd |= txdCmdEOP
		}
		r.putBigTX(i, txDataDesc(dpTxBuf, int(64/perPkt), cmd, 0, 0))
	}
	return used
}

// ringOfTinyMSS fills a ring with pkts TSO packets of 64 KiB at MSS 1:
// a context descriptor and one data descriptor each.
func ringOfTinyMSS(t testing.TB, r *dpRig, pkts uint32) (descs uint32, segsPerPkt int) {
	payload := make([]byte, 65000)
	frame := buildTCP(t, false, 1, "", payload)
	asTSO(frame, false)
	r.mem.put(dpTxBuf, frame)
	ring := (2*pkts + 8) &^ 7
	r.bigTXRing(ring)
	ctx := txContextDesc(tsoContext(false, len(payload), 1), 0)
	for p := uint32(0); p < pkts; p++ {
		r.putBigTX(2*p, ctx)
		r.putBigTX(2*p+1, txDataDesc(dpTxBuf, len(frame), txdCmdTSE|txdCmdEOP|txdCmdRS, txdPoptsIXSM|txdPoptsTXSM, 0))
	}
	return 2 * pkts, (len(payload) + txMinMSS - 1) / txMinMSS
}

// finish runs worker turns until none is left, at most limit of them.
func finish(t *testing.T, h *handWorker, limit int) int {
	t.Helper()
	turns := 0
	for h.step() {
		if turns++; turns > limit {
			t.Fatalf("more than %d worker turns", limit)
		}
	}
	return turns
}

func TestTXDoorbellBudgetFrames(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.be.count = true
	h := useHandWorker(r.n)
	const total = 2000
	used := ringOfSmallPackets(r, 2048, 1)
	if used < total {
		t.Fatal("ring too small")
	}
	r.w(TDT0, total)
	if f, _ := r.be.sent(); f != txBudgetFrames {
		t.Fatalf("the doorbell sent %d frames, want the budget of %d", f, txBudgetFrames)
	}
	// The register file answers while the ring is only partly done.
	if hd := r.rd(TDH0); hd != txBudgetFrames {
		t.Fatalf("TDH %d after the doorbell, want %d", hd, txBudgetFrames)
	}
	if h.waiting() != 1 {
		t.Fatalf("%d worker turns started, want 1", h.waiting())
	}
	// Each turn of the worker is a budget too.
	h.step()
	if f, _ := r.be.sent(); f != 2*txBudgetFrames {
		t.Fatalf("after one worker turn %d frames, want %d", f, 2*txBudgetFrames)
	}
	finish(t, h, total/txBudgetFrames+1)
	if f, _ := r.be.sent(); f != total {
		t.Fatalf("%d frames in all, want %d", f, total)
	}
	if hd := r.rd(TDH0); hd != total {
		t.Fatalf("TDH %d, want %d", hd, total)
	}
	if r.stat(ICR)&ICR_TXQE == 0 {
		t.Error("TXQE not raised once the ring was empty")
	}
}

func TestTXDoorbellBudgetTinyMSS(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.be.count = true
	h := useHandWorker(r.n)
	const pkts = 40
	descs, segs := ringOfTinyMSS(t, r, pkts)
	if segs > txMaxSegments || segs < txBudgetFrames {
		t.Fatalf("test packet makes %d segments", segs)
	}
	r.w(TDT0, descs)
	// One packet is more than the budget: the doorbell sends it whole and
	// stops at its end.
	f, b := r.be.sent()
	if f > txBudgetFrames-1+txMaxSegments {
		t.Fatalf("the doorbell sent %d frames, more than the budget and one packet", f)
	}
	if f != segs {
		t.Fatalf("the doorbell sent %d frames, want one packet's %d", f, segs)
	}
	// MSS 1 was taken as txMinMSS: full segments carry 64 bytes.
	if want := segs*54 + 65000; b != want {
		t.Errorf("%d bytes sent, want %d (segments of %d bytes of payload)", b, want, txMinMSS)
	}
	if hd := r.rd(TDH0); hd != 2 {
		t.Fatalf("TDH %d after the doorbell, want 2 (one packet)", hd)
	}
	finish(t, h, pkts+1)
	if f, _ := r.be.sent(); f != pkts*segs {
		t.Fatalf("%d frames in all, want %d", f, pkts*segs)
	}
	if hd := r.rd(TDH0); hd != descs {
		t.Fatalf("TDH %d, want %d", hd, descs)
	}
	if r.stat(TSCTC) != pkts {
		t.Errorf("TSCTC %d, want %d", r.stat(TSCTC), pkts)
	}
}

// The worker also runs for real: everything is sent, with no test turning
// the crank.
func TestTXDoorbellBudgetWorker(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.be.count = true
	const pkts = 60
	descs, segs := ringOfTinyMSS(t, r, pkts)
	r.w(TDT0, descs)
	reads := 0
	deadline := time.Now().Add(20 * time.Second)
	for r.rd(TDH0) != descs {
		reads++
		if time.Now().After(deadline) {
			t.Fatalf("TDH %d after %d register reads, want %d", r.rd(TDH0), reads, descs)
		}
		time.Sleep(time.Millisecond)
	}
	if f, _ := r.be.sent(); f != pkts*segs {
		t.Fatalf("%d frames, want %d", f, pkts*segs)
	}
}

// Quiesce between two turns stops transmit at a packet boundary, with the
// rest of the ring in flight; Resume sends the rest, each packet once.
func TestTXQuiesceDuringContinuation(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.be.count = true
	h := useHandWorker(r.n)
	const perPkt = 3
	used := ringOfSmallPackets(r, 2048, perPkt)
	r.w(TDT0, used)
	h.step()
	before, _ := r.be.sent()
	r.n.Quiesce()
	for h.step() {
	}
	after, _ := r.be.sent()
	if after != before {
		t.Fatalf("%d frames sent after Quiesce", after-before)
	}
	hd := r.rd(TDH0)
	if hd%perPkt != 0 || hd == 0 || hd == used {
		t.Fatalf("quiesced with TDH %d: not inside the ring at a packet boundary", hd)
	}
	if int(hd)/perPkt != before {
		t.Fatalf("TDH %d for %d frames sent", hd, before)
	}
	r.n.mu.Lock()
	in, ok := r.n.saveTXInflight()
	r.n.mu.Unlock()
	if !ok || in.Head != hd || in.Count != used-hd || in.Discard {
		t.Fatalf("in-flight state %+v, want head %d and %d descriptors", in, hd, used-hd)
	}

	r.n.Resume()
	finish(t, h, int(used))
	if f, _ := r.be.sent(); f != int(used/perPkt) {
		t.Fatalf("%d frames in all, want %d (each packet once)", f, used/perPkt)
	}
	if hd := r.rd(TDH0); hd != used {
		t.Fatalf("TDH %d after Resume, want %d", hd, used)
	}
}

// Packets gathered in full and then dropped (TSE with an unusable context:
// MSS 0) emit nothing, yet each costs a 64 KiB copy: the budget counts the
// bytes gathered, so a doorbell copies about txBudgetBytes, not a ring's
// worth (270 MB for 4096 descriptors).
func TestTXBudgetCountsGatheredBytes(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.be.count = true
	h := useHandWorker(r.n)
	const descs = 8192
	r.bigTXRing(descs)
	r.mem.put(dpTxBuf, make([]byte, txMaxPacket))
	r.putBigTX(0, txContextDesc(txContext{tse: true}, 0)) // MSS 0: unusable
	for i := uint32(1); i < descs-1; i++ {
		r.putBigTX(i, txDataDesc(dpTxBuf, txMaxPacket, txdCmdTSE|txdCmdEOP, 0, 0))
	}
	r.w(TDT0, descs-1)
	// The context descriptor, then packets until the bytes reach the
	// budget: the turn ends at the first packet boundary past it.
	perTurn := uint32((txBudgetBytes + txMaxPacket - 1) / txMaxPacket)
	if hd := r.rd(TDH0); hd != 1+perTurn {
		t.Fatalf("TDH %d after the doorbell, want %d (the context and %d packets)", hd, 1+perTurn, perTurn)
	}
	if h.waiting() != 1 {
		t.Fatalf("%d worker turns started, want 1", h.waiting())
	}
	h.step()
	if hd := r.rd(TDH0); hd != 1+2*perTurn {
		t.Fatalf("TDH %d after a worker turn, want %d", hd, 1+2*perTurn)
	}
	finish(t, h, descs/int(perTurn)+1)
	if hd := r.rd(TDH0); hd != descs-1 {
		t.Fatalf("TDH %d, want %d", hd, descs-1)
	}
	if f, _ := r.be.sent(); f != 0 {
		t.Errorf("%d frames sent for packets that are all dropped", f)
	}
	if got := r.stat(TSCTFC); got != descs-2 {
		t.Errorf("TSCTFC %d, want %d", got, descs-2)
	}
}

// Dropped packets that are small still count, each as a frame: a ring of
// them is done txBudgetFrames at a time, not txBudgetDescs.
func TestTXBudgetCountsDroppedPackets(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.be.count = true
	h := useHandWorker(r.n)
	const descs = 2048
	r.bigTXRing(descs)
	r.mem.put(dpTxBuf, make([]byte, 100))
	r.putBigTX(0, txContextDesc(txContext{tse: true}, 0)) // MSS 0: unusable
	for i := uint32(1); i < descs-1; i++ {
		r.putBigTX(i, txDataDesc(dpTxBuf, 100, txdCmdTSE|txdCmdEOP, 0, 0))
	}
	r.w(TDT0, descs-1)
	if hd := r.rd(TDH0); hd != 1+txBudgetFrames {
		t.Fatalf("TDH %d after the doorbell, want %d (the context and %d dropped packets)", hd, 1+txBudgetFrames, txBudgetFrames)
	}
	finish(t, h, descs/txBudgetFrames+1)
	if hd := r.rd(TDH0); hd != descs-1 {
		t.Fatalf("TDH %d, want %d", hd, descs-1)
	}
}

// A TSO context asking for less than txMinMSS is segmented at txMinMSS.
func TestTSOMinMSS(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	payload := make([]byte, 300)
	for i := range payload {
		payload[i] = byte(i)
	}
	frame := buildTCP(t, false, 1000, "", payload)
	asTSO(frame, false)
	for _, mss := range []int{1, 7, txMinMSS - 1} {
		r.sendFragmented(frame, 4096, txdCmdTSE, txdPoptsIXSM|txdPoptsTXSM, 0, 0,
			txContextDesc(tsoContext(false, len(payload), mss), 0))
		got := r.be.take()
		if want := (len(payload) + txMinMSS - 1) / txMinMSS; len(got) != want {
			t.Fatalf("MSS %d: %d segments, want %d", mss, len(got), want)
		}
		for i, f := range got {
			want := min(txMinMSS, len(payload)-i*txMinMSS)
			if len(f) != 54+want {
				t.Errorf("MSS %d: segment %d of %d bytes, want %d", mss, i, len(f), 54+want)
			}
		}
	}
	serviceableTX(t, r)
}

// BenchmarkRegReadDuringHostileTX measures a register read's latency while
// the worker keeps working through rings of 64 KiB TSO packets at MSS 1:
// the lock is free between turns, so a read waits for one turn at most.
func BenchmarkRegReadDuringHostileTX(b *testing.B) {
	r := newRig(b, device.IRQModeMSIX, Config{})
	r.be.count = true
	const pkts = 200
	descs, _ := ringOfTinyMSS(b, r, pkts)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r.rd(TDH0) == r.rd(TDT0) {
				// Ring it again from the start.
				r.w(TDH0, 0)
				r.w(TDT0, descs)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var worst time.Duration
	for b.Loop() {
		t0 := time.Now()
		r.n.ReadReg(STATUS)
		if d := time.Since(t0); d > worst {
			worst = d
		}
	}
	close(stop)
	<-done
	frames, _ := r.be.sent()
	b.ReportMetric(float64(worst.Microseconds()), "worst-µs")
	b.ReportMetric(float64(frames)/float64(b.N), "frames/read")
}

// BenchmarkTXDoorbellDroppedPackets measures one doorbell over a ring of
// 64 KiB TSO packets that are gathered and dropped (MSS 0), their buffers
// spread over 128 MiB so the copies miss the caches: what a register
// access may wait for, since the doorbell runs with the NIC's lock held.
func BenchmarkTXDoorbellDroppedPackets(b *testing.B) {
	r := newRig(b, device.IRQModeMSIX, Config{})
	r.be.count = true
	useHandWorker(r.n) // the turns after the doorbell are not run
	const descs = 8192
	const bufs = 2048
	const bufBase = 16 << 20
	r.mem.mu.Lock()
	nb := make([]byte, bufBase+bufs*txMaxPacket)
	copy(nb, r.mem.b)
	r.mem.b = nb
	r.mem.mu.Unlock()
	r.bigTXRing(descs)
	r.putBigTX(0, txContextDesc(txContext{tse: true}, 0)) // MSS 0: unusable
	for i := uint32(1); i < descs-1; i++ {
		r.putBigTX(i, txDataDesc(bufBase+uint64(i%bufs)*txMaxPacket, txMaxPacket, txdCmdTSE|txdCmdEOP, 0, 0))
	}
	r.w(TDT0, 1) // the context
	if r.rd(TDH0) != 1 {
		b.Fatal("context descriptor not consumed")
	}
	var worst time.Duration
	k := uint32(0)
	for b.Loop() {
		// Start each doorbell elsewhere, on buffers not touched lately.
		k++
		r.w(TDH0, 1+k*37%(descs-64))
		t0 := time.Now()
		r.w(TDT0, descs-1)
		if d := time.Since(t0); d > worst {
			worst = d
		}
	}
	b.ReportMetric(float64(worst.Microseconds()), "worst-µs")
}
