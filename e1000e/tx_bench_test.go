package e1000e

import (
	"encoding/binary"
	"testing"

	"e1000e-vfu/device"
)

// Per-frame cost of the datapath, and proof that the steady state does not
// allocate. The backend only counts frames, so what is measured is the NIC:
// descriptor reads, gathering, offloads, write-backs and interrupts.

// txBench drives the TX ring without allocating: one descriptor (or a
// context plus data descriptors) rewritten in place per frame.
type txBench struct {
	r     *dpRig
	descs [][]byte
}

func newTXBench(tb testing.TB, frame []byte, ctx []byte, firstCmd uint32, popts byte) *txBench {
	r := newRig(tb, device.IRQModeMSIX, Config{})
	r.be.count = true
	r.mem.put(dpTxBuf, frame)
	b := &txBench{r: r}
	if ctx != nil {
		b.descs = append(b.descs, ctx)
	}
	const frag = 4096
	for off := 0; off < len(frame); off += frag {
		n := min(frag, len(frame)-off)
		cmd, p := uint32(0), byte(0)
		if off == 0 {
			cmd, p = firstCmd, popts
		}
		if off+n == len(frame) {
			cmd |= txdCmdEOP | txdCmdRS
		}
		b.descs = append(b.descs, txDataDesc(dpTxBuf+uint64(off), n, cmd, p, 0))
	}
	return b
}

func (b *txBench) send() {
	r := b.r
	for _, d := range b.descs {
		_ = r.mem.Write(dpTxRing+uint64(r.txTail)*txDescSize, d)
		r.txTail = (r.txTail + 1) % dpRingDescs
	}
	r.n.WriteReg(TDT0, r.txTail)
}

// rxBench posts one extended descriptor per frame and receives it.
type rxBench struct {
	r     *dpRig
	desc  [rxDescSize]byte
	frame []byte
}

func newRXBench(tb testing.TB, frame []byte) *rxBench {
	r := newRig(tb, device.IRQModeMSIX, Config{})
	r.w(RCTL, r.rd(RCTL)|rctlLPE|rctlBSEX|1<<rctlBSIZESh) // 16 KiB buffers
	return &rxBench{r: r, frame: frame}
}

func (b *rxBench) receive() {
	r := b.r
	binary.LittleEndian.PutUint64(b.desc[:], dpRxBuf)
	clear(b.desc[8:])
	_ = r.mem.Write(dpRxRing+uint64(r.rxTail)*rxDescSize, b.desc[:])
	r.rxTail = (r.rxTail + 1) % dpRingDescs
	r.n.WriteReg(RDT0, r.rxTail)
	r.n.Receive(b.frame)
}

func tsoBenchFrame(tb testing.TB) ([]byte, []byte) {
	payload := make([]byte, 65536-54)
	f := buildTCP(tb, false, 1, "", payload)
	asTSO(f, false)
	return f, txContextDesc(tsoContext(false, len(payload), 1448), 0)
}

func TestDatapathSteadyStateAllocs(t *testing.T) {
	tso, ctx := tsoBenchFrame(t)
	for _, c := range []struct {
		name string
		run  func()
	}{
		{"tx64", newTXBench(t, testFrame(64, 1), nil, 0, 0).send},
		{"tx1500", newTXBench(t, buildTCP(t, false, 1, "", make([]byte, 1446)), txContextDesc(tsoContext(false, 0, 0), 0), 0, txdPoptsIXSM|txdPoptsTXSM).send},
		{"txTSO", newTXBench(t, tso, ctx, txdCmdTSE, txdPoptsIXSM|txdPoptsTXSM).send},
		{"rx64", newRXBench(t, testFrame(64, 2)).receive},
		{"rx1500", newRXBench(t, buildTCP(t, false, 1, "", make([]byte, 1446))).receive},
	} {
		c.run() // first use allocates the buffers
		if a := testing.AllocsPerRun(200, c.run); a != 0 {
			t.Errorf("%s: %.1f allocations per frame, want 0", c.name, a)
		}
	}
}

func BenchmarkTX64(b *testing.B) {
	tb := newTXBench(b, testFrame(64, 1), nil, 0, 0)
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		tb.send()
	}
}

func BenchmarkTX1500Checksum(b *testing.B) {
	f := buildTCP(b, false, 1, "", make([]byte, 1446))
	asCsumOffload(f, false)
	tb := newTXBench(b, f, txContextDesc(tsoContext(false, 0, 0), 0), 0, txdPoptsIXSM|txdPoptsTXSM)
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		tb.send()
	}
}

func BenchmarkTXTSO64K(b *testing.B) {
	f, ctx := tsoBenchFrame(b)
	tb := newTXBench(b, f, ctx, txdCmdTSE, txdPoptsIXSM|txdPoptsTXSM)
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		tb.send()
	}
	if tb.r.be.n == 0 {
		b.Fatal("nothing sent")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tb.r.be.n), "ns/segment")
}

func BenchmarkRX64(b *testing.B) {
	rb := newRXBench(b, testFrame(64, 2))
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		rb.receive()
	}
}

func BenchmarkRX1500(b *testing.B) {
	rb := newRXBench(b, buildTCP(b, false, 1, "", make([]byte, 1446)))
	rb.r.w(RXCSUM, rxcsumIPOFL|rxcsumTUOFL)
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		rb.receive()
	}
}

// BenchmarkRX64K is a 64 KiB burst of 1500-byte frames: what a TSO send
// looped back to a receiver costs on the receive side.
func BenchmarkRX64KBurst(b *testing.B) {
	rb := newRXBench(b, buildTCP(b, false, 1, "", make([]byte, 1446)))
	b.ReportAllocs()
	b.SetBytes(44 * 1500)
	for b.Loop() {
		for i := 0; i < 44; i++ {
			rb.receive()
		}
	}
}
