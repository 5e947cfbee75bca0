//go:build integration

package migration

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// takeoverRounds is how many live upgrades, and how many migrations of
// the built-in NIC beside them, the figures are medians of.
const takeoverRounds = 10

// BenchmarkTakeover measures a live upgrade (serve --takeover) of our
// server under a running guest on stock QEMU: the pause the guest sees,
// as the longest gap between arrivals of a UDP echo flow (the guest sends
// a numbered datagram and waits for its echo, about one a millisecond),
// and the handover time inside the two servers (the predecessor from its
// pause to its commit, the successor from the state received to running).
// Beside it, in the same run, the yardstick: the same flow's longest gap
// and QEMU's downtime when QEMU's built-in e1000e live-migrates. Run it
// with -benchtime 1x (make bench-takeover).
func BenchmarkTakeover(b *testing.B) {
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		var gaps, paused, handover, idle, bgaps, downtimes []time.Duration
		// Each rig in its own sub-benchmark: its network goes with it.
		b.Run("takeover", func(b *testing.B) { gaps, paused, handover, idle = benchTakeovers(b, ctx) })
		b.Run("builtin-migration", func(b *testing.B) { bgaps, downtimes = benchBuiltinMigrations(b, ctx) })
		cancel()
		if len(gaps) == 0 || len(bgaps) == 0 {
			b.Fatal("a part of the benchmark failed")
		}
		b.ReportMetric(ms(med(gaps)), "pause-ms")
		b.ReportMetric(ms(med(idle)), "idle-gap-ms")
		b.ReportMetric(ms(med(paused)), "handover-old-ms")
		b.ReportMetric(ms(med(handover)), "handover-new-ms")
		b.ReportMetric(ms(med(bgaps)), "builtin-mig-gap-ms")
		b.ReportMetric(ms(med(downtimes)), "builtin-mig-downtime-ms")
		fmt.Printf("\nlive upgrade of e1000e-vfu vs live migration of QEMU's e1000e, medians of %d (max)\n", takeoverRounds)
		fmt.Printf("%-44s %10s %10s\n", "", "median", "max")
		row := func(name string, v []time.Duration) {
			fmt.Printf("%-44s %10v %10v\n", name, med(v).Round(10*time.Microsecond), v[len(v)-1].Round(10*time.Microsecond))
		}
		row("no takeover: the same flow's longest gap", idle)
		row("takeover: guest-visible pause (UDP gap)", gaps)
		row("takeover: predecessor, pause to commit", paused)
		row("takeover: successor, state to running", handover)
		row("built-in e1000e migration: UDP gap", bgaps)
		row("built-in e1000e migration: QEMU downtime", downtimes)
		goal := "met"
		if med(gaps) >= 20*time.Millisecond {
			goal = "NOT met"
		}
		fmt.Printf("goal: guest-visible pause under 20 ms: %s\n", goal)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// med sorts v and returns its median.
func med(v []time.Duration) time.Duration {
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

var durRe = regexp.MustCompile(`([0-9.]+[µmn]?s)`)

// logField finds key=DURATION on the log line holding msg.
func logField(log, msg, key string) time.Duration {
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, msg) {
			continue
		}
		if i := strings.Index(l, key+"="); i >= 0 {
			if m := durRe.FindString(l[i+len(key)+1:]); m != "" {
				d, _ := time.ParseDuration(m)
				return d
			}
		}
	}
	return 0
}

// udpGap runs the UDP echo flow for d around fn (started after lead) and
// returns the longest gap between arrivals at the host, and when it ended
// from fn's start.
func udpGap(b *testing.B, ctx context.Context, r *rig, d, lead time.Duration, fn func()) (time.Duration, time.Duration) {
	b.Helper()
	f, err := startUDP(r.ns, r.cur.vm.Agent, d)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(lead)
	start := time.Now()
	fn()
	st, err := f.finish(ctx, r.cur.vm.Agent, d+time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if st.Lost > 1 {
		b.Logf("udp: %d of %d lost", st.Lost, st.Sent)
	}
	return st.MaxGap, st.GapAt.Sub(start)
}

func benchTakeovers(b *testing.B, ctx context.Context) (gaps, paused, handover, idle []time.Duration) {
	r := newRig(b, ctx, rigOpts{stock: true})
	s := r.cur
	// The yardstick of the machine's own noise: the same flow, nothing
	// done.
	for i := 1; i <= takeoverRounds; i++ {
		gap, _ := udpGap(b, ctx, r, 3*time.Second, time.Second, func() {})
		b.Logf("no takeover %d: UDP gap %v", i, gap)
		idle = append(idle, gap)
	}
	for i := 1; i <= takeoverRounds; i++ {
		var p, h, took time.Duration
		gap, at := udpGap(b, ctx, r, 3*time.Second, time.Second, func() {
			t0 := time.Now()
			defer func() { took = time.Since(t0) }()
			old := s.srv
			nu, err := old.TakeOver(ctx, harness.ServerConfig{Bin: suite.ServerBin, NetNS: r.hosts.Host[s.host],
				Netdev: "tap,ifname=" + s.tap}, i)
			if nu != nil {
				nu.StopAtEnd(b, fmt.Sprintf("server %d", i), 4096)
			}
			if err != nil {
				b.Fatalf("takeover %d: %v", i, err)
			}
			s.srv = nu
			p, h = logField(old.Log(), "handed over", "paused"), logField(nu.Log(), "took over", "handover")
		})
		b.Logf("takeover %d: UDP gap %v ending %v after the successor's start (which took %v to run), predecessor paused %v, successor handover %v",
			i, gap, at.Round(time.Millisecond), took.Round(time.Millisecond), p, h)
		gaps, paused, handover = append(gaps, gap), append(paused, p), append(handover, h)
	}
	r.checkDriver()
	return gaps, paused, handover, idle
}

func benchBuiltinMigrations(b *testing.B, ctx context.Context) (gaps, downtimes []time.Duration) {
	r := newRig(b, ctx, rigOpts{builtin: true})
	for i := 1; i <= takeoverRounds; i++ {
		dst := r.dest(nil)
		var res qmpResult
		// A migration takes seconds: the flow runs long enough to see
		// its end.
		gap, _ := udpGap(b, ctx, r, 8*time.Second, time.Second, func() { res = r.migrateQMP(dst) })
		b.Logf("built-in migration %d: UDP gap %v, QEMU downtime %v", i, gap, res.Downtime)
		gaps, downtimes = append(gaps, gap), append(downtimes, res.Downtime)
	}
	return gaps, downtimes
}
