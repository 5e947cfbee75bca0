//go:build integration

package migration

import (
	"context"
	"testing"
	"time"
)

// Flow sizes: the stream must still run when the migration starts and
// outlast most of it (the NIC writes guest memory all along); the UDP flow
// runs for udpFor, longer than a migration under TCG takes here.
const (
	streamSize = 48 << 20
	udpFor     = 20 * time.Second
)

// A guest moves from QEMU a + server a to QEMU b + server b with a TCP
// stream and a UDP flow running, then on to a fresh QEMU c + server c: the
// device state moves, the destination's device is configured, the driver
// notices nothing, the stream arrives whole and the UDP gap is bounded.
func TestMigrateTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{})
	r.checkDevice()
	for _, leg := range []string{"there", "back"} {
		dst := r.dest(nil) // the source's configuration, the source's MAC
		tcp, udp := r.startFlows()
		res := r.mustMigrate(dst)
		if tcp.sent.Load() >= streamSize {
			t.Errorf("%s: the host had sent the whole stream before the migration ended: it did not run across it", leg)
		}
		if res.summary.DeviceBytes == 0 {
			t.Errorf("%s: no device state moved (query-migrate's vfio.transferred is 0)", leg)
		}
		r.finishFlows(leg, tcp, udp, 4*time.Second)
		r.checkDevice()
		r.ping(3)
		r.checkDriver()
		if t.Failed() {
			t.FailNow()
		}
	}
}

// startFlows starts a host→guest TCP stream and a UDP flow and returns once
// the stream is in full flow.
func (r *rig) startFlows() (*tcpFlow, *udpFlow) {
	r.t.Helper()
	udp, err := startUDP(r.ns, r.cur.vm.Agent2, udpFor)
	if err != nil {
		r.t.Fatal(err)
	}
	tcp, err := startTCP(r.ns, r.cur.vm.Agent, streamSize, 5*time.Minute)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := tcp.waitSent(r.ctx, 2<<20); err != nil {
		r.t.Fatal(err)
	}
	if udp.count() == 0 {
		r.t.Fatal("the UDP flow has not started")
	}
	return tcp, udp
}

// finishFlows waits for both flows on the current side and checks them:
// the stream whole, the UDP flow with a gap of at most maxGap.
func (r *rig) finishFlows(what string, tcp *tcpFlow, udp *udpFlow, maxGap time.Duration) {
	r.t.Helper()
	atEnd := tcp.sent.Load()
	secs, err := tcp.finish(r.ctx, r.cur.vm.Agent, 5*time.Minute)
	if err != nil {
		r.t.Errorf("%s: %v", what, err)
	} else {
		r.t.Logf("%s: TCP stream of %d MiB whole (SHA-256 equal) in %.1f s; %.1f MiB had been sent when the migration ended",
			what, tcp.size>>20, secs, float64(atEnd)/(1<<20))
	}
	st, err := udp.finish(r.ctx, r.cur.vm.Agent2, udpFor+time.Minute)
	if err != nil {
		r.t.Errorf("%s: %v", what, err)
		return
	}
	r.t.Logf("%s: UDP flow: %d datagrams sent, %d echoed, %d lost; longest gap %v",
		what, st.Sent, st.Echoed, st.Lost, st.MaxGap.Round(time.Millisecond))
	if st.MaxGap > maxGap {
		r.t.Errorf("%s: UDP gap %v, want at most %v", what, st.MaxGap, maxGap)
	}
	if st.Lost > 10 {
		r.t.Errorf("%s: %d UDP datagrams lost, want at most 10", what, st.Lost)
	}
}
