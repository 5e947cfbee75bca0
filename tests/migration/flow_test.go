//go:build integration

package migration

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"e1000e-vfu/tests/agentproto"
	"e1000e-vfu/tests/harness"
)

// tcpFlow is a host→guest TCP stream of a seeded byte sequence: the host
// writes it, the guest's agent reads and hashes it (recv); the two hashes
// and byte counts must agree with the sequence's. The receive direction
// makes the NIC write guest memory throughout (the pages DMA logging must
// report while the guest migrates).
type tcpFlow struct {
	size int64
	seed uint64
	id   int64 // the agent request (recv), answered wherever the guest runs
	sent atomic.Int64
	// maxPause is the longest the host waited between two writes once
	// the stream was under way: how long the receiver was out of reach,
	// seen from the host. Read after done.
	maxPause time.Duration
	done     chan error
	l        net.Listener
}

// startTCP listens in ns at the peer's address, starts the guest's recv
// through agent and feeds the connection in the background.
func startTCP(ns *harness.NetNS, agent *harness.Agent, size int64, timeout time.Duration) (*tcpFlow, error) {
	return startTCPAt(ns, agent, hostIP, size, timeout)
}

// startTCPAt is startTCP with the peer listening at ip.
func startTCPAt(ns *harness.NetNS, agent *harness.Agent, ip string, size int64, timeout time.Duration) (*tcpFlow, error) {
	l, err := ns.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	f := &tcpFlow{size: size, seed: uint64(time.Now().UnixNano()), done: make(chan error, 1), l: l}
	go func() { f.done <- f.feed(timeout) }()
	if f.id, err = agent.Begin(timeout, "recv", l.Addr().String()); err != nil {
		l.Close()
		<-f.done
		return nil, err
	}
	return f, nil
}

func (f *tcpFlow) feed(timeout time.Duration) error {
	defer f.l.Close()
	f.l.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	c, err := f.l.Accept()
	if err != nil {
		return fmt.Errorf("tcp peer: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64<<10)
	src := io.LimitReader(agentproto.Stream(f.seed), f.size)
	var last time.Time
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return fmt.Errorf("tcp peer: after %d bytes: %w", f.sent.Load(), err)
			}
			if now := time.Now(); !last.IsZero() && now.Sub(last) > f.maxPause {
				f.maxPause = now.Sub(last)
			}
			last = time.Now()
			f.sent.Add(int64(n))
		}
		if rerr != nil {
			return nil // the whole sequence went out
		}
	}
}

