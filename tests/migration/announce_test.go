//go:build integration

package migration

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// stall is how long a receive-only guest's traffic must stay away after
// the switch-over, with the announcement off, for the test to call it
// stalled; with the announcement on, no gap may come near it.
const stall = 10 * time.Second

// A guest that only receives (a host→guest TCP stream, whose ACKs it sends
// only for data that reaches it, and a host→guest UDP flow it never
// answers) moves from host 0 to host 1. Nothing the guest sends can tell
// the bridges it moved: only the destination server's announcement does.
// The traffic resumes on the destination right after the switch-over: the
// stream arrives whole, and the UDP flow's longest gap stays far below the
// stall an unannounced move makes (TestMigrateAnnounceOff).
func TestMigrateReceiveOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{})
	r.pinGuestNeighbour()
	dst := r.dest(nil)
	feed, err := startFeed(r.ns, r.cur.vm.Agent2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := startTCP(r.ns, r.cur.vm.Agent, streamSize, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := tcp.waitSent(ctx, 2<<20); err != nil {
		t.Fatal(err)
	}
	res := r.mustMigrate(dst)
	if res.summary.DeviceBytes == 0 {
		t.Errorf("no device state moved")
	}
	secs, err := tcp.finish(ctx, r.cur.vm.Agent, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TCP stream of %d MiB whole in %.1f s; the host's longest pause between writes %v",
		tcp.size>>20, secs, tcp.maxPause.Round(time.Millisecond))
	st, err := feed.finish(ctx, r.cur.vm.Agent2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UDP host→guest: %d sent, %d received, %d lost; longest gap %v (ended %v into the flow), %v after the last",
		st.Sent, st.Received, st.Lost, st.MaxGap, st.GapEnd, st.Tail)
	if st.MaxGap >= stall || st.Tail >= stall {
		t.Errorf("the guest's traffic stalled across the migration: longest gap %v, %v after the last datagram", st.MaxGap, st.Tail)
	}
	if tcp.maxPause >= stall {
		t.Errorf("the host's stream paused %v across the migration", tcp.maxPause)
	}
	an := r.announceStats(r.cur)
	t.Logf("destination server's announcement: %d rounds, %d frames", an.Rounds, an.Frames)
	if an.Rounds < 5 || an.Frames < an.Rounds {
		t.Errorf("the destination announced %d rounds with %d frames, want QEMU's default 5 rounds, a frame each at least", an.Rounds, an.Frames)
	}
	r.checkDriver()
}

// The same receive-only guest moves with the announcement off on both
// servers: its UDP flow stops at the switch-over and does not come back
// within stall, which shows the test above can fail. Then the control
// socket's announce command, as an orchestrator would send it, brings the
// traffic back.
func TestMigrateAnnounceOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	off := []string{"--announce", "off"}
	r := newRig(t, ctx, rigOpts{serverArgs: off})
	r.pinGuestNeighbour()
	dst := r.dest(append(r.sourceConfig(), off...))
	feed, err := startFeed(r.ns, r.cur.vm.Agent2, 35*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	r.mustMigrate(dst)
	switched := time.Now()
	before := r.rxFrames(r.cur)
	time.Sleep(stall + time.Second)
	during := r.rxFrames(r.cur) - before
	sent := feed.sent.Load()
	if an := r.announceStats(r.cur); an.Frames != 0 {
		t.Errorf("with --announce off the destination sent %d announcement frames", an.Frames)
	}
	if _, err := r.cur.srv.Ctl(ctx, map[string]any{"cmd": "announce"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("announce sent on the control socket %v after the switch-over", time.Since(switched).Round(time.Millisecond))
	st, err := feed.finish(ctx, r.cur.vm.Agent2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UDP host→guest: %d sent, %d received, %d lost; longest gap %v (ended %v into the flow), %v after the last; the destination host sent its TAP %d frames in the %v after the switch-over",
		st.Sent, st.Received, st.Lost, st.MaxGap, st.GapEnd, st.Tail, during, stall+time.Second)
	if st.MaxGap < stall {
		t.Errorf("without an announcement the guest's traffic came back within %v (longest gap %v): the bridges learnt the move some other way, so the receive-only test proves nothing", stall, st.MaxGap)
	}
	if during > 20 {
		t.Errorf("the destination host passed %d frames to its TAP while unannounced (the peer sent %d datagrams by then)", during, sent)
	}
	if st.Tail >= 5*time.Second {
		t.Errorf("the traffic did not come back after the control socket's announce: %v since the last datagram", st.Tail)
	}
}

// pinGuestNeighbour gives the peer a permanent ARP entry for the guest, so
// the peer never broadcasts an ARP request for it: such a request, flooded
// to every port, would make the guest answer and so teach the bridges its
// new place, which is the announcement's job alone in these tests.
func (r *rig) pinGuestNeighbour() {
	r.t.Helper()
	if err := r.ns.IP("neigh", "replace", guestIP, "lladdr", harness.ServerMAC, "dev", "lan0", "nud", "permanent"); err != nil {
		r.t.Fatal(err)
	}
}

// announcement is the announce part of a server's query-stats.
type announcement struct {
	Rounds uint64 `json:"rounds"`
	Frames uint64 `json:"frames"`
	Errors uint64 `json:"errors"`
}

func (r *rig) announceStats(s *side) announcement {
	r.t.Helper()
	var st struct {
		Announce announcement `json:"announce"`
	}
	r.queryStats(s, &st)
	return st.Announce
}

// rxFrames is how many frames the side's host bridge has sent into its
// TAP, towards its server: counted by the host's kernel, so the guest's
// own reads of its statistics registers do not clear it.
func (r *rig) rxFrames(s *side) uint64 {
	r.t.Helper()
	out, err := r.hosts.Host[s.host].Command(r.ctx, "ip", "-j", "-s", "link", "show", "dev", s.tap).Output()
	if err != nil {
		r.t.Fatalf("ip -s link show %s: %v", s.tap, err)
	}
	var links []struct {
		Stats struct {
			TX struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		r.t.Fatalf("ip -s link show %s: %q: %v", s.tap, out, err)
	}
	return links[0].Stats.TX.Packets
}

func (r *rig) queryStats(s *side, v any) {
	r.t.Helper()
	raw, err := s.srv.Ctl(r.ctx, map[string]any{"cmd": "query-stats"})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		r.t.Fatalf("query-stats %s: %v", raw, err)
	}
}
