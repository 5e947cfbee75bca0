package harness

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"
)

// TCPResult is one checked transfer between the guest and a peer in a
// namespace, timed by the guest.
type TCPResult struct {
	Bytes   int64
	Seconds float64
}

// Mbps is the rate in megabits per second.
func (r TCPResult) Mbps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Seconds / 1e6
}

// TCPTransfer moves size bytes between the guest (through agent) and a peer
// listening at host (an IP address of the namespace ns): guest→host when up,
// else host→guest. Both ends hash the stream and the hashes are compared
// with the expected one; any difference is an error.
func TCPTransfer(ctx context.Context, ns *NetNS, agent *Agent, host string, up bool, size int64) (TCPResult, error) {
	timeout := time.Duration(size/(256<<10))*time.Second + time.Minute // ≥ 2 Mbit/s
	l, err := ns.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return TCPResult{}, err
	}
	defer l.Close()
	addr := l.Addr().String()
	seed := uint64(time.Now().UnixNano())
	type res struct {
		x   Transfer
		err error
	}
	done := make(chan res, 1)
	go func() {
		var r res
		if up {
			r.x, r.err = SinkOnce(l, timeout)
		} else {
			r.x, r.err = SourceOnce(l, size, seed, timeout)
		}
		done <- r
	}()
	way := "host→guest"
	var args []string
	if up {
		way = "guest→host"
		args = []string{"send", addr, fmt.Sprint(size), fmt.Sprint(seed)}
	} else {
		args = []string{"recv", addr}
	}
	rp, err := agent.Call(ctx, timeout, args[0], args[1:]...)
	if err != nil {
		l.Close()
		<-done
		return TCPResult{}, fmt.Errorf("%s: %w", way, err)
	}
	h := <-done
	if h.err != nil {
		return TCPResult{}, fmt.Errorf("%s: peer: %w", way, h.err)
	}
	gBytes, _ := rp.Data["bytes"].(float64)
	secs, _ := rp.Data["seconds"].(float64)
	want := StreamSHA256(size, seed)
	if int64(gBytes) != size || h.x.Bytes != size {
		return TCPResult{}, fmt.Errorf("%s: guest moved %d bytes, peer %d, want %d", way, int64(gBytes), h.x.Bytes, size)
	}
	if rp.Data["sha256"] != want || h.x.SHA256 != want {
		return TCPResult{}, fmt.Errorf("%s: SHA-256 differs: guest %v, peer %s, sent %s", way, rp.Data["sha256"], h.x.SHA256, want)
	}
	return TCPResult{Bytes: size, Seconds: secs}, nil
}

var pingAvg = regexp.MustCompile(`min/avg/max = [0-9.]+/([0-9.]+)/`)

// PingRTT pings host count times from the guest and returns the mean round
// trip; a lost echo is an error.
func PingRTT(ctx context.Context, agent *Agent, host string, count int) (time.Duration, error) {
	out, err := agent.Sh(ctx, time.Duration(count)*time.Second+30*time.Second,
		fmt.Sprintf("ping -c %d -i 0.2 -W 5 %s", count, host))
	if err != nil {
		return 0, err
	}
	if !regexp.MustCompile(fmt.Sprintf(`%d packets received`, count)).MatchString(out) {
		return 0, fmt.Errorf("ping lost echoes: %s", out)
	}
	m := pingAvg.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping: no round-trip summary in %q", out)
	}
	ms, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}
