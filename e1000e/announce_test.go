package e1000e

import (
	"bytes"
	"io"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/device/announce"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/internal/panictest"
)

// annClock hands every wait of the announcer to the test, which fires it:
// the rounds are stepped by hand, never timed.
type annClock struct{ waits chan annWait }

type annWait struct {
	d    time.Duration
	fire chan time.Time
}

func (c *annClock) After(d time.Duration) <-chan time.Time {
	w := annWait{d: d, fire: make(chan time.Time, 1)}
	c.waits <- w
	return w.fire
}

// annGuard bounds waits for the announcer's goroutine: a hang guard, not a
// timing assertion.
const annGuard = 10 * time.Second

func (c *annClock) next(t *testing.T) annWait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(annGuard):
		t.Fatal("no announcement round was scheduled")
		return annWait{}
	}
}

// annBackend collects sent frames on a channel.
type annBackend struct{ frames chan []byte }

func (b *annBackend) Send(f []byte) error {
	b.frames <- append([]byte(nil), f...)
	return nil
}
func (b *annBackend) Start(netdev.Receiver) error { return nil }
func (b *annBackend) Close() error                { return nil }

func (b *annBackend) take(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for range n {
		select {
		case f := <-b.frames:
			out = append(out, f)
		case <-time.After(annGuard):
			t.Fatalf("%d frames sent, want %d", len(out), n)
		}
	}
	return out
}

func (b *annBackend) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-b.frames:
		t.Errorf("unexpected frame %x", f)
	default:
	}
}

// logBuf is a concurrency-safe log sink.
type logBuf = panictest.Log

type annRig struct {
	n   *NIC
	m   *Migratable
	clk *annClock
	be  *annBackend
	log *logBuf
}

