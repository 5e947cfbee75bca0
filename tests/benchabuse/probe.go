package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/tests/harness"
	"e1000e-vfu/vfiouser"
)

// clientTimeout bounds every reply a client of the benchmark waits for: a
// server that takes longer is reported, not waited for.
const clientTimeout = 5 * time.Second

// poller measures control-socket round trips (query-stats, which takes the
// NIC's lock) on one connection, every period, until stopped.
type poller struct {
	done    chan struct{}
	stopped chan struct{}
	mu      sync.Mutex
	rtts    []time.Duration
	err     error
}

// maxPolls bounds the samples one poller keeps (an hour at 1 ms).
const maxPolls = 3_600_000

func startPoller(path string, period time.Duration) (*poller, error) {
	c, err := net.DialTimeout("unix", path, clientTimeout)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	p := &poller{done: make(chan struct{}), stopped: make(chan struct{})}
	go p.loop(c, period)
	return p, nil
}

func (p *poller) loop(c net.Conn, period time.Duration) {
	defer close(p.stopped)
	defer c.Close()
	rd := bufio.NewReaderSize(c, 4096)
	req := []byte(`{"cmd":"query-stats"}` + "\n")
	t := time.NewTicker(period)
	defer t.Stop()
	// Each pass is one round trip, until stopped or maxPolls.
	for n := 0; n < maxPolls; n++ {
		// The first query goes at once: some abusers are gone within
		// a period.
		if n > 0 {
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
		c.SetDeadline(time.Now().Add(clientTimeout))
		start := time.Now()
		_, err := c.Write(req)
		var line []byte
		if err == nil {
			line, err = rd.ReadBytes('\n')
		}
		rtt := time.Since(start)
		if err == nil && !bytes.Contains(line, []byte(`"ok":true`)) {
			err = fmt.Errorf("reply %q", bytes.TrimSpace(line))
		}
		p.mu.Lock()
		if err != nil {
			p.err = fmt.Errorf("control query-stats: %w", err)
			p.mu.Unlock()
			return
		}
		p.rtts = append(p.rtts, rtt)
		p.mu.Unlock()
	}
}

// stop ends the polling and returns its round trips.
func (p *poller) stop() ([]time.Duration, error) {
	close(p.done)
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rtts, p.err
}

// wellBehaved is the client that comes after an abuser: it connects (again
// while the server still refuses it as a second client), reads STATUS, then
// reads it o.probes more times, resets the device as QEMU would before
// using it, and goes. first runs from gone, the moment the abuser left.
func (b *bench) wellBehaved(gone time.Time) (first time.Duration, next []time.Duration, err error) {
	c, err := b.connect(10 * time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	var st [4]byte
	if err := c.ReadRegion(device.RegionBAR0, e1000e.STATUS, st[:]); err != nil {
		return 0, nil, fmt.Errorf("first STATUS read: %w", err)
	}
	first = time.Since(gone)
	next = make([]time.Duration, 0, b.o.probes)
	for range b.o.probes {
		start := time.Now()
		if err := c.ReadRegion(device.RegionBAR0, e1000e.STATUS, st[:]); err != nil {
			return first, next, fmt.Errorf("STATUS read: %w", err)
		}
		next = append(next, time.Since(start))
	}
	if err := c.Reset(); err != nil {
		return first, next, fmt.Errorf("reset: %w", err)
	}
	return first, next, nil
}

// connect dials the vfio-user socket and negotiates, retrying while the
// server refuses the connection (it still serves, or tears down, the one
// before), for at most within.
func (b *bench) connect(within time.Duration) (*vfiouser.Client, error) {
	deadline := time.Now().Add(within)
	var last error
	// Each pass is one attempt; the deadline bounds them.
	for time.Now().Before(deadline) {
		if b.srv.Exited() {
			return nil, errServerGone
		}
		c, err := vfiouser.Dial(b.srv.Socket)
		if err == nil {
			c.SetTimeout(clientTimeout)
			if _, err = c.Negotiate(nil); err == nil {
				return c, nil
			}
			c.Close()
		}
		last = err
		time.Sleep(time.Millisecond)
	}
	return nil, fmt.Errorf("not served within %v: %w", within, last)
}

// prepare saves the device's state once, as a source would, for the
// hostile stream abusers to damage.
func (b *bench) prepare() error {
	c, err := b.connect(10 * time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.SetMigrationState(device.MigStopCopy); err != nil {
		return fmt.Errorf("STOP_COPY: %w", err)
	}
	buf := make([]byte, 64<<10)
	// A NIC's state is a few KiB: 256 reads of 64 KiB are far more.
	for range 256 {
		n, err := c.MigDataRead(buf)
		if err != nil {
			return fmt.Errorf("MIG_DATA_READ: %w", err)
		}
		if n == 0 {
			break
		}
		b.good = append(b.good, buf[:n]...)
	}
	if len(b.good) == 0 {
		return fmt.Errorf("the server saved an empty state")
	}
	if _, err := c.SetMigrationState(device.MigRunning); err != nil {
		return fmt.Errorf("RUNNING: %w", err)
	}
	return c.Reset()
}

// waitIdle waits until the control socket reports no vfio-user client, and
// returns that report (with the server's goroutines and live heap).
func waitIdle(ctx context.Context, path string) (control.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Each pass is one query; the context bounds them.
	for {
		res, err := control.Call(ctx, path, control.Request{Cmd: control.CmdQueryStatus})
		if err != nil {
			return control.Status{}, fmt.Errorf("query-status: %w", err)
		}
		var st control.Status
		if err := json.Unmarshal(res, &st); err != nil {
			return control.Status{}, fmt.Errorf("query-status %s: %w", res, err)
		}
		if st.State != "running" {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return control.Status{}, fmt.Errorf("a client is still served: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// procStats are a process's resource counts.
type procStats struct {
	fds, threads int
	rss          int64 // bytes
	// goroutines and heapLive (bytes, as of the last collection) come
	// from the server's query-status.
	goroutines int
	heapLive   uint64
}

func readProc(pid int) (procStats, error) {
	c, err := harness.ReadProcCounts(pid)
	return procStats{fds: c.FDs, threads: c.Threads, rss: c.RSSKiB << 10}, err
}
