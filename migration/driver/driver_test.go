package driver_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/device/announce"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/migration/driver"
	"e1000e-vfu/vfiouser"
)

type migrateFunc func(src, dst driver.Endpoint, o driver.Options) (driver.Report, error)

var bcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// migrateUnderTraffic migrates a NIC holding a half-sent packet (its
// first descriptor in the ring, no EOP yet) and a receive burst larger than
// its free descriptors, while frames keep arriving during pre-copy; then
// checks on the destination that every frame arrives once, in order and
// intact, and that the half-sent packet goes out whole.
func migrateUnderTraffic(t *testing.T, opts e1000e.MigrationOptions, migrate migrateFunc, dopts driver.Options) driver.Report {
	src, dst := newSide(t, opts), newSide(t, opts)
	g := &guest{t: t, s: src}
	g.init()
	mac := src.nic.MAC()
	const rxSize, txSize = 200, 300
	seq := uint32(0)
	rx := func(s *side) {
		s.nic.Receive(frame(mac, seq, rxSize))
		seq++
	}
	for i := 0; i < 10; i++ {
		rx(src)
	}
	if n := g.poll(); n != 10 {
		t.Fatalf("warm-up: the guest took %d frames, want 10", n)
	}
	txSeq := uint32(0)
	for i := 0; i < 5; i++ {
		g.send(frame(bcast, txSeq, txSize))
		txSeq++
	}
	waitFor(t, "warm-up transmit", func() bool { return len(src.sent.all()) == 5 })

	// A burst the guest does not take yet, and half a packet.
	for i := 0; i < 40; i++ {
		rx(src)
	}
	half := frame(bcast, txSeq, txSize)
	g.putTX(half[:100], cmdIFCS)
	g.wr(e1000e.TDT0, g.txTail)

	// Traffic while the device runs in pre-copy: at least 30 frames, then
	// stopped where the VMM stops the vCPUs.
	base := seq
	stop := make(chan struct{})
	sent := make(chan uint32)
	go func() {
		n := uint32(0)
		defer func() { sent <- n }()
		for n < 100 {
			select {
			case <-stop:
				if n >= 30 {
					return
				}
			default:
			}
			src.nic.Receive(frame(mac, base+n, rxSize))
			n++
			time.Sleep(50 * time.Microsecond)
		}
		<-stop
	}()
	dopts.BeforeStop = func() {
		close(stop)
		seq += <-sent
	}
	rep, err := migrate(src.endpoint(), dst.endpoint(), dopts)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := src.cl.MigrationState(); st != device.MigStop {
		t.Errorf("source ends in state %d, want STOP", st)
	}
	if st, _ := dst.cl.MigrationState(); st != device.MigRunning {
		t.Errorf("destination ends in state %d, want RUNNING", st)
	}

	// The guest goes on with the destination: the rest of the packet, more
	// traffic, and every frame received.
	g.s = dst
	g.putTX(half[100:], cmdEOP|cmdIFCS|cmdRS)
	g.wr(e1000e.TDT0, g.txTail)
	txSeq++
	for i := 0; i < 20; i++ {
		rx(dst)
	}
	waitFor(t, "every received frame", func() bool {
		g.poll()
		return len(g.got) >= int(seq)
	})
	checkSeq(t, "received", g.got, int(seq), rxSize)
	waitFor(t, "the half-sent packet", func() bool { return len(dst.sent.all()) >= 1 })
	if n := len(src.sent.all()); n != 5 {
		t.Errorf("the source sent %d frames, want the 5 of the warm-up", n)
	}
	checkSeq(t, "transmitted", append(src.sent.all(), dst.sent.all()...), int(txSeq), txSize)
	// The destination tells the network where the guest is now; the
	// source, which loaded nothing, does not.
	waitFor(t, "the destination's announcement", func() bool { return len(dst.sent.announced()) >= 1 })
	var dstMAC [6]byte
	copy(dstMAC[:], dst.nic.MAC())
	if f := dst.sent.announced()[0]; !bytes.Equal(f, announce.AppendRARP(nil, announce.Address{MAC: dstMAC})) {
		t.Errorf("the destination announced %x", f)
	}
	if n := len(src.sent.announced()); n != 0 {
		t.Errorf("the source announced itself %d times", n)
	}
	if g.rd(e1000e.TDH0) != g.txTail {
		t.Errorf("TDH %d after the packet, want %d", g.rd(e1000e.TDH0), g.txTail)
	}
	t.Logf("%s: state %d bytes (%d pre-copy), %d pages copied (%d dirty), downtime %v, total %v; %d frames received",
		rep.Protocol, rep.StateBytes, rep.PreCopyBytes, rep.Pages, rep.DirtyPages, rep.Downtime, rep.Total, seq)
	if rep.StateBytes == 0 || rep.DirtyPages == 0 {
		t.Errorf("report: %+v", rep)
	}
	return rep
}

