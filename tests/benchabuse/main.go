// Command benchabuse measures how the server holds up against abusive
// vfio-user clients. It starts the server binary (bin/e1000e-vfu serve, with
// the v1 migration region on and a control socket) and runs each kind of
// abuser several times in a row against it: garbage bytes, truncated
// messages, descriptor floods, DMA map churn, abandoned migrations, hostile
// migration streams, an interrupt eventfd made blocking and filled, and a
// hostile transmit ring (TSO at MSS 1).
//
// The server serves one vfio-user client at a time and refuses a second, so
// responsiveness while an abuser is connected is measured two ways: through
// the control socket (query-stats takes the NIC's lock, as a register access
// does) polled all along, and by the abuser itself, which reads STATUS
// between its hostile actions on its own connection (a read queued behind
// a stall shows the stall). Once the abuser has gone, a well-behaved client
// connects; the time from the abuser's disconnect to its first STATUS read,
// and its register round trips, are measured too. Descriptor and thread
// counts and RSS come from /proc/PID between rounds, with no client
// connected.
//
// It is a benchmark, not a test: it prints a table against the goals
// (nothing grows; the worst round trip stays under 10 ms while an abuser is
// connected, or 60 ms for the blocking eventfd, which the server empties
// every 50 ms). It exits non-zero when the server died or could not be
// measured, or when its descriptor or goroutine count grew; round trips
// (which a busy machine slows too) and threads, heap and RSS are reported
// against their goals only.
// Run it with `make bench-abuse`; it needs no root.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"e1000e-vfu/tests/harness"
)

// Goals the table is printed against.
const (
	goalRTT       = 10 * time.Millisecond // worst round trip while an abuser is connected
	goalRSSGrowth = 32 << 20              // bytes of RSS growth over the whole run
	goalThreads   = 8                     // threads beyond the baseline (Go keeps idle ones)
	goalHeapLive  = 4 << 20               // bytes of live heap growth (collections come when they come)
)

type options struct {
	rounds     int           // runs of each abuser
	probes     int           // register reads of each well-behaved client
	streamKiB  int           // bytes of the many-sections hostile stream
	writeSize  int           // bytes per posted MIG_DATA_WRITE of that stream
	churn      int           // map/unmap pairs per churn round
	txPackets  int           // TSO packets of the hostile transmit ring
	pollPeriod time.Duration // control probe period while an abuser is connected
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "runs of each abuser, one after the other")
	flag.IntVar(&o.probes, "probes", 200, "STATUS reads of each well-behaved client")
	flag.IntVar(&o.streamKiB, "stream-kib", 1024, "KiB of the hostile stream of many empty sections")
	flag.IntVar(&o.writeSize, "write-size", 64, "bytes per posted MIG_DATA_WRITE of that stream")
	flag.IntVar(&o.churn, "churn", 2000, "DMA_MAP/DMA_UNMAP pairs per map-churn round")
	flag.IntVar(&o.txPackets, "tx-packets", 32760, "TSO packets of 64 KiB at MSS 1 in the hostile transmit ring (at most 32760, the longest ring: 65528 descriptors)")
	flag.DurationVar(&o.pollPeriod, "poll", time.Millisecond, "period of the control-socket probe while an abuser is connected")
	bin := flag.String("bin", "", "server binary (default: build bin/e1000e-vfu)")
	flag.Parse()
	if o.rounds < 1 || o.probes < 1 || o.streamKiB < 1 || o.writeSize < 1 || o.churn < 1 || o.pollPeriod <= 0 || o.txPackets < 1 || o.txPackets > 32760 {
		fmt.Fprintln(os.Stderr, "bench-abuse: -rounds, -probes, -stream-kib, -write-size, -churn, -tx-packets and -poll must be positive, -tx-packets at most 32760")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	if err := run(ctx, *bin, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-abuse:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin string, o options) error {
	if bin == "" {
		repo, err := harness.RepoRoot()
		if err != nil {
			return err
		}
		if bin, err = harness.BuildServer(ctx, repo); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "evfu-abuse-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := harness.StartServer(ctx, harness.ServerConfig{
		Bin: bin, Dir: filepath.Join(dir, "server"),
		Args: []string{"--migration-v1", "on", "--log-level", "warn"},
	})
	if err != nil {
		return err
	}
	defer srv.Stop()
	b := &bench{ctx: ctx, srv: srv, o: o}
	if err := b.prepare(); err != nil {
		return fmt.Errorf("preparing: %w\n%s", err, srv.LogTail(4096))
	}

	fmt.Printf("server pid %d (%s serve --migration-v1 on); %d rounds of each abuser, %d STATUS reads per well-behaved client\n",
		srv.Pid(), filepath.Base(bin), o.rounds, o.probes)
	first, err := b.baseline()
	if err != nil {
		return fmt.Errorf("baseline: %w\n%s", err, srv.LogTail(4096))
	}
	rows := []row{first}
	for _, a := range abusers {
		r, err := b.abuse(a)
		rows = append(rows, r)
		if err != nil {
			printTables(rows)
			return fmt.Errorf("%s: %w\n%s", a.name, err, srv.LogTail(4096))
		}
	}
	grew := printTables(rows)
	if srv.Exited() {
		return fmt.Errorf("the server exited: %v\n%s", srv.ExitErr(), srv.LogTail(4096))
	}
	if grew > 0 {
		return fmt.Errorf("%d descriptor or goroutine counts grew", grew)
	}
	return nil
}

