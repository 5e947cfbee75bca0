//go:build integration

package integration

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"e1000e-vfu/tests/agentproto"
	"e1000e-vfu/tests/harness"
)

// takeovers is how many times in a row the server is replaced under
// traffic.
const takeovers = 10

// takeOver replaces the rig's server with a new process (serve
// --takeover) and returns what the two servers logged: the pause the
// predecessor saw (from its pause to its commit) and the successor's
// handover time (from the state received to running).
func (r *rig) takeOver(n int) (paused, handover time.Duration) {
	r.t.Helper()
	old := r.srv
	sc := harness.ServerConfig{Bin: suite.ServerBin, NetNS: r.ns, Netdev: "tap,ifname=tap0"}
	nu, err := old.TakeOver(r.ctx, sc, n)
	if nu != nil {
		nu.StopAtEnd(r.t, fmt.Sprintf("server %d", n), 4096)
	}
	if err != nil {
		r.t.Fatalf("takeover %d: %v\npredecessor:\n%s", n, err, old.LogTail(4096))
	}
	r.srv = nu
	return logDuration(old.Log(), "handed over", "paused"), logDuration(nu.Log(), "took over", "handover")
}

// logDuration finds key=DURATION on the log line holding msg.
func logDuration(log, msg, key string) time.Duration {
	re := regexp.MustCompile(key + `=([0-9.]+[µmn]?s)`)
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) {
			if m := re.FindStringSubmatch(l); m != nil {
				d, _ := time.ParseDuration(m[1])
				return d
			}
		}
	}
	return -1
}

// guestCounter reads one of eth0's statistics in the guest.
func (r *rig) guestCounter(name string) uint64 {
	r.t.Helper()
	v, err := strconv.ParseUint(strings.TrimSpace(r.g.sh("cat /sys/class/net/eth0/statistics/"+name)), 10, 64)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// eth0IRQs sums eth0's interrupts in /proc/interrupts.
func (r *rig) eth0IRQs() uint64 {
	r.t.Helper()
	var n uint64
	for _, l := range strings.Split(r.g.sh("cat /proc/interrupts"), "\n") {
		if !strings.Contains(l, "eth0") {
			continue
		}
		f := strings.Fields(l)
		if len(f) > 1 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			n += v
		}
	}
	return n
}

// ethStats is `ethtool -S eth0` in the guest, through the agent.
func (r *rig) ethStats() map[string]uint64 {
	r.t.Helper()
	rp, err := r.vm.Agent.Call(r.ctx, 30*time.Second, "ethstats", "eth0")
	if err != nil {
		r.t.Fatal(err)
	}
	out := make(map[string]uint64, len(rp.Data))
	for k, v := range rp.Data {
		f, _ := v.(float64)
		out[k] = uint64(f)
	}
	return out
}

// checkEthStats compares two `ethtool -S` readings around a takeover: the
// driver's totals never go back, the traffic between them is counted, and
// no error, timeout or restart counter moves.
func (r *rig) checkEthStats(i int, before, after map[string]uint64) {
	r.t.Helper()
	for _, k := range []string{"rx_packets", "tx_packets", "rx_bytes", "tx_bytes"} {
		if after[k] <= before[k] {
			r.t.Errorf("takeover %d: ethtool -S %s went from %d to %d", i, k, before[k], after[k])
		}
	}
	for _, k := range []string{"rx_errors", "tx_errors", "tx_timeout_count", "tx_restart_queue", "rx_missed_errors", "tx_aborted_errors"} {
		if after[k] != before[k] {
			r.t.Errorf("takeover %d: ethtool -S %s went from %d to %d", i, k, before[k], after[k])
		}
	}
}

// hangs are the driver's complaints that a takeover must never cause.
var hangRe = regexp.MustCompile(`(?i)Detected Hardware Unit Hang|Reset adapter|NETDEV WATCHDOG|transmit queue \d+ timed out`)

func (r *rig) checkNoHang() {
	r.t.Helper()
	var bad []string
	for _, l := range strings.Split(r.g.sh("dmesg"), "\n") {
		if hangRe.MatchString(l) {
			bad = append(bad, l)
		}
	}
	bad = append(bad, driverWarnings(r.g)...)
	if len(bad) > 0 {
		r.t.Errorf("the guest's kernel complained:\n%s", strings.Join(bad, "\n"))
	}
}

// tcpFeed is a host→guest TCP stream of a seeded sequence that the
// guest's agent hashes (recv).
type tcpFeed struct {
	size, seed int64
	id         int64
	sent       atomic.Int64
	done       chan error
}

