package main

import (
	"fmt"
	"time"
)

// printTables prints the round trips, then the process's resources, each
// figure with its goal's marker, then one line on the whole run. It returns
// how many descriptor and goroutine counts grew: a leak, which fails the
// run, where a slow round trip (a busy machine's too) is only reported.
func printTables(rows []row) (grew int) {
	over := 0
	mark := func(ok bool) string {
		if ok {
			return "PASS"
		}
		over++
		return "over"
	}
	markGrowth := func(ok bool) string {
		if !ok {
			grew++
		}
		return mark(ok)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

	fmt.Println()
	fmt.Printf("Round trips in ms. While the abuser is connected: the control socket's query-stats (under the NIC's lock)\n")
	fmt.Printf("and the abuser's own register reads between its actions; goal: worst < %v, or the bound in the goal column\n", goalRTT)
	fmt.Printf("(blocking-eventfd: the server empties a full eventfd every %v). After it left: the next client's first\n", irqRelease)
	fmt.Printf("STATUS read, timed from the abuser's disconnect, and its STATUS reads.\n")
	fmt.Printf("%-21s %6s %5s | %8s %8s %-4s | %8s %8s %-4s %5s %7s | %8s | %8s %8s\n",
		"abuser", "rounds", "goal", "ctl med", "worst", "", "own med", "worst", "", "n", "refused", "1st read", "next med", "worst")
	for _, r := range rows {
		cm, cw := stats(r.ctl)
		om, ow := stats(r.own)
		_, fw := stats(r.first)
		nm, nw := stats(r.next)
		own := fmt.Sprintf("%8s %8s %-4s", "-", "-", "")
		if len(r.own) > 0 {
			own = fmt.Sprintf("%8s %8s %-4s", ms(om), ms(ow), mark(ow < r.goal))
		}
		ctl := fmt.Sprintf("%8s %8s %-4s", "-", "-", "")
		if len(r.ctl) > 0 {
			ctl = fmt.Sprintf("%8s %8s %-4s", ms(cm), ms(cw), mark(cw < r.goal))
		}
		fmt.Printf("%-21s %6d %5.0f | %s | %s %5d %7d | %8s | %8s %8s\n",
			r.name, r.rounds, float64(r.goal)/float64(time.Millisecond), ctl, own, len(r.own), r.refused, ms(fw), ms(nm), ms(nw))
	}
	for _, r := range rows {
		for _, n := range r.notes {
			fmt.Printf("  %s %s\n", r.name, n)
		}
	}

	base := rows[0].after
	fmt.Println()
	fmt.Printf("Resources with no client connected, after each abuser's rounds: fds, threads and RSS from /proc, goroutines and\n")
	fmt.Printf("the live heap of the last collection from query-status (baseline: %d fds, %d goroutines, %d threads, %.1f MiB live heap,\n",
		base.fds, base.goroutines, base.threads, mib(int64(base.heapLive)))
	fmt.Printf("%.1f MiB RSS). Goals: fds and goroutines do not grow; threads at most %d above the baseline (Go keeps idle\n", mib(base.rss), goalThreads)
	fmt.Printf("threads); live heap at most %d MiB and RSS at most %d MiB above it (the runtime returns freed memory lazily).\n",
		goalHeapLive>>20, goalRSSGrowth>>20)
	fmt.Printf("%-21s | %5s %-4s | %10s %-4s | %7s %-4s | %9s %-4s | %8s %-4s\n", "abuser", "fds", "", "goroutines", "", "threads", "", "heap MiB", "", "RSS MiB", "")
	for _, r := range rows {
		a := r.after
		fmt.Printf("%-21s | %5d %-4s | %10d %-4s | %7d %-4s | %9.1f %-4s | %8.1f %-4s\n", r.name,
			a.fds, markGrowth(a.fds <= base.fds),
			a.goroutines, markGrowth(a.goroutines <= base.goroutines),
			a.threads, mark(a.threads <= base.threads+goalThreads),
			mib(int64(a.heapLive)), mark(a.heapLive <= base.heapLive+goalHeapLive),
			mib(a.rss), mark(a.rss <= base.rss+goalRSSGrowth))
	}
	fmt.Println()
	switch {
	case over == 0:
		fmt.Println("Goal met: nothing grew, and every worst round trip while an abuser was connected stayed within its goal.")
	case grew > 0:
		fmt.Printf("Goal not met: %d figures over (marked \"over\" above), %d of them descriptor or goroutine counts that grew.\n", over, grew)
	default:
		fmt.Printf("Goal not met: %d figures over (marked \"over\" above); no descriptor or goroutine count grew.\n", over)
	}
	return grew
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