func newAnnRig(t *testing.T, sched *announce.Schedule) *annRig {
	t.Helper()
	r := &annRig{clk: &annClock{waits: make(chan annWait, 64)}, be: &annBackend{frames: make(chan []byte, 1024)}, log: &logBuf{}}
	n, err := New(Config{
		Backend: r.be, Announce: sched, AnnounceClock: r.clk, RXFilterSize: -1,
		Logger: slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.n = n
	// A driver runs the NIC: its receiver is on.
	n.WriteReg(RCTL, RCTL_EN)
	r.m, err = NewMigratable(n, MigrationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.m.Close() })
	return r
}

// announcements counts the announcements started, from the log line Start
// writes before it returns.
func (r *annRig) announcements() int { return strings.Count(r.log.String(), "msg=announcing") }

func setNICRA(n *NIC, i int, mac [6]byte, valid bool) {
	hi := uint32(mac[4]) | uint32(mac[5])<<8
	if valid {
		hi |= RAH_AV
	}
	n.WriteReg(uint32(RA+8*i), uint32(mac[0])|uint32(mac[1])<<8|uint32(mac[2])<<16|uint32(mac[3])<<24)
	n.WriteReg(uint32(RA+8*i+4), hi)
}

func setVLAN(n *NIC, vid int) {
	off := uint32(VFTA + 4*(vid/32))
	n.WriteReg(off, n.ReadReg(off)|1<<(vid%32))
}

var (
	annMAC2 = [6]byte{0x52, 0x54, 0x00, 0xaa, 0xbb, 0x02}
	annMAC3 = [6]byte{0x52, 0x54, 0x00, 0xaa, 0xbb, 0x03}
)

func addrStrings(as []announce.Address) string {
	var out []string
	for _, a := range as {
		s := net.HardwareAddr(a.MAC[:]).String()
		if a.Tagged {
			s += "@" + strconv.Itoa(int(a.VLAN))
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// Only the entries the guest made valid are announced, once each, within
// the entries the filter honours; VLAN copies only with RCTL.VFE and a
// VFTA bit.
func TestAnnounceAddresses(t *testing.T) {
	r := newAnnRig(t, nil)
	n := r.n
	perm := net.HardwareAddr(n.perm[:]).String()
	if got := addrStrings(n.AnnounceAddresses(nil)); got != perm {
		t.Errorf("after reset: %q, want the NVM's %s", got, perm)
	}
	setNICRA(n, 1, annMAC2, true)
	setNICRA(n, 2, annMAC3, false)                           // not valid
	setNICRA(n, 3, annMAC2, true)                            // a duplicate
	setNICRA(n, 4, [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}, true) // multicast
	setNICRA(n, 5, [6]byte{}, true)                          // all zero
	want := perm + " 52:54:00:aa:bb:02"
	if got := addrStrings(n.AnnounceAddresses(nil)); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// VFTA bits without VFE: no tagged copies.
	setVLAN(n, 100)
	setVLAN(n, 0)
	setVLAN(n, 4095)
	setVLAN(n, 4094)
	if got := addrStrings(n.AnnounceAddresses(nil)); got != want {
		t.Errorf("without VFE: got %q, want %q", got, want)
	}
	n.WriteReg(RCTL, RCTL_EN|rctlVFE)
	wantVLAN := want + " " + perm + "@100 52:54:00:aa:bb:02@100 " + perm + "@4094 52:54:00:aa:bb:02@4094"
	if got := addrStrings(n.AnnounceAddresses(nil)); got != wantVLAN {
		t.Errorf("with VFE: got %q, want %q", got, wantVLAN)
	}
	// VFE with an empty table: untagged only.
	for w := 0; w < vftaEntries; w++ {
		n.WriteReg(uint32(VFTA+4*w), 0)
	}
	if got := addrStrings(n.AnnounceAddresses(nil)); got != want {
		t.Errorf("VFE with no VLAN: got %q, want %q", got, want)
	}
	// Without a valid address there is nothing to tag either.
	setVLAN(n, 7)
	for i := 0; i < numRA; i++ {
		n.WriteReg(uint32(RA+8*i+4), 0)
	}
	if got := n.AnnounceAddresses(nil); len(got) != 0 {
		t.Errorf("no valid address: %s", addrStrings(got))
	}
}

// A NIC whose receiver the guest has not enabled, or that is stopped for
// migration, has no address to announce: the guest is not reachable
// through it, or is leaving. Neither a round in progress nor the control
// command sends anything then.
func TestAnnounceNothingWhenNotReceiving(t *testing.T) {
	r := newAnnRig(t, nil)
	n := r.n
	if len(n.AnnounceAddresses(nil)) == 0 {
		t.Fatal("a receiving NIC has nothing to announce")
	}
	n.WriteReg(RCTL, 0)
	if got := n.AnnounceAddresses(nil); len(got) != 0 {
		t.Errorf("receiver off: %s", addrStrings(got))
	}
	if st, err := n.Announce(); err != nil || st.Addresses != 0 {
		t.Errorf("receiver off: Announce = %+v, %v", st, err)
	}
	n.WriteReg(RCTL, RCTL_EN)
	n.Quiesce()
	if got := n.AnnounceAddresses(nil); len(got) != 0 {
		t.Errorf("quiesced: %s", addrStrings(got))
	}
}

// With rx-filter-size 4, entries beyond the fourth are not the NIC's.
func TestAnnounceAddressesFilterSize(t *testing.T) {
	n, err := New(Config{RXFilterSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	n.WriteReg(RCTL, RCTL_EN)
	setNICRA(n, 3, annMAC2, true)
	setNICRA(n, 4, annMAC3, true)
	got := addrStrings(n.AnnounceAddresses(nil))
	if !strings.Contains(got, "52:54:00:aa:bb:02") || strings.Contains(got, "52:54:00:aa:bb:03") {
		t.Errorf("rx-filter-size 4: %q", got)
	}
}

// migrate saves src through its migration machine and loads the stream
// into dst's, QEMU's way: RESUMING, the data, STOP, then RUNNING.
func migrate(t *testing.T, src, dst *Migratable) {
	t.Helper()
	if err := src.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	var stream []byte
	buf := make([]byte, 4096)
	for {
		k, err := src.ReadMigrationData(buf)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
		stream = append(stream, buf[:k]...)
	}
	if err := src.SetMigrationState(device.MigStop); err != nil {
		t.Fatal(err)
	}
	for _, st := range []device.MigrationState{device.MigResuming} {
		if err := dst.SetMigrationState(st); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.WriteMigrationData(stream); err != nil {
		t.Fatal(err)
	}
	if err := dst.SetMigrationState(device.MigStop); err != nil {
		t.Fatal(err)
	}
	if err := dst.SetMigrationState(device.MigRunning); err != nil {
		t.Fatal(err)
	}
}

// After save, load and resume, the destination announces every valid
// address, untagged and on its VLAN, on QEMU's schedule; the frames are
// not the guest's, so its statistics registers do not move.
func TestAnnounceAfterMigration(t *testing.T) {
	src, dst := newAnnRig(t, nil), newAnnRig(t, nil)
	setNICRA(src.n, 1, annMAC2, true)
	setNICRA(src.n, 2, annMAC3, false)
	src.n.WriteReg(RCTL, RCTL_EN|rctlVFE)
	setVLAN(src.n, 100)

	migrate(t, src.m, dst.m)
	before := dst.n.Stats()
	perm := dst.n.perm
	want := []announce.Address{
		{MAC: perm}, {MAC: annMAC2},
		{MAC: perm, Tagged: true, VLAN: 100}, {MAC: annMAC2, Tagged: true, VLAN: 100},
	}
	for i, gap := range []time.Duration{50, 150, 250, 350, 450} {
		w := dst.clk.next(t)
		if w.d != gap*time.Millisecond {
			t.Errorf("round %d after %v, want %v", i+1, w.d, gap*time.Millisecond)
		}
		w.fire <- time.Time{}
		for j, f := range dst.be.take(t, len(want)) {
			if exp := announce.AppendRARP(nil, want[j]); !bytes.Equal(f, exp) {
				t.Errorf("round %d frame %d: %x, want %x", i+1, j, f, exp)
			}
		}
	}
	dst.m.Close() // waits for the announcer
	dst.be.none(t)
	if after := dst.n.Stats(); !maps.Equal(before, after) {
		t.Errorf("guest-visible statistics moved: %v -> %v", before, after)
	}
	if s := dst.n.AnnounceStats(); s != (announce.Stats{Rounds: 5, Frames: 20}) {
		t.Errorf("announce stats %+v", s)
	}
	if n := dst.announcements(); n != 1 {
		t.Errorf("%d announcements started, want 1", n)
	}
	for _, line := range []string{"reason=migration addresses=2 tagged=2 rounds=5", "msg=\"announce round\""} {
		if !strings.Contains(dst.log.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, dst.log)
		}
	}
	// The source never announces: it did not load.
	if n := src.announcements(); n != 0 {
		t.Errorf("the source started %d announcements", n)
	}
	src.be.none(t)
}

// A plain stop and start, a reset, and a start after a reset announce
// nothing: only a load does.
func TestNoAnnounceWithoutLoad(t *testing.T) {
	r := newAnnRig(t, nil)
	for _, st := range []device.MigrationState{device.MigStop, device.MigRunning, device.MigStopCopy, device.MigStop, device.MigRunning} {
		if err := r.m.SetMigrationState(st); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.m.Reset(); err != nil {
		t.Fatal(err)
	}
	r.n.WriteReg(CTRL, CTRL_RST)
	if n := r.announcements(); n != 0 {
		t.Errorf("%d announcements without a load", n)
	}
	// A load followed by a reset owes nothing either.
	src := newAnnRig(t, nil)
	if err := src.m.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	stream := readAll(t, src.m)
	if err := r.m.SetMigrationState(device.MigResuming); err != nil {
		t.Fatal(err)
	}
	if err := r.m.WriteMigrationData(stream); err != nil {
		t.Fatal(err)
	}
	if err := r.m.SetMigrationState(device.MigStop); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Reset(); err != nil { // back to RUNNING, reset
		t.Fatal(err)
	}
	if n := r.announcements(); n != 0 {
		t.Errorf("%d announcements after a load and a reset", n)
	}
	r.be.none(t)
}

func readAll(t *testing.T, m *Migratable) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for {
		k, err := m.ReadMigrationData(buf)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			return out
		}
		out = append(out, buf[:k]...)
	}
}

// A reset during the rounds ends them.
func TestAnnounceCancelledByReset(t *testing.T) {
	src, dst := newAnnRig(t, nil), newAnnRig(t, nil)
	migrate(t, src.m, dst.m)
	dst.clk.next(t).fire <- time.Time{}
	dst.be.take(t, 1)
	w := dst.clk.next(t)
	if err := dst.m.Reset(); err != nil {
		t.Fatal(err)
	}
	w.fire <- time.Time{}
	dst.m.Close()
	dst.be.none(t)
	if s := dst.n.AnnounceStats(); s.Rounds != 1 {
		t.Errorf("%d rounds, want 1 before the reset", s.Rounds)
	}
}

// A new migration during the rounds starts them again from the first gap.
func TestAnnounceRestartedByNewLoad(t *testing.T) {
	src, dst := newAnnRig(t, nil), newAnnRig(t, nil)
	migrate(t, src.m, dst.m)
	dst.clk.next(t).fire <- time.Time{}
	dst.be.take(t, 1)
	stale := dst.clk.next(t) // round 2's wait
	// The destination becomes a source and takes a state back.
	src2 := newAnnRig(t, nil)
	migrate(t, dst.m, src2.m)
	if err := src.m.SetMigrationState(device.MigRunning); err != nil {
		t.Fatal(err)
	}
	migrate(t, src.m, dst.m)
	stale.fire <- time.Time{}
	w := dst.clk.next(t)
	if w.d != 50*time.Millisecond {
		t.Errorf("the new announcement starts after %v, want 50ms", w.d)
	}
	w.fire <- time.Time{}
	dst.be.take(t, 1)
	dst.m.Close()
	dst.be.none(t)
	if s := dst.n.AnnounceStats(); s.Rounds != 2 {
		t.Errorf("%d rounds, want 1 of each announcement", s.Rounds)
	}
}

// Close in the middle of the rounds leaves no round behind.
func TestAnnounceStopsOnClose(t *testing.T) {
	src, dst := newAnnRig(t, nil), newAnnRig(t, nil)
	migrate(t, src.m, dst.m)
	w := dst.clk.next(t)
	dst.m.Close() // returns once the announcer's goroutine has
	w.fire <- time.Time{}
	dst.be.none(t)
	select {
	case w := <-dst.clk.waits:
		t.Errorf("a round scheduled after Close: %v", w.d)
	default:
	}
	if _, err := dst.n.Announce(); err == nil {
		t.Error("a closed NIC announced")
	}
}

// The control command announces on the default schedule even when
// announcements after migration are off, and a quiesced NIC refuses.
func TestAnnounceOnDemand(t *testing.T) {
	r := newAnnRig(t, &announce.Schedule{})
	src := newAnnRig(t, nil)
	migrate(t, src.m, r.m)
	if n := r.announcements(); n != 0 {
		t.Errorf("announce off: %d announcements after migration", n)
	}
	st, err := r.n.Announce()
	if err != nil || st != (announce.Started{Addresses: 1, Rounds: 5}) {
		t.Fatalf("Announce = %+v, %v", st, err)
	}
	if w := r.clk.next(t); w.d != 50*time.Millisecond {
		t.Errorf("first round after %v", w.d)
	}
	if !strings.Contains(r.log.String(), "reason=control") {
		t.Errorf("log: %s", r.log)
	}
	r.n.Quiesce()
	if _, err := r.n.Announce(); err == nil || !strings.Contains(err.Error(), "stopped for migration") {
		t.Errorf("quiesced: %v", err)
	}
}

func TestAnnounceScheduleChecked(t *testing.T) {
	if _, err := New(Config{Announce: &announce.Schedule{Rounds: 1000}}); err == nil || !strings.Contains(err.Error(), "announce") {
		t.Errorf("a bad schedule: %v", err)
	}
}

var _ io.Writer = (*logBuf)(nil)