// feedRate is the TCP feed's pace in bytes per second (32 Mbit/s): 128 MiB
// last about 32 s, three times the ten takeovers' 10 s.
const feedRate = 4 << 20

func startTCPFeed(r *rig, size int64, timeout time.Duration) *tcpFeed {
	r.t.Helper()
	l, err := r.ns.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		r.t.Fatal(err)
	}
	f := &tcpFeed{size: size, seed: time.Now().UnixNano(), done: make(chan error, 1)}
	go func() {
		defer l.Close()
		l.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
		c, err := l.Accept()
		if err != nil {
			f.done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		src := io.LimitReader(agentproto.Stream(uint64(f.seed)), size)
		buf := make([]byte, 64<<10)
		start := time.Now()
		for {
			n, rerr := io.ReadFull(src, buf)
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					f.done <- err
					return
				}
				sent := f.sent.Add(int64(n))
				// Paced, so that the stream outlasts the takeovers
				// on a fast machine too.
				if ahead := time.Duration(float64(sent)/feedRate*float64(time.Second)) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
			if rerr != nil {
				f.done <- nil
				return
			}
		}
	}()
	if f.id, err = r.vm.Agent.Begin(timeout, "recv", l.Addr().String()); err != nil {
		r.t.Fatal(err)
	}
	return f
}

// check compares the guest's hash with the sequence's.
func (f *tcpFeed) check(rp agentproto.Reply) error {
	if err := <-f.done; err != nil {
		return fmt.Errorf("tcp feed: %w", err)
	}
	h := sha256.New()
	io.Copy(h, io.LimitReader(agentproto.Stream(uint64(f.seed)), f.size))
	got, _ := rp.Data["bytes"].(float64)
	if int64(got) != f.size || rp.Data["sha256"] != hex.EncodeToString(h.Sum(nil)) {
		return fmt.Errorf("tcp stream: the guest read %d bytes with SHA-256 %v, want %d bytes of the sequence", int64(got), rp.Data["sha256"], f.size)
	}
	return nil
}

// udpEcho is a sequenced UDP flow both ways: the guest sends numbered
// datagrams one at a time and waits for each echo (udpecho); the host
// echoes and counts what it saw twice.
type udpEcho struct {
	c    net.PacketConn
	id   int64
	mu   sync.Mutex
	seen map[uint64]int
	max  uint64
	done chan struct{}
}

const echoSize = 64

// highest is the highest sequence number seen so far.
func (u *udpEcho) highest() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.max
}

func startUDPEcho(r *rig, d time.Duration) *udpEcho {
	r.t.Helper()
	c, err := r.ns.ListenPacket("udp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		r.t.Fatal(err)
	}
	u := &udpEcho{c: c, seen: map[uint64]int{}, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		b := make([]byte, 2048)
		for {
			n, addr, err := c.ReadFrom(b)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil || n != echoSize {
				continue
			}
			seq := binary.BigEndian.Uint64(b)
			if seq > 1<<20 {
				continue
			}
			u.mu.Lock()
			u.seen[seq]++
			u.max = max(u.max, seq)
			u.mu.Unlock()
			c.WriteTo(b[:n], addr)
		}
	}()
	// On the second agent: each agent runs one request at a time, and
	// the first one is receiving the TCP feed meanwhile.
	if u.id, err = r.vm.Agent2.Begin(d, "udpecho", c.LocalAddr().String(), "100000", fmt.Sprint(echoSize)); err != nil {
		r.t.Fatal(err)
	}
	return u
}

// result is what the flow lost (sent by the guest, never echoed back to
// it) and what the host saw twice.
func (u *udpEcho) result(rp agentproto.Reply) (sent, lost, dups int) {
	u.c.Close()
	<-u.done
	u.mu.Lock()
	defer u.mu.Unlock()
	echoed, _ := rp.Data["echoed"].(float64)
	sent = int(u.max) + 1
	for _, n := range u.seen {
		if n > 1 {
			dups += n - 1
		}
	}
	return sent, sent - int(echoed), dups
}