// waitSent waits until at least n bytes went out, so that a migration
// starts with the stream in full flow.
func (f *tcpFlow) waitSent(ctx context.Context, n int64) error {
	for f.sent.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("tcp stream: %d of %d bytes sent: %w", f.sent.Load(), n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// finish waits for the guest's reply on agent (the guest's current VM) and
// checks the stream end to end. It returns the guest's time in seconds.
func (f *tcpFlow) finish(ctx context.Context, agent *harness.Agent, wait time.Duration) (float64, error) {
	rp, err := agent.Await(ctx, f.id, wait)
	if err != nil {
		f.l.Close()
		return 0, errors.Join(err, <-f.done)
	}
	if err := <-f.done; err != nil {
		return 0, err
	}
	h := sha256.New()
	io.CopyBuffer(h, io.LimitReader(agentproto.Stream(f.seed), f.size), make([]byte, 256<<10))
	want := hex.EncodeToString(h.Sum(nil))
	got, _ := rp.Data["bytes"].(float64)
	if int64(got) != f.size || rp.Data["sha256"] != want {
		return 0, fmt.Errorf("tcp stream: guest read %d bytes with SHA-256 %v, want %d with %s", int64(got), rp.Data["sha256"], f.size, want)
	}
	secs, _ := rp.Data["seconds"].(float64)
	return secs, nil
}

// udpFlow is a sequenced UDP flow: the guest's agent sends numbered
// datagrams one at a time and waits (up to 1 s) for each echo; the host
// peer echoes them and records when each number arrived, so the gap a
// migration makes is measured on the host.
type udpFlow struct {
	c    net.PacketConn
	id   int64
	mu   sync.Mutex
	seen map[uint64]time.Time
	max  uint64
	any  bool
	done chan struct{}
}

// udpStats is what a flow saw.
type udpStats struct {
	Sent, Echoed int           // numbered datagrams the guest sent, echoes it got back
	Lost         int           // Sent - Echoed: lost either way
	MaxGap       time.Duration // the longest time between two arrivals at the host
	GapAt        time.Time     // when that gap ended
}

const udpSize = 64

// startUDP starts the host echo and the guest's flow, which runs for d.
func startUDP(ns *harness.NetNS, agent *harness.Agent, d time.Duration) (*udpFlow, error) {
	c, err := ns.ListenPacket("udp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		return nil, err
	}
	f := &udpFlow{c: c, seen: map[uint64]time.Time{}, done: make(chan struct{})}
	go f.echo()
	// The agent stops at the count or at its timeout, whichever comes
	// first, and reports what it got back; the count is beyond reach.
	if f.id, err = agent.Begin(d, "udpecho", c.LocalAddr().String(), "100000", fmt.Sprint(udpSize)); err != nil {
		c.Close()
		<-f.done
		return nil, err
	}
	return f, nil
}

func (f *udpFlow) echo() {
	defer close(f.done)
	b := make([]byte, 2048)
	for {
		n, addr, err := f.c.ReadFrom(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n != udpSize {
			continue
		}
		seq := binary.BigEndian.Uint64(b)
		if seq > 1<<20 {
			continue
		}
		f.mu.Lock()
		if _, dup := f.seen[seq]; !dup {
			f.seen[seq] = time.Now()
		}
		if seq > f.max || !f.any {
			f.max, f.any = seq, true
		}
		f.mu.Unlock()
		f.c.WriteTo(b[:n], addr)
	}
}

// count is how many numbered datagrams have reached the host so far.
func (f *udpFlow) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

// finish waits for the guest's reply on agent and sums the flow up.
func (f *udpFlow) finish(ctx context.Context, agent *harness.Agent, wait time.Duration) (udpStats, error) {
	rp, err := agent.Await(ctx, f.id, wait)
	f.c.Close()
	<-f.done
	if err != nil {
		return udpStats{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	echoed, _ := rp.Data["echoed"].(float64)
	s := udpStats{Echoed: int(echoed)}
	if f.any {
		s.Sent = int(f.max) + 1
	}
	s.Lost = s.Sent - s.Echoed
	var prev time.Time
	for seq := uint64(0); seq <= f.max && f.any; seq++ {
		at, ok := f.seen[seq]
		if !ok {
			continue
		}
		if !prev.IsZero() && at.Sub(prev) > s.MaxGap {
			s.MaxGap, s.GapAt = at.Sub(prev), at
		}
		prev = at
	}
	if s.Sent == 0 {
		return s, errors.New("udp flow: nothing reached the host")
	}
	return s, nil
}

// udpFeed is a host→guest UDP flow to a guest that only receives: the host
// sends numbered datagrams every udpEvery to the guest's udprecv, which
// reports what arrived and the longest gap between arrivals.
type udpFeed struct {
	id   int64
	c    net.PacketConn
	sent atomic.Int64
	stop chan struct{}
	done chan struct{}
}

// recvStats is what the guest's udprecv saw.
type recvStats struct {
	Received, Lost int
	Sent           int64         // what the host sent
	MaxGap         time.Duration // the longest time between two arrivals
	GapEnd         time.Duration // when that gap ended, from the flow's start
	Tail           time.Duration // from the last arrival to the flow's end
}

const (
	udpPort  = 5001
	udpEvery = 10 * time.Millisecond
)

// startFeed starts the guest's udprecv for d and the host's sender.
func startFeed(ns *harness.NetNS, agent *harness.Agent, d time.Duration) (*udpFeed, error) {
	c, err := ns.ListenPacket("udp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		return nil, err
	}
	f := &udpFeed{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	if f.id, err = agent.Begin(d+15*time.Second, "udprecv", fmt.Sprint(udpPort), fmt.Sprint(int(d.Seconds()))); err != nil {
		c.Close()
		return nil, err
	}
	go f.send(d)
	return f, nil
}

// send sends until d has passed (bounded in count and time) or stop.
func (f *udpFeed) send(d time.Duration) {
	defer close(f.done)
	to := &net.UDPAddr{IP: net.ParseIP(guestIP), Port: udpPort}
	msg := make([]byte, udpSize)
	tick := time.NewTicker(udpEvery)
	defer tick.Stop()
	end := time.After(d)
	for seq := uint64(0); seq < uint64(d/udpEvery)+1; seq++ {
		select {
		case <-f.stop:
			return
		case <-end:
			return
		case <-tick.C:
		}
		binary.BigEndian.PutUint64(msg, seq)
		if _, err := f.c.WriteTo(msg, to); err == nil {
			f.sent.Add(1)
		}
	}
}

// finish waits for the guest's report on agent (the guest's current VM).
func (f *udpFeed) finish(ctx context.Context, agent *harness.Agent, wait time.Duration) (recvStats, error) {
	rp, err := agent.Await(ctx, f.id, wait)
	close(f.stop)
	<-f.done
	f.c.Close()
	if err != nil {
		return recvStats{}, err
	}
	num := func(k string) int64 { v, _ := rp.Data[k].(float64); return int64(v) }
	ms := func(k string) time.Duration { return time.Duration(num(k)) * time.Millisecond }
	s := recvStats{Received: int(num("received")), Lost: int(num("lost")), Sent: f.sent.Load(),
		MaxGap: ms("max_gap_ms"), GapEnd: ms("gap_end_ms"), Tail: ms("tail_ms")}
	if s.Received == 0 {
		return s, fmt.Errorf("udp feed: the guest received none of %d datagrams", s.Sent)
	}
	return s, nil
}
