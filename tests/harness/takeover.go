package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"e1000e-vfu/tests/agentproto"
)

// TakeOver replaces the running server s with a new process of cfg.Bin
// (serve --takeover, a live upgrade): the new one is started with cfg's
// backend, namespace and arguments, s's MAC and control socket, and
// logs to its own file in s's directory. It returns once the new server
// logs that it took over and s has exited with status 0; the new server
// has s's sockets.
func (s *Server) TakeOver(ctx context.Context, cfg ServerConfig, n int) (*Server, error) {
	nu := &Server{
		Socket:  s.Socket,
		Control: s.Control,
		log:     filepath.Join(filepath.Dir(s.log), fmt.Sprintf("server-%d.log", n)),
		exited:  make(chan struct{}),
	}
	if err := nu.start(cfg, os.O_TRUNC, "--takeover", s.Control); err != nil {
		return nil, fmt.Errorf("harness: starting the successor: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !strings.Contains(nu.Log(), "took over") {
		select {
		case <-nu.exited:
			return nil, fmt.Errorf("harness: the successor exited (%v) without taking over\n%s", nu.waitErr, nu.LogTail(4096))
		case <-ctx.Done():
			nu.Kill()
			return nil, fmt.Errorf("harness: the successor did not take over: %w\n%s", ctx.Err(), nu.LogTail(4096))
		case <-time.After(5 * time.Millisecond):
		}
	}
	select {
	case <-s.exited:
		if s.waitErr != nil {
			return nu, fmt.Errorf("harness: the predecessor exited with %v", s.waitErr)
		}
	case <-ctx.Done():
		return nu, errors.New("harness: the predecessor did not exit after the takeover")
	}
	return nu, nil
}

// AwaitAll waits up to wait for the replies to every request in ids, sent
// with Begin, in whatever order they come.
func (a *Agent) AwaitAll(ctx context.Context, ids []int64, wait time.Duration) (map[int64]agentproto.Reply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	want := make(map[int64]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	got := make(map[int64]agentproto.Reply, len(ids))
	for len(got) < len(ids) {
		select {
		case r := <-a.replies:
			if !want[r.ID] {
				continue
			}
			if !r.OK {
				return got, fmt.Errorf("agent request %d: %s", r.ID, r.Err)
			}
			got[r.ID] = r
		case <-a.done:
			return got, errors.New("agent: port closed")
		case <-t.C:
			return got, fmt.Errorf("agent: %d of %d replies in %v", len(got), len(ids), wait)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
	return got, nil
}
