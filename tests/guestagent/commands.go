package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"e1000e-vfu/tests/agentproto"
)

// maxOut bounds what a command returns, so one chatty command cannot flood
// the serial port for minutes.
const maxOut = 1 << 20

func run(req Request) Reply {
	rep := Reply{ID: req.ID}
	ctx, cancel := context.WithTimeout(context.Background(), timeout(req))
	defer cancel()
	var err error
	switch req.Cmd {
	case "sh":
		err = cmdSh(ctx, req.Args, &rep)
	case "read":
		err = cmdRead(req.Args, &rep)
	case "send":
		err = cmdSend(ctx, req.Args, &rep)
	case "recv":
		err = cmdRecv(ctx, req.Args, &rep)
	case "udpecho":
		err = cmdUDPEcho(ctx, req.Args, &rep)
	case "udprecv":
		err = cmdUDPRecv(ctx, req.Args, &rep)
	case "mcast":
		err = cmdMcast(ctx, req.Args, &rep)
	case "ethtool":
		err = cmdEthtool(req.Args, &rep)
	case "selftest":
		err = cmdSelftest(req.Args, &rep)
	case "ethstats":
		err = cmdEthStats(req.Args, &rep)
	case "wait-link":
		err = cmdWaitLink(ctx, req.Args, &rep)
	default:
		err = fmt.Errorf("unknown command %q", req.Cmd)
	}
	if err != nil {
		rep.Err = err.Error()
		return rep
	}
	rep.OK = true
	return rep
}

func nargs(args []string, n int) error {
	if len(args) != n {
		return fmt.Errorf("want %d arguments, have %d", n, len(args))
	}
	return nil
}

// cmdSh runs one shell command line; ok means it ran, code is its status.
func cmdSh(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 1); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", args[0])
	var buf limitedBuffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	rep.Out = buf.String()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		rep.Code = ee.ExitCode()
		if ctx.Err() != nil {
			return fmt.Errorf("timed out: %w", ctx.Err())
		}
		return nil
	case err != nil:
		return err
	}
	return nil
}

// cmdRead returns a file's bytes (at most maxOut) as data.bytes.
func cmdRead(args []string, rep *Reply) error {
	if err := nargs(args, 1); err != nil {
		return err
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxOut))
	if err != nil {
		return err
	}
	rep.Data = map[string]any{"bytes": b}
	return nil
}

