package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
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
