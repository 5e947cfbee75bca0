package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/internal/panictest"
)

// ServerMAC is the MAC address tests give our server's NIC.
const ServerMAC = "52:54:00:12:34:57"

// ServerConfig describes one run of our server (bin/e1000e-vfu serve).
type ServerConfig struct {
	Bin    string // the server binary
	Dir    string // socket, control socket and log live here
	Netdev string // --netdev spec; "none" when empty
	NetNS  *NetNS // where the server runs (for a TAP backend)
	Args   []string
	// Env is added to the server's environment (e.g. GOGC).
	Env []string
}

// Server is a running server process.
type Server struct {
	cmd     *exec.Cmd
	Socket  string // the vfio-user socket QEMU connects to
	Control string // the control socket
	log     string
	exited  chan struct{}
	waitErr error
	panics  atomic.Uint64 // query-status's panics, the last read (see notePanics)
}

// StartServer starts the server and waits until its vfio-user socket exists.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{
		Socket:  filepath.Join(cfg.Dir, "nic.sock"),
		Control: filepath.Join(cfg.Dir, "ctl.sock"),
		log:     filepath.Join(cfg.Dir, "server.log"),
		exited:  make(chan struct{}),
	}
	os.Remove(s.Socket)
	if err := s.start(cfg, os.O_APPEND, "--socket", s.Socket, "--control", s.Control); err != nil {
		return nil, fmt.Errorf("harness: starting the server: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(s.Socket); err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("harness: the server exited (%v) before listening\n%s", s.waitErr, s.LogTail(4096))
		case <-ctx.Done():
			s.Kill()
			return nil, fmt.Errorf("harness: the server did not create %s: %w\n%s", s.Socket, ctx.Err(), s.LogTail(4096))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Exited reports whether the server has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// ExitErr is the server's exit status, once it has exited.
func (s *Server) ExitErr() error { <-s.exited; return s.waitErr }

// Kill kills the server at once and waits (bounded) for it to go.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
}

// Stop sends SIGTERM and kills the server if it has not exited in 10 s. It
// returns the exit status of a server that stopped by itself. Before it
// signals a running server, it reads the panics it recovered (see
// CheckPanics).
func (s *Server) Stop() error {
	s.notePanics()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.waitErr
	case <-time.After(10 * time.Second):
		s.Kill()
		return fmt.Errorf("the server ignored SIGTERM for 10 s")
	}
}

// StopAtEnd stops the server when t ends and fails t if the server
// recovered a panic (CheckPanics); if t failed, it logs the last n bytes
// of the server's log, named name.
func (s *Server) StopAtEnd(t testing.TB, name string, n int) {
	t.Cleanup(func() {
		s.Stop()
		s.CheckPanics(t)
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, s.LogTail(n))
		}
	})
}

// CheckPanics fails t if the server recovered a panic, a bug even when
// the test's traffic went through: query-status counted one (read now if
// the server runs, and by Stop before it stopped it), or its log holds the
// record of one (the only trace left by a server that was killed, exited,
// or handed its control socket over).
func (s *Server) CheckPanics(t testing.TB) {
	t.Helper()
	s.notePanics()
	n, recs := s.panics.Load(), panictest.Logged(s.Log())
	if n > 0 || len(recs) > 0 {
		t.Errorf("server %s: query-status counted %d recovered panics, and its log has %d, a bug:\n%s",
			s.log, n, len(recs), strings.Join(recs, "\n"))
	}
}

// notePanics keeps the panics a running server's query-status reports.
func (s *Server) notePanics() {
	if s.Exited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := s.Status(ctx); err == nil && st.Panics > s.panics.Load() {
		s.panics.Store(st.Panics)
	}
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// LogTail returns the end of the server's log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.log)
	return string(tail(b, n))
}

// Log returns the server's whole log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// Ctl sends one command to the control socket and returns its result.
func (s *Server) Ctl(ctx context.Context, req map[string]any) (json.RawMessage, error) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", s.Control)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	var rep struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return nil, fmt.Errorf("control: bad reply %q: %w", strings.TrimSpace(string(line)), err)
	}
	if !rep.OK {
		return nil, fmt.Errorf("control %v: %s", req["cmd"], rep.Error)
	}
	return rep.Result, nil
}

// Status is the server's query-status (control.Status: "running" with a
// client, "waiting" without, its goroutines and live heap).
func (s *Server) Status(ctx context.Context) (control.Status, error) {
	var st control.Status
	raw, err := s.Ctl(ctx, map[string]any{"cmd": "query-status"})
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("query-status %s: %w", raw, err)
	}
	return st, nil
}

// WaitState waits up to d for the server's state to become want.
func (s *Server) WaitState(ctx context.Context, want string, d time.Duration) (control.Status, error) {
	deadline := time.Now().Add(d)
	for {
		st, err := s.Status(ctx)
		if err != nil || st.State == want {
			return st, err
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("server state %q after %v, want %q", st.State, d, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// start runs cfg.Bin serve with how (the sockets to serve or take over)
// and cfg's backend, namespace, environment and arguments, logging to
// s.log opened with mode (append or truncate), and notes its exit.
func (s *Server) start(cfg ServerConfig, mode int, how ...string) error {
	netdev := cfg.Netdev
	if netdev == "" {
		netdev = "none"
	}
	argv := append(append([]string{cfg.Bin, "serve"}, how...), "--netdev", netdev, "--mac", ServerMAC)
	argv = append(argv, cfg.Args...)
	if cfg.NetNS != nil {
		s.cmd = cfg.NetNS.Command(context.Background(), argv...)
	} else {
		s.cmd = exec.Command(argv[0], argv[1:]...)
	}
	if len(cfg.Env) > 0 {
		s.cmd.Env = append(os.Environ(), cfg.Env...)
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|mode, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	return nil
}