// TestVFUTakeover: the server is replaced ten times in a row under a
// guest (MSI-X) receiving a TCP stream and exchanging a sequenced UDP
// flow, stock QEMU unaware: the stream arrives whole, the UDP flow loses
// and duplicates at most one datagram a takeover (reported), the guest's
// kernel reports no hang or reset, the NIC's counters carry over, and
// interrupts keep coming.
func TestVFUTakeover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{agent2: true})
	r.ping(2, "")
	rxBefore := r.guestCounter("rx_packets")
	irqBefore := r.eth0IRQs()

	const size = 128 << 20
	tcp := startTCPFeed(r, size, 4*time.Minute)
	udp := startUDPEcho(r, 20*time.Second)
	for deadline := time.Now().Add(time.Minute); tcp.sent.Load() < 2<<20 || udp.highest() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the flows did not get going: %d bytes sent, highest datagram %d", tcp.sent.Load(), udp.highest())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// No agent call while the flows run: a reply that comes during one
	// would be taken for a late one and dropped.
	var paused, handover []time.Duration
	udpSeen := udp.highest()
	for i := 1; i <= takeovers; i++ {
		time.Sleep(500 * time.Millisecond)
		// Both flows still run as the takeover comes: the stream has
		// not ended and the echo has seen new datagrams since the last.
		if n := tcp.sent.Load(); n >= size {
			t.Fatalf("takeover %d: the TCP stream had ended", i)
		}
		if m := udp.highest(); m <= udpSeen {
			t.Fatalf("takeover %d: no new datagram since the last (highest %d)", i, m)
		} else {
			udpSeen = m
		}
		p, h := r.takeOver(i)
		paused, handover = append(paused, p), append(handover, h)
	}
	t.Logf("%d takeovers; TCP sent so far %d MiB", takeovers, tcp.sent.Load()>>20)
	tcpReply, err := r.vm.Agent.Await(ctx, tcp.id, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	udpReply, err := r.vm.Agent2.Await(ctx, udp.id, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := tcp.check(tcpReply); err != nil {
		t.Fatal(err)
	}
	sent, lost, dups := udp.result(udpReply)
	t.Logf("tcp: %d MiB host→guest, SHA-256 equal at both ends", size>>20)
	t.Logf("udp: %d datagrams each way, %d lost, %d duplicated (bound: %d each, one a takeover)", sent, lost, dups, takeovers)
	if lost > takeovers || dups > takeovers {
		t.Errorf("udp: %d lost, %d duplicated over %d takeovers", lost, dups, takeovers)
	}
	sort.Slice(paused, func(i, j int) bool { return paused[i] < paused[j] })
	sort.Slice(handover, func(i, j int) bool { return handover[i] < handover[j] })
	t.Logf("predecessor paused (median, max): %v, %v; successor handover (median, max): %v, %v",
		paused[len(paused)/2], paused[len(paused)-1], handover[len(handover)/2], handover[len(handover)-1])

	// The statistics registers are the guest's to clear on read, so the
	// guest's totals are what must keep counting.
	if rx := r.guestCounter("rx_packets"); rx < rxBefore+size/1514 {
		t.Errorf("guest rx_packets %d, was %d", rx, rxBefore)
	}
	if irq := r.eth0IRQs(); irq <= irqBefore {
		t.Errorf("eth0 interrupts %d, were %d", irq, irqBefore)
	}
	r.ping(3, "")
	r.checkNoHang()
	if st := r.ethStats(); st["tx_timeout_count"] != 0 || st["rx_errors"] != 0 || st["tx_errors"] != 0 {
		t.Errorf("ethtool -S after the takeovers: tx_timeout_count %d, rx_errors %d, tx_errors %d", st["tx_timeout_count"], st["rx_errors"], st["tx_errors"])
	}
}

// TestVFUTakeoverIntModes: in MSI and INTx modes too, interrupts keep
// coming across takeovers and traffic flows; `ethtool -S` stays
// consistent (totals go on, no error or TX timeout counted).
func TestVFUTakeoverIntModes(t *testing.T) {
	for _, mode := range []int{1, 0} {
		t.Run(fmt.Sprintf("IntMode=%d", mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			defer cancel()
			r := newRig(t, ctx, harness.VFIOUser, rigOpts{kernelArgs: fmt.Sprintf("e1000e_opts=IntMode=%d", mode)})
			r.ping(2, "")
			for i := 1; i <= 3; i++ {
				irq, rx, tx := r.eth0IRQs(), r.guestCounter("rx_packets"), r.guestCounter("tx_packets")
				es := r.ethStats()
				r.takeOver(i)
				r.ping(3, "")
				r.checkEthStats(i, es, r.ethStats())
				if now := r.eth0IRQs(); now <= irq {
					t.Fatalf("takeover %d: eth0 interrupts %d, were %d", i, now, irq)
				}
				if nrx, ntx := r.guestCounter("rx_packets"), r.guestCounter("tx_packets"); nrx < rx+3 || ntx < tx+3 {
					t.Fatalf("takeover %d: rx_packets %d→%d, tx_packets %d→%d", i, rx, nrx, tx, ntx)
				}
			}
			r.tcpBothWays(2 << 20)
			r.checkNoHang()
		})
	}
}