// cmdSend connects to ADDR and sends SIZE bytes of Stream(SEED), then closes
// its side and waits for the peer to close. Data: bytes, sha256, seconds.
func cmdSend(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 3); err != nil {
		return err
	}
	size, err1 := strconv.ParseInt(args[1], 10, 64)
	seed, err2 := strconv.ParseUint(args[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil || size < 0 {
		return fmt.Errorf("send ADDR SIZE SEED: %v", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	stopOnCancel(ctx, c)
	h := sha256.New()
	start := time.Now()
	n, err := io.CopyBuffer(io.MultiWriter(c, h), io.LimitReader(agentproto.Stream(seed), size), make([]byte, 256<<10))
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	c.(*net.TCPConn).CloseWrite()
	// The peer closes once it has read everything: that is the end.
	io.Copy(io.Discard, c)
	secs := time.Since(start).Seconds()
	rep.Data = map[string]any{"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil)), "seconds": secs}
	return nil
}

// cmdRecv connects to ADDR and reads until the peer closes.
// Data: bytes, sha256, seconds.
func cmdRecv(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 1); err != nil {
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	stopOnCancel(ctx, c)
	h := sha256.New()
	start := time.Now()
	n, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	secs := time.Since(start).Seconds()
	rep.Data = map[string]any{"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil)), "seconds": secs}
	return nil
}

// cmdUDPEcho sends COUNT datagrams of SIZE bytes to ADDR, one at a time, and
// counts the echoes that come back intact. Data: sent, echoed, rtt_us (mean).
func cmdUDPEcho(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 3); err != nil {
		return err
	}
	count, err1 := strconv.Atoi(args[1])
	size, err2 := strconv.Atoi(args[2])
	if err := errors.Join(err1, err2); err != nil || count < 1 || count > 100000 || size < 8 || size > 65000 {
		return fmt.Errorf("udpecho ADDR COUNT(1..100000) SIZE(8..65000): %v", err)
	}
	c, err := net.Dial("udp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, size)
	in := make([]byte, size+1)
	echoed := 0
	var total time.Duration
	for i := 0; i < count && ctx.Err() == nil; i++ {
		binary.BigEndian.PutUint64(msg, uint64(i))
		for j := 8; j < size; j++ {
			msg[j] = byte(i + j)
		}
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := c.Read(in)
			if err != nil {
				break // lost; go on with the next one
			}
			if n == size && bytes.Equal(in[:n], msg) {
				echoed++
				total += time.Since(start)
				break
			}
		}
	}
	rtt := int64(0)
	if echoed > 0 {
		rtt = total.Microseconds() / int64(echoed)
	}
	rep.Data = map[string]any{"sent": count, "echoed": echoed, "rtt_us": rtt}
	return nil
}

// cmdUDPRecv listens on UDP PORT for SECONDS and takes datagrams that start
// with a big-endian sequence number, as a guest that only receives: it
// sends nothing back. It reports how many distinct numbers arrived, the
// first and last, how many in between are missing (lost), the longest time
// between two arrivals (max_gap_ms) and when that gap ended (gap_end_ms,
// from the start), and the time from the last arrival to the end (tail_ms),
// so a flow that stopped and never came back shows as a long tail.
func cmdUDPRecv(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 2); err != nil {
		return err
	}
	port, err1 := strconv.Atoi(args[0])
	secs, err2 := strconv.Atoi(args[1])
	if err := errors.Join(err1, err2); err != nil || port < 1 || port > 65535 || secs < 1 || secs > 600 {
		return fmt.Errorf("udprecv PORT(1..65535) SECONDS(1..600): %v", err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	end := start.Add(time.Duration(secs) * time.Second)
	const maxSeq = 1 << 20 // bounds the set below
	seen := make(map[uint64]bool)
	var (
		first, last   uint64
		prev          time.Time
		maxGap, gapAt time.Duration
	)
	b := make([]byte, 2048)
	for ctx.Err() == nil && time.Now().Before(end) {
		c.SetReadDeadline(end)
		n, _, err := c.ReadFrom(b)
		if err != nil {
			break // the deadline
		}
		now := time.Now()
		if n < 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(b)
		if seq >= maxSeq || seen[seq] {
			continue
		}
		if len(seen) == 0 || seq < first {
			first = seq
		}
		if len(seen) == 0 || seq > last {
			last = seq
		}
		seen[seq] = true
		if !prev.IsZero() && now.Sub(prev) > maxGap {
			maxGap, gapAt = now.Sub(prev), now.Sub(start)
		}
		prev = now
	}
	rep.Data = map[string]any{"received": len(seen)}
	if len(seen) > 0 {
		rep.Data["first"], rep.Data["last"] = first, last
		rep.Data["lost"] = int(last-first+1) - len(seen)
		rep.Data["max_gap_ms"] = maxGap.Milliseconds()
		rep.Data["gap_end_ms"] = gapAt.Milliseconds()
		rep.Data["tail_ms"] = time.Since(prev).Milliseconds()
	}
	return nil
}

// cmdMcast joins group GROUP:PORT on IFACE and waits for N datagrams to it.
// Data: received.
func cmdMcast(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 3); err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	group, err := net.ResolveUDPAddr("udp4", args[1])
	if err != nil {
		return err
	}
	want, err := strconv.Atoi(args[2])
	if err != nil || want < 1 || want > 10000 {
		return fmt.Errorf("mcast IFACE GROUP:PORT N(1..10000): %v", err)
	}
	c, err := net.ListenMulticastUDP("udp4", ifi, group)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetReadDeadline(dl)
	b := make([]byte, 2048)
	got := 0
	for got < want {
		if _, _, err := c.ReadFrom(b); err != nil {
			return fmt.Errorf("received %d of %d: %w", got, want, err)
		}
		got++
	}
	rep.Data = map[string]any{"received": got}
	return nil
}

// cmdWaitLink waits until IFACE reports carrier, or the request times out.
func cmdWaitLink(ctx context.Context, args []string, rep *Reply) error {
	if err := nargs(args, 2); err != nil {
		return err
	}
	want := args[1] == "up"
	for {
		b, err := os.ReadFile("/sys/class/net/" + args[0] + "/carrier")
		up := err == nil && strings.TrimSpace(string(b)) == "1"
		if up == want {
			rep.Out = args[1]
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("link of %s not %s: %w", args[0], args[1], ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopOnCancel closes c when ctx ends, which unblocks any read or write.
func stopOnCancel(ctx context.Context, c net.Conn) {
	go func() {
		<-ctx.Done()
		c.Close()
	}()
}

// limitedBuffer keeps the first maxOut bytes written to it.
type limitedBuffer struct {
	b         bytes.Buffer
	truncated bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	room := maxOut - l.b.Len()
	if len(p) > room {
		l.b.Write(p[:max(room, 0)])
		l.truncated = true
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *limitedBuffer) String() string {
	if l.truncated {
		return l.b.String() + "\n[output truncated]"
	}
	return l.b.String()
}
