// Package control serves a running device's control socket: a UNIX socket
// that takes newline-delimited JSON commands from an orchestrator (query the
// configuration as its parameter list, query statistics and link state, set
// the link up or down, query the run state, announce the device's addresses
// to the network). The protocol is documented in
// README.md.
//
// The package talks to the device through Target, so it knows nothing of
// the NIC, and the wiring lives in the command.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device/model"
	"e1000e-vfu/internal/unixsock"
)

// Target is the device a control socket speaks for. Its methods are called
// from connection goroutines, possibly at the same time, so the device
// serialises them itself.
type Target interface {
	// Config is the device's effective configuration.
	Config() model.Config
	// Stats returns statistics counters by name.
	Stats() map[string]uint64
	LinkUp() bool
	SetLink(up bool) error
}

// StatusReporter is implemented by targets that know their run state.
type StatusReporter interface {
	Status() Status
}

// Announcer is implemented by targets that can announce the device's
// addresses to the network, as QMP announce-self does: the announce
// command, and the "announce" counters of query-stats.
type Announcer interface {
	// Announce starts an announcement now, replacing one in progress.
	Announce() (AnnounceResult, error)
	// AnnounceStats are the cumulative counts since the device started.
	AnnounceStats() AnnounceStats
}

// AnnounceResult is the result of announce: what each round sends with
// the addresses as they are now (later rounds read them again), and how
// many rounds there are.
type AnnounceResult struct {
	// Addresses is the number of addresses announced untagged, one
	// frame each per round.
	Addresses int `json:"addresses"`
	// Tagged is the number of 802.1Q-tagged copies per round, one per
	// address and VLAN, on top of Addresses.
	Tagged int `json:"tagged"`
	Rounds int `json:"rounds"`
}

// AnnounceStats are the announcement counters in query-stats: rounds sent,
// frames sent, and frames the network backend refused. They are the
// server's, not the guest's: the device's statistics do not count these
// frames.
type AnnounceStats struct {
	Rounds uint64 `json:"rounds"`
	Frames uint64 `json:"frames"`
	Errors uint64 `json:"errors"`
}

// AddressReporter is implemented by targets with a network address.
// query-config then reports it as "mac": the migrated state carries the
// address, so it belongs to the configuration a destination is started
// with and checked against.
type AddressReporter interface {
	MAC() net.HardwareAddr
}

// Handoverer is implemented by targets that can hand themselves over to
// a successor process (serve --takeover). The control socket checks the
// takeover request's form, then gives Handover the connection: it answers
// on it itself (a reply line, then the handover's frames, see
// migration/HANDOVER.md), and the connection is closed when it returns.
// pending are bytes the control socket read past the request line.
type Handoverer interface {
	Handover(req TakeoverRequest, c *net.UnixConn, pending []byte)
}

// TakeoverRequest is a successor's takeover request: the configuration it
// was started with (as query-config prints it), its network backend's
// kind, and the handover format version it reads.
type TakeoverRequest struct {
	Config  model.Source
	Netdev  string
	Version int
}

// WriteReply writes one reply line, as the control socket answers: an
// error when err is not nil, else result.
func WriteReply(w io.Writer, result any, err error) error {
	if err != nil {
		return writeReply(w, reply{Error: err.Error()})
	}
	return writeReply(w, reply{OK: true, Result: result})
}

// Status is the run state of a device.
type Status struct {
	// State is "running", "stopped", ... as the device defines it.
	State string `json:"state"`
	// Migration is the migration state, empty when none is under way.
	Migration string `json:"migration,omitempty"`
	// Goroutines is how many the server runs, for an operator (or a
	// test) checking that clients coming and going leave nothing behind.
	Goroutines int `json:"goroutines,omitempty"`
	// HeapLiveBytes is the Go heap that the last garbage collection
	// found live: what stays when the process's resident size does not
	// shrink at once.
	HeapLiveBytes uint64 `json:"heap_live_bytes,omitempty"`
	// Panics counts the panics the server recovered (the target's own,
	// and the control socket's, which the Server adds): each is a bug,
	// logged with its stack, that closed the connection it happened on.
	Panics uint64 `json:"panics,omitempty"`
}