func TestMigrateV2UnderTraffic(t *testing.T) {
	rep := migrateUnderTraffic(t, e1000e.MigrationOptions{}, driver.MigrateV2, driver.Options{})
	if rep.PreCopyBytes == 0 {
		t.Error("nothing moved in pre-copy")
	}
	if want := uint64(rep.StateBytes - rep.PreCopyBytes); rep.SizeEstimate != want {
		t.Errorf("MIG_DATA_SIZE in STOP_COPY said %d bytes, %d came", rep.SizeEstimate, want)
	}
}

func TestMigrateV1UnderTraffic(t *testing.T) {
	t.Run("mmap", func(t *testing.T) {
		migrateUnderTraffic(t, e1000e.MigrationOptions{V1: true, V1MMap: true}, driver.MigrateV1, driver.Options{})
	})
	t.Run("region-access", func(t *testing.T) {
		migrateUnderTraffic(t, e1000e.MigrationOptions{V1: true}, driver.MigrateV1, driver.Options{})
	})
}

// TestDirtyPagesExact: during logging, every page the NIC wrote is
// reported, and no other. The guest prepares descriptors and buffers
// before logging starts and only writes registers while it runs, so every
// change of memory is the NIC's.
func TestDirtyPagesExact(t *testing.T) {
	for _, v1 := range []bool{false, true} {
		s := newSide(t, e1000e.MigrationOptions{V1: v1})
		g := &guest{t: t, s: s}
		for i := range s.mem.Data {
			s.mem.Data[i] = 0xa5
		}
		g.init()
		mac := s.nic.MAC()
		// Three TX packets ready in the ring, not yet announced.
		for i := 0; i < 3; i++ {
			g.putTX(frame(bcast, uint32(i), 300), cmdEOP|cmdIFCS|cmdRS)
		}
		var err error
		if v1 {
			err = s.cl.DirtyPages(vfiouser.DirtyPagesStart)
		} else {
			_, err = s.cl.DMALoggingStart(4096, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		shadow := bytes.Clone(s.mem.Data)
		g.wr(e1000e.TDT0, g.txTail)
		for i := 0; i < 17; i++ { // RX frames at descriptors 0..16: pages of buffers 0..16 and the ring page
			s.nic.Receive(frame(mac, uint32(i), 1500))
		}
		waitFor(t, "transmit", func() bool { return len(s.sent.all()) == 3 })
		var bm []byte
		if v1 {
			bm, err = s.cl.DirtyPagesBitmap(guestIOVA, guestSize, 4096)
		} else {
			bm, err = s.cl.DMALoggingReport(guestIOVA, guestSize, 4096)
		}
		if err != nil {
			t.Fatal(err)
		}
		written, reported := 0, 0
		for p := 0; p < guestSize/4096; p++ {
			changed := !bytes.Equal(shadow[p*4096:(p+1)*4096], s.mem.Data[p*4096:(p+1)*4096])
			dirty := bm[p/8]&(1<<(p%8)) != 0
			if changed {
				written++
			}
			if dirty {
				reported++
			}
			if changed != dirty {
				t.Errorf("v1=%v: page %#x: written %v, reported %v", v1, guestIOVA+p*4096, changed, dirty)
			}
		}
		if written < 10 {
			t.Errorf("v1=%v: only %d pages written: the test does not exercise the NIC", v1, written)
		}
		t.Logf("v1=%v: %d pages written, %d reported", v1, written, reported)
	}
}

// TestResumingIsQuiet: a destination in RESUMING takes config writes,
// SET_IRQS and register writes, but neither touches guest memory nor
// signals an eventfd, whatever arrives from the network; once running with
// the loaded state it does both.
func TestResumingIsQuiet(t *testing.T) {
	src, dst := newSide(t, e1000e.MigrationOptions{}), newSide(t, e1000e.MigrationOptions{})
	efds := make([]*vfiouser.EventFD, 5)
	for i := range efds {
		e, err := vfiouser.NewEventFD()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		efds[i] = e
	}
	msix := func(g *guest) {
		if err := g.s.cl.WriteRegion(device.RegionConfig, 0xA3, []byte{0x80}); err != nil {
			t.Fatal(err)
		}
		g.wr(e1000e.IVAR, 0x80000000|0x8|0x9<<8|0xa<<16)
		g.wr(e1000e.EIAC, e1000e.ICR_RXQ0|e1000e.ICR_TXQ0)
		g.wr(e1000e.IMS, e1000e.ICR_RXQ0|e1000e.ICR_TXQ0|e1000e.ICR_OTHER)
	}
	gs := &guest{t: t, s: src}
	gs.init()
	msix(gs)

	if _, err := dst.cl.SetMigrationState(device.MigResuming); err != nil {
		t.Fatal(err)
	}
	gd := &guest{t: t, s: dst}
	gd.init()
	msix(gd)
	if err := dst.cl.SetIRQEventFDs(device.IRQMSIX, 0, efds); err != nil {
		t.Fatal(err)
	}
	snapshot := bytes.Clone(dst.mem.Data)
	mac := dst.nic.MAC()
	for i := 0; i < 5; i++ {
		dst.nic.Receive(frame(mac, uint32(i), 100))
	}
	gd.wr(e1000e.ICS, e1000e.ICR_RXQ0)
	if !bytes.Equal(snapshot, dst.mem.Data) {
		t.Error("a resuming device wrote guest memory")
	}
	for v, e := range efds {
		if n, _ := e.Wait(20 * time.Millisecond); n != 0 {
			t.Errorf("a resuming device signalled vector %d", v)
		}
	}

	if _, err := driver.MigrateV2(src.endpoint(), dst.endpoint(), driver.Options{}); err != nil {
		t.Fatal(err)
	}
	dst.nic.Receive(frame(mac, 0, 100))
	if n, _ := efds[0].Wait(5 * time.Second); n == 0 {
		t.Error("no RX interrupt from the running destination")
	}
	gs.s = dst
	if n := gs.poll(); n != 1 {
		t.Errorf("the destination delivered %d frames, want 1", n)
	}
}

// TestIncompatibleDestinationRefusesEarly: a version-2 state into a NIC
// started as version 1 fails at the first pre-copy write, naming
// rx-filter-size; the source goes back to running, the destination stays
// untouched in RESUMING.
func TestIncompatibleDestinationRefusesEarly(t *testing.T) {
	src := newSide(t, e1000e.MigrationOptions{})
	logs := &logBuf{}
	dst := newSideFilters(t, e1000e.MigrationOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))}, 0)
	g := &guest{t: t, s: src}
	g.init()
	stopped := false
	_, err := driver.MigrateV2(src.endpoint(), dst.endpoint(), driver.Options{BeforeStop: func() { stopped = true }})
	// The wire carries an errno; the destination's log names the cause.
	if err == nil || !strings.Contains(err.Error(), "MIG_DATA_WRITE") {
		t.Fatalf("migration into a version-1 NIC: %v, want the first data write refused", err)
	}
	if !strings.Contains(logs.String(), "rx-filter-size") {
		t.Errorf("the destination's refusal does not name rx-filter-size: %s", logs)
	}
	if stopped {
		t.Error("the source was stopped before the destination refused")
	}
	if st, _ := dst.cl.MigrationState(); st != device.MigResuming {
		t.Errorf("destination in state %d, want RESUMING", st)
	}
	if _, err := src.cl.SetMigrationState(device.MigRunning); err != nil {
		t.Fatal(err)
	}
	src.nic.Receive(frame(src.nic.MAC(), 0, 100))
	if n := g.poll(); n != 1 {
		t.Errorf("the source took %d frames after the refusal, want 1", n)
	}
}