// row is what one abuser's rounds measured.
type row struct {
	name    string
	rounds  int
	ctl     []time.Duration // control-socket round trips while the abuser was connected
	own     []time.Duration // the abuser's own STATUS reads
	first   []time.Duration // abuser gone → the next client's first STATUS read
	next    []time.Duration // the next client's STATUS reads
	after   procStats       // with no client, after the last round
	refused int             // abuser's own reads refused (the server had dropped it)
	goal    time.Duration   // worst round trip allowed while it was connected
	notes   []string        // what its rounds did
}

// bench is one server under measurement.
type bench struct {
	ctx  context.Context
	srv  *harness.Server
	o    options
	good []byte // a stream the server saved, for the hostile variants
	base procStats
}

// abuse runs one abuser o.rounds times, each followed by a well-behaved
// client, and samples the process once the last client has gone.
func (b *bench) abuse(a abuser) (row, error) {
	r := row{name: a.name, rounds: b.o.rounds, goal: cmp.Or(a.goal, goalRTT)}
	for i := range b.o.rounds {
		if err := b.ctx.Err(); err != nil {
			return r, err
		}
		p, err := startPoller(b.srv.Control, b.o.pollPeriod)
		if err != nil {
			return r, err
		}
		s := &session{b: b, round: i}
		err = a.run(s)
		s.end()
		gone := time.Now()
		ctl, perr := p.stop()
		r.ctl = append(r.ctl, ctl...)
		r.own = append(r.own, s.own...)
		r.refused += s.refused
		r.notes = append(r.notes, s.notes...)
		if err != nil {
			return r, fmt.Errorf("round %d: %w", i, err)
		}
		if perr != nil {
			return r, fmt.Errorf("round %d: %w", i, perr)
		}
		if b.srv.Exited() {
			return r, fmt.Errorf("round %d: the server exited: %v", i, b.srv.ExitErr())
		}
		first, next, err := b.wellBehaved(gone)
		if err != nil {
			return r, fmt.Errorf("round %d: the next client: %w", i, err)
		}
		r.first = append(r.first, first)
		r.next = append(r.next, next...)
	}
	var err error
	r.after, err = b.idleStats()
	return r, err
}

// baseline is the well-behaved client alone, with the control probe on.
func (b *bench) baseline() (row, error) {
	r := row{name: "(none: baseline)", rounds: 1, goal: goalRTT}
	var err error
	if b.base, err = b.idleStats(); err != nil {
		return r, err
	}
	p, err := startPoller(b.srv.Control, b.o.pollPeriod)
	if err != nil {
		return r, err
	}
	first, next, err := b.wellBehaved(time.Now())
	ctl, perr := p.stop()
	r.ctl = ctl
	if err = errors.Join(err, perr); err != nil {
		return r, err
	}
	r.first, r.next = []time.Duration{first}, next
	r.after, err = b.idleStats()
	return r, err
}

// idleStats samples the process once no vfio-user client is served. The
// control connection of a query may still be closing, so the fewest
// descriptors and goroutines of a few samples count: a leak stays in all
// of them.
func (b *bench) idleStats() (procStats, error) {
	var best procStats
	for i := range 5 {
		st, err := waitIdle(b.ctx, b.srv.Control)
		if err != nil {
			return procStats{}, err
		}
		// Let the server close the query's own connection first.
		time.Sleep(20 * time.Millisecond)
		s, err := readProc(b.srv.Pid())
		if err != nil {
			return procStats{}, err
		}
		if i == 0 || s.fds < best.fds {
			best.fds = s.fds
		}
		if i == 0 || st.Goroutines < best.goroutines {
			best.goroutines = st.Goroutines
		}
		best.threads, best.rss, best.heapLive = s.threads, s.rss, st.HeapLiveBytes
	}
	return best, nil
}

// median and worst of ds (zero when empty).
func stats(ds []time.Duration) (med, worst time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

var errServerGone = errors.New("the server exited")
