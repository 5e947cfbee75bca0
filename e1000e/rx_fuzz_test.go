package e1000e

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"e1000e-vfu/device"
)

// countingMem counts guest memory accesses so the fuzz target can bound the
// work one doorbell does.
type countingMem struct {
	*dpMem
	ops atomic.Int64
}

func (m *countingMem) Read(addr uint64, p []byte) error {
	m.ops.Add(1)
	return m.dpMem.Read(addr, p)
}

func (m *countingMem) Write(addr uint64, p []byte) error {
	m.ops.Add(1)
	return m.dpMem.Write(addr, p)
}

// FuzzDatapath writes random descriptors into both rings and random values
// into the datapath's registers, rings the doorbells and feeds a frame: no
// panic, indices stay inside the rings, and each doorbell does work bounded
// by the ring size.
func FuzzDatapath(f *testing.F) {
	// Seeds: a 64-byte frame on the TX ring and a buffer on the RX ring;
	// a TSO context with data; packet split with a jumbo frame.
	seed := func(ctl [16]byte, descs ...[]byte) []byte {
		b := append([]byte(nil), ctl[:]...)
		for _, d := range descs {
			b = append(b, d...)
		}
		return b
	}
	plain := [16]byte{0: 16, 1: 0, 2: 1, 3: 4}
	f.Add(seed(plain, txDataDesc(dpTxBuf, 64, txdCmdEOP|txdCmdRS, 0, 0)), testFrame(64, 1))
	tso := plain
	tso[2] = 3
	f.Add(seed(tso, txContextDesc(tsoContext(false, 3000, 0), 0),
		txDataDesc(dpTxBuf, 3054, txdCmdTSE|txdCmdEOP|txdCmdRS, 3, 0)), testFrame(1500, 2))
	ps := plain
	ps[4], ps[5] = 0x04, 0x20 // RCTL packet split + LPE; RFCTL EXTEN
	f.Add(seed(ps, txLegacyDesc(dpTxBuf, 60, txdCmdEOP|txdCmdIC, 14, 200)), testFrame(9000, 3))
	f.Add(seed([16]byte{0: 255, 2: 200, 3: 255, 6: 0xFF, 7: 0xFF}), []byte{})

	f.Fuzz(func(t *testing.T, ctl, frame []byte) {
		var c [16]byte
		copy(c[:], ctl)
		descs := ctl[min(len(ctl), 16):]
		r := newRig(t, device.IRQModeMSIX, Config{})
		mem := &countingMem{dpMem: r.mem}
		r.n.mu.Lock()
		r.n.mem = mem
		r.n.mu.Unlock()

		txDescs := uint32(c[0])%64 + 1
		rxSlots := uint32(c[3])%64 + 2
		r.w(TDLEN0, txDescs*txDescSize)
		r.w(RDLEN0, rxSlots*rxRingSlot)
		// Random descriptors fill both rings; buffer addresses point into
		// guest RAM often enough to exercise the copies.
		ring := make([]byte, 64*txDescSize)
		copy(ring, descs)
		for i := 0; i+8 <= len(ring); i += txDescSize {
			a := binary.LittleEndian.Uint64(ring[i:])
			if c[8]&1 == 0 {
				binary.LittleEndian.PutUint64(ring[i:], a%dpMemSize)
			}
		}
		r.mem.put(dpTxRing, ring)
		r.mem.put(dpRxRing, ring)
		r.mem.put(dpTxBuf, frame)
		r.w(RCTL, RCTL_EN|rctlUPE|rctlMPE|uint32(c[4])<<8|uint32(c[9])<<16|uint32(c[10]&0x06)<<24)
		r.w(RFCTL, uint32(c[5])<<8)
		r.w(PSRCTL, binary.LittleEndian.Uint32(c[12:]))
		r.w(TCTL, TCTL_EN|uint32(c[11]&0x08))
		if c[6]&1 != 0 {
			r.w(CTRL, r.rd(CTRL)|CTRL_VME)
		}
		if c[6]&2 != 0 {
			r.w(MRQC, mrqcEnableRSS|0x3F<<16)
			r.w(RXCSUM, rxcsumIPOFL|rxcsumTUOFL)
		}
		if c[6]&4 != 0 {
			r.w(RCTL, r.rd(RCTL)|rctlLBMMAC)
		}
		r.w(TDH0, uint32(c[1]))
		r.w(RDH0, uint32(c[7]))

		bound := func(what string, ring uint32) {
			// Each descriptor is read at most twice, with at most four
			// buffer copies and two write-back writes, plus the scan
			// window of one packet.
			if ops := mem.ops.Swap(0); ops > int64(8*ring+2*txMaxScan+16) {
				t.Fatalf("%s: %d guest memory accesses for a ring of %d", what, ops, ring)
			}
		}
		r.w(TDT0, uint32(c[2]))
		bound("TDT", txDescs+rxSlots) // loopback adds receive work
		r.w(RDT0, uint32(c[3]))
		bound("RDT", rxSlots)
		for i := 0; i < 3; i++ {
			r.n.Receive(frame)
			bound("receive", rxSlots)
		}
		if h := r.rd(TDH0); h >= txDescs && h != uint32(c[1]) {
			t.Fatalf("TDH %d outside a ring of %d", h, txDescs)
		}
		if h := r.rd(RDH0); h >= rxSlots && h != uint32(c[7]) {
			t.Fatalf("RDH %d outside a ring of %d", h, rxSlots)
		}
	})
}
