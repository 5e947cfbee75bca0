package driver_test

import (
	"bytes"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
)

// setState moves a side's device to s and checks that it got there.
func (s *side) setState(t *testing.T, st device.MigrationState) {
	t.Helper()
	got, err := s.cl.SetMigrationState(st)
	if err != nil || got != st {
		t.Fatalf("SET MIG_DEVICE_STATE %d: %d %v", st, got, err)
	}
}

// TestMigrateThroughRunningP2P walks a NIC with the P2P states through the
// arcs QEMU takes when a guest has several VFIO devices, one at a time:
// RUNNING→RUNNING_P2P on every device first, then →STOP, →STOP_COPY. In
// RUNNING_P2P the NIC answers register accesses and keeps moving frames
// both ways (logged as dirty); the state saved in STOP_COPY resumes on the
// destination through STOP→RUNNING_P2P→RUNNING, where the guest goes on.
func TestMigrateThroughRunningP2P(t *testing.T) {
	opts := e1000e.MigrationOptions{P2P: true}
	src, dst := newSide(t, opts), newSide(t, opts)
	flags, err := src.cl.MigrationFlags()
	if err != nil || flags&device.MigFlagP2P == 0 {
		t.Fatalf("MIGRATION flags %#x, %v: P2P not offered", flags, err)
	}
	g := &guest{t: t, s: src}
	g.init()
	mac := src.nic.MAC()
	const size = 200
	seq := uint32(0)
	rx := func(s *side) {
		s.nic.Receive(frame(mac, seq, size))
		seq++
	}
	for i := 0; i < 4; i++ {
		rx(src)
	}
	if n := g.poll(); n != 4 {
		t.Fatalf("the guest took %d frames before the migration, want 4", n)
	}
	if _, err := src.cl.DMALoggingStart(4096, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := src.cl.DMALoggingReport(guestIOVA, guestSize, 4096); err != nil { // clear
		t.Fatal(err)
	}

	src.setState(t, device.MigRunningP2P)
	if src.nic.Quiesced() {
		t.Error("the NIC is quiesced in RUNNING_P2P")
	}
	// Guest-visible accesses are served: a register written reads back,
	// a frame goes out, frames come in, the interrupt cause is there.
	g.wr(e1000e.ITR, 0x123)
	if v := g.rd(e1000e.ITR); v != 0x123 {
		t.Errorf("ITR reads %#x in RUNNING_P2P, want 0x123", v)
	}
	if v := g.rd(e1000e.STATUS); v&0x2 == 0 { // LU
		t.Errorf("STATUS %#x in RUNNING_P2P: link down", v)
	}
	g.send(frame(bcast, 0, size))
	waitFor(t, "a frame sent in RUNNING_P2P", func() bool { return len(src.sent.all()) == 1 })
	for i := 0; i < 3; i++ {
		rx(src)
	}
	if n := g.poll(); n != 3 {
		t.Errorf("the guest took %d frames in RUNNING_P2P, want 3", n)
	}
	bm, err := src.cl.DMALoggingReport(guestIOVA, guestSize, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(bm, make([]byte, len(bm))) {
		t.Error("the NIC's writes in RUNNING_P2P were not logged")
	}
	// Frames that arrive now wait in the guest's ring, unread, and must
	// arrive on the destination.
	for i := 0; i < 2; i++ {
		rx(src)
	}

	src.setState(t, device.MigStop)
	if !src.nic.Quiesced() {
		t.Error("the NIC runs in STOP")
	}
	// A stopped device still answers accesses, and does not write memory.
	before := bytes.Clone(src.mem.Data)
	if v := g.rd(e1000e.ITR); v != 0x123 {
		t.Errorf("ITR reads %#x in STOP, want 0x123", v)
	}
	g.wr(e1000e.TDT0, g.txTail) // no new descriptor: a no-op write
	src.setState(t, device.MigStopCopy)
	var stream []byte
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("STOP_COPY data never ends")
		}
		n, err := src.cl.MigDataRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, buf[:n]...)
		if n < len(buf) {
			break
		}
	}
	if !bytes.Equal(before, src.mem.Data) {
		t.Error("the NIC wrote guest memory in STOP or STOP_COPY")
	}
	if len(stream) == 0 {
		t.Fatal("no device state in STOP_COPY")
	}

	// The destination: guest memory as the source left it, the state
	// loaded in RESUMING→STOP, then started the same way back.
	copy(dst.mem.Data, src.mem.Data)
	dst.setState(t, device.MigResuming)
	for off := 0; off < len(stream); off += 1000 {
		if err := dst.cl.MigDataWrite(stream[off:min(off+1000, len(stream))]); err != nil {
			t.Fatal(err)
		}
	}
	dst.setState(t, device.MigStop)
	dst.setState(t, device.MigRunningP2P)
	if dst.nic.Quiesced() {
		t.Error("the destination is quiesced in RUNNING_P2P")
	}
	dst.setState(t, device.MigRunning)
	src.setState(t, device.MigStop)

	g.s = dst
	for _, r := range []uint32{e1000e.ITR, e1000e.RCTL, e1000e.TCTL, e1000e.RDBAL0, e1000e.TDT0} {
		if v := g.rd(r); v != src.nic.ReadReg(r) {
			t.Errorf("register %#x: %#x on the destination, %#x on the source", r, v, src.nic.ReadReg(r))
		}
	}
	for i := 0; i < 3; i++ {
		rx(dst)
	}
	waitFor(t, "every frame", func() bool {
		g.poll()
		return len(g.got) >= int(seq)
	})
	checkSeq(t, "received", g.got, int(seq), size)
	g.send(frame(bcast, 1, size))
	waitFor(t, "a frame sent by the destination", func() bool { return len(dst.sent.all()) == 1 })
	checkSeq(t, "transmitted", append(src.sent.all(), dst.sent.all()...), 2, size)
}