// Limits of the protocol.
const (
	// MaxRequest bounds one request line, newline included.
	MaxRequest = 4096
	// DefaultMaxConns is the number of connections served at once.
	DefaultMaxConns = 8
	// DefaultIdleTimeout closes a connection that sends nothing.
	DefaultIdleTimeout = 5 * time.Minute
)

// Server serves one Target.
type Server struct {
	Target Target
	Logger *slog.Logger
	// MaxConns caps concurrent connections (DefaultMaxConns when 0); a
	// connection over the cap gets an error reply and is closed.
	MaxConns int
	// IdleTimeout closes a connection idle for that long
	// (DefaultIdleTimeout when 0).
	IdleTimeout time.Duration
	// AllowUID, when not nil, says which peer user ids may connect; by
	// default the server's own effective uid and root may.
	AllowUID func(uid uint32) bool

	panics atomic.Uint64 // see Panics
}

// Panics counts the panics recovered while running commands. Each is a bug
// of the target or the server: it was logged with its stack at error level
// and closed its connection. query-status adds it to the target's count.
func (s *Server) Panics() uint64 { return s.panics.Load() }

// Listen creates the control socket at path, readable and writable only by
// its owner (0600). An existing socket nobody listens on (connecting to it
// is refused) is replaced; a live one, and anything that is not a socket,
// is an error and left untouched (see unixsock.Listen). Peer credentials
// are checked on every connection as well, which closes the window between
// bind and chmod.
func Listen(path string) (*net.UnixListener, error) {
	ln, err := unixsock.Listen(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until ctx is cancelled or ln fails, then
// closes ln and every connection and returns once all of them are done. It
// returns nil after a cancellation.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	if s.Target == nil {
		return errors.New("control: no target")
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	slots := make(chan struct{}, maxConns)

	var (
		mu    sync.Mutex
		conns = make(map[*net.UnixConn]struct{})
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()

	var err error
	for {
		// Running out of descriptors, or a peer that left before accept,
		// is waited out: the control socket must outlive it.
		var nc net.Conn
		nc, err = unixsock.Accept(ctx, ln, log)
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			err = fmt.Errorf("control: accept: %w", err)
			break
		}
		// A UnixListener accepts only *net.UnixConn.
		c := nc.(*net.UnixConn)
		if uid, ok := peerUID(c); !ok || !s.allowed(uid) {
			log.Warn("control: connection refused", "uid", uid, "known", ok)
			c.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			log.Warn("control: too many connections", "max", maxConns)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			writeReply(c, reply{Error: fmt.Sprintf("too many connections (at most %d)", maxConns)})
			c.Close()
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			<-slots
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serveConn(c, log)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
	ln.Close()
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return err
}

func (s *Server) allowed(uid uint32) bool {
	if s.AllowUID != nil {
		return s.AllowUID(uid)
	}
	return uid == 0 || uid == uint32(os.Geteuid())
}

func peerUID(c *net.UnixConn) (uint32, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return 0, false
	}
	return cred.Uid, true
}

// serveConn answers requests on c, one line at a time, until the peer
// closes, goes idle, or sends a line longer than MaxRequest.
func (s *Server) serveConn(c *net.UnixConn, log *slog.Logger) {
	idle := s.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	r := bufio.NewReaderSize(c, MaxRequest)
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		line, err := readLine(r)
		if errors.Is(err, errLineTooLong) {
			writeReply(c, reply{Error: fmt.Sprintf("request longer than %d bytes", MaxRequest)})
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				log.Debug("control: read", "err", err)
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if req, err := DecodeRequest(line); err == nil && req.Cmd == CmdTakeover {
			if h, ok := s.Target.(Handoverer); ok {
				s.takeover(h, req, c, r, log)
				return
			}
		}
		rep, panicked := s.handle(line, log)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := writeReply(c, rep); err != nil {
			log.Debug("control: write", "err", err)
			return
		}
		if panicked {
			return
		}
	}
}

// takeover hands the connection to the target's Handover, which owns it
// until it returns; a panic there is a bug, handled as in handle.
func (s *Server) takeover(h Handoverer, req Request, c *net.UnixConn, r *bufio.Reader, log *slog.Logger) {
	defer func() {
		if p := recover(); p != nil {
			s.panics.Add(1)
			log.Error("control: takeover panicked; closing the connection", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	pending, _ := r.Peek(r.Buffered())
	c.SetDeadline(time.Time{})
	h.Handover(TakeoverRequest{Config: req.takeoverConfig, Netdev: req.Netdev, Version: *req.Version}, c, pending)
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its newline; a last line without
// a newline counts. A line that does not fit the reader's buffer is
// errLineTooLong.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	switch {
	case err == nil:
		return line[:len(line)-1], nil
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, errLineTooLong
	case errors.Is(err, io.EOF) && len(line) > 0:
		return line, nil
	}
	return nil, err
}

type reply struct {
	ID     json.RawMessage `json:"id,omitempty"`
	OK     bool            `json:"ok"`
	Result any             `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

func writeReply(w io.Writer, r reply) error {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(reply{ID: r.ID, Error: "encoding the reply: " + err.Error()})
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// handle decodes and runs one request. A panic is a bug, not the
// request's fault: no request takes the process down, but the panic is
// logged with its stack, counted (Panics), and answered with an internal
// error after which the connection is closed (panicked).
func (s *Server) handle(line []byte, log *slog.Logger) (rep reply, panicked bool) {
	req, err := DecodeRequest(line)
	rep.ID = req.ID
	if err != nil {
		rep.Error = err.Error()
		return rep, false
	}
	defer func() {
		if p := recover(); p != nil {
			s.panics.Add(1)
			log.Error("control: command panicked; closing the connection", "cmd", req.Cmd, "panic", p, "stack", string(debug.Stack()))
			rep, panicked = reply{ID: req.ID, Error: "internal error in " + req.Cmd}, true
		}
	}()
	res, err := s.run(req)
	if err != nil {
		rep.Error = err.Error()
		return rep, false
	}
	rep.OK, rep.Result = true, res
	return rep, false
}

// StatsResult is the result of query-stats. Announce is present when the
// target is an Announcer.
type StatsResult struct {
	LinkUp   bool              `json:"link_up"`
	Stats    map[string]uint64 `json:"stats"`
	Announce *AnnounceStats    `json:"announce,omitempty"`
}

// LinkResult is the result of set-link.
type LinkResult struct {
	LinkUp bool `json:"link_up"`
}

func (s *Server) run(req Request) (any, error) {
	t := s.Target
	switch req.Cmd {
	case CmdQueryConfig:
		c := t.Config()
		if c.Model == nil {
			return nil, errors.New("query-config: the device has no configuration")
		}
		src := c.Source()
		if ar, ok := t.(AddressReporter); ok {
			src.MAC = ar.MAC()
		}
		return src, nil
	case CmdQueryStats:
		st := t.Stats()
		if st == nil {
			st = map[string]uint64{}
		}
		res := StatsResult{LinkUp: t.LinkUp(), Stats: st}
		if a, ok := t.(Announcer); ok {
			as := a.AnnounceStats()
			res.Announce = &as
		}
		return res, nil
	case CmdSetLink:
		if err := t.SetLink(*req.Up); err != nil {
			return nil, fmt.Errorf("set-link: %w", err)
		}
		return LinkResult{LinkUp: t.LinkUp()}, nil
	case CmdQueryStatus:
		st := Status{State: "unknown"}
		if sr, ok := t.(StatusReporter); ok {
			st = sr.Status()
		}
		st.Panics += s.Panics()
		return st, nil
	case CmdTakeover:
		return nil, errors.New("takeover: this server cannot hand itself over")
	case CmdAnnounce:
		a, ok := t.(Announcer)
		if !ok {
			return nil, errors.New("announce: the device cannot announce itself")
		}
		res, err := a.Announce()
		if err != nil {
			return nil, fmt.Errorf("announce: %w", err)
		}
		return res, nil
	}
	// DecodeRequest admits only the commands above.
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}

// Commands.
const (
	CmdQueryConfig = "query-config"
	CmdQueryStats  = "query-stats"
	CmdSetLink     = "set-link"
	CmdQueryStatus = "query-status"
	CmdAnnounce    = "announce"
	// CmdTakeover asks the server to hand itself over to the process
	// that sends it (serve --takeover); see Handoverer.
	CmdTakeover = "takeover"
)

// Request is one decoded command.
type Request struct {
	Cmd string `json:"cmd"`
	// Up is set-link's argument.
	Up *bool `json:"up,omitempty"`
	// ID, when given, is echoed in the reply; a number or a string.
	ID json.RawMessage `json:"id,omitempty"`
	// Config, Netdev and Version are takeover's arguments.
	Config  json.RawMessage `json:"config,omitempty"`
	Netdev  string          `json:"netdev,omitempty"`
	Version *int            `json:"version,omitempty"`

	takeoverConfig model.Source
}

// DecodeRequest decodes one request line: a JSON object with a known "cmd",
// the arguments that command needs and no others, an optional "id", at
// most MaxRequest bytes. The returned Request carries the ID even on error
// when the line held a valid one, so the error reply can echo it.
func DecodeRequest(line []byte) (Request, error) {
	if len(line) > MaxRequest {
		return Request{}, fmt.Errorf("request longer than %d bytes", MaxRequest)
	}
	var req Request
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("bad request: %w", jsonError(err))
	}
	if _, err := d.Token(); err != io.EOF {
		return Request{}, errors.New("bad request: trailing data after the JSON object")
	}
	if len(req.ID) > 0 {
		switch req.ID[0] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			return Request{}, errors.New("bad request: id must be a number or a string")
		}
	}
	id := req.ID
	switch req.Cmd {
	case CmdQueryConfig, CmdQueryStats, CmdQueryStatus, CmdAnnounce:
		if req.Up != nil || req.Config != nil || req.Netdev != "" || req.Version != nil {
			return Request{ID: id}, fmt.Errorf("%s takes no arguments", req.Cmd)
		}
	case CmdSetLink:
		if req.Up == nil {
			return Request{ID: id}, errors.New(`set-link needs "up": true or false`)
		}
		if req.Config != nil || req.Netdev != "" || req.Version != nil {
			return Request{ID: id}, errors.New(`set-link takes only "up"`)
		}
	case CmdTakeover:
		if req.Up != nil || req.Config == nil || req.Netdev == "" || len(req.Netdev) > 16 || req.Version == nil {
			return Request{ID: id}, errors.New(`takeover needs "config" (the successor's query-config), "netdev" (its backend's kind) and "version" (the handover format)`)
		}
		src, err := model.DecodeSource(bytes.NewReader(req.Config))
		if err != nil {
			return Request{ID: id}, fmt.Errorf("takeover: config: %w", err)
		}
		req.takeoverConfig = src
	case "":
		return Request{ID: id}, errors.New(`bad request: no "cmd"`)
	default:
		if len(req.Cmd) > 64 {
			return Request{ID: id}, errors.New("unknown command")
		}
		return Request{ID: id}, fmt.Errorf("unknown command %q (known: %s, %s, %s, %s, %s, %s)",
			req.Cmd, CmdQueryConfig, CmdQueryStats, CmdSetLink, CmdQueryStatus, CmdAnnounce, CmdTakeover)
	}
	return req, nil
}

// jsonError shortens decoder errors that would otherwise mention Go types.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q has the wrong type", te.Field)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("empty request")
	}
	return err
}
