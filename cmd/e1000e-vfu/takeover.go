package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/control"
	"e1000e-vfu/device"
	"e1000e-vfu/device/model"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/handover"
	"e1000e-vfu/migration"
	"e1000e-vfu/vfiouser"
)

// A live upgrade, as the two processes see it (migration/HANDOVER.md has
// the frames):
//
//	successor                              predecessor
//	query-config; compare (check's rules)
//	{"cmd":"takeover",config,netdev,...} → compare again; refuse a migration
//	                                       pause the client (between messages),
//	                                       quiesce the NIC, pause the backend
//	                                     ← {"ok":true,...}, STATE + descriptors
//	map, adopt, load (as a migration)
//	READY                                →
//	                                     ← COMMIT; let go and exit 0
//	resume the NIC, serve
//
// The predecessor keeps every descriptor until it sends COMMIT, so any
// failure before it (a refusal, a successor that dies or sends FAIL, a
// deadline) ends with the successor closing its copies and the
// predecessor resuming as it was: the guest sees a longer pause, nothing
// else.

// handoverTimeout bounds each wait of a handover for the other process.
const handoverTimeout = 10 * time.Second

// handoverTarget is the control socket's target: the NIC's, plus Handover.
type handoverTarget struct {
	*nicTarget
	s *server
}

var _ control.Handoverer = (*handoverTarget)(nil)

// errRefused marks a takeover refused before anything was passed.
var errRefused = errors.New("takeover refused")

// Handover is the predecessor's side.
func (t *handoverTarget) Handover(req control.TakeoverRequest, c *net.UnixConn, pending []byte) {
	s := t.s
	log := s.log.With("part", "takeover")
	if !s.takeoverMu.TryLock() {
		control.WriteReply(c, nil, fmt.Errorf("%w: another takeover is under way", errRefused))
		return
	}
	defer s.takeoverMu.Unlock()
	if s.isHandedOver() {
		control.WriteReply(c, nil, fmt.Errorf("%w: this server has handed over already", errRefused))
		return
	}
	if s.stopping {
		control.WriteReply(c, nil, fmt.Errorf("%w: this server is shutting down", errRefused))
		return
	}
	if err := t.compatible(req); err != nil {
		log.Warn("takeover refused", "err", err)
		control.WriteReply(c, nil, err)
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), handoverTimeout)
	defer cancel()
	x, err := s.export(ctx)
	if err != nil {
		log.Warn("takeover refused", "err", err)
		control.WriteReply(c, nil, fmt.Errorf("%w: %w", errRefused, err))
		return
	}
	defer x.closeOwn()
	defer func() {
		// A bug must not leave the guest's NIC paused: resume, then let
		// the control socket report the panic.
		if p := recover(); p != nil {
			x.resume()
			panic(p)
		}
	}()
	fail := func(msg string, err error) {
		x.resume()
		log.Error("takeover failed; serving on", "step", msg, "err", err, "paused", time.Since(start))
	}
	c.SetDeadline(time.Now().Add(handoverTimeout))
	if err := control.WriteReply(c, map[string]int{"handover": handover.Version, "descriptors": len(x.fds)}, nil); err != nil {
		fail("reply", err)
		return
	}
	peer := handover.NewPeer(c, pending)
	defer peer.Close()
	if err := peer.SendFrame(handover.KindState, x.body, x.fds); err != nil {
		fail("sending the state", err)
		return
	}
	// The successor's whole load has this long.
	c.SetDeadline(time.Now().Add(handoverTimeout))
	h, body, fds, err := peer.ReadFrame()
	closeInts(fds) // a successor sends none
	if err == nil && h.Kind != handover.KindReady {
		reason := fmt.Sprintf("frame kind %d", h.Kind)
		if h.Kind == handover.KindFail {
			reason, _ = handover.DecodeReason(body)
		}
		err = fmt.Errorf("the successor failed: %s", reason)
	}
	if err != nil {
		// A successor still listening learns it is to give up.
		peer.SendFrame(handover.KindAbort, nil, nil)
		fail("waiting for the successor", err)
		return
	}
	if err := peer.SendFrame(handover.KindCommit, nil, nil); err != nil {
		fail("committing", err)
		return
	}
	// Committed: nothing may resume now, not even the panic handler.
	x.undo = nil
	// From here the successor runs: nothing of ours may touch the
	// client, the network or the socket files again.
	s.ln.SetUnlinkOnClose(false)
	if s.ctlLn != nil {
		s.ctlLn.SetUnlinkOnClose(false)
	}
	log.Info("handed over", "paused", time.Since(start), "state_bytes", len(x.state), "descriptors", len(x.fds))
	close(s.handedOver)
	s.ln.Close()
	// Serve, held since the export, finds the listener closed and ends;
	// the backlog is the successor's.
	s.vfu.ResumeAccepts()
	if x.conn != nil {
		x.conn.Release()
	}
}

// errTakeoverUnderWay refuses a command that changes the device while a
// takeover runs: the state the successor loads has been taken, and a
// change made now would be answered and then lost.
var errTakeoverUnderWay = errors.New("takeover under way; try again once it has ended")

// changing takes the takeover lock for a command that changes the device,
// refusing it during a takeover and once handed over (this process is
// about to exit; the successor serves the control socket).
func (s *server) changing() (unlock func(), err error) {
	if !s.takeoverMu.TryLock() {
		return nil, errTakeoverUnderWay
	}
	if s.isHandedOver() {
		s.takeoverMu.Unlock()
		return nil, errors.New("this server has handed over to its successor")
	}
	if s.stopping {
		s.takeoverMu.Unlock()
		return nil, errors.New("this server is shutting down")
	}
	return s.takeoverMu.Unlock, nil
}

// SetLink is the NIC's, but not during a takeover (see changing).
func (t *handoverTarget) SetLink(up bool) error {
	unlock, err := t.s.changing()
	if err != nil {
		return err
	}
	defer unlock()
	return t.nicTarget.SetLink(up)
}

// Announce is the NIC's, but not during a takeover: its frames would go
// through a paused backend, and its schedule would not carry over.
func (t *handoverTarget) Announce() (control.AnnounceResult, error) {
	unlock, err := t.s.changing()
	if err != nil {
		return control.AnnounceResult{}, err
	}
	defer unlock()
	return t.nicTarget.Announce()
}

// compatible checks a successor's request with check's rules: model,
// parameters and MAC, then its backend's kind and the format version.
func (t *handoverTarget) compatible(req control.TakeoverRequest) error {
	if req.Version != handover.Version {
		return fmt.Errorf("%w: the successor reads handover format %d, this server writes %d", errRefused, req.Version, handover.Version)
	}
	src := t.cfg.Source()
	src.MAC = t.nic.MAC()
	probs := model.Compare(src, req.Config)
	if kind := t.s.cfg.Netdev.Type; kind != req.Netdev && !(kind == "" && req.Netdev == "none") {
		probs = append(probs, model.Problem{Param: "netdev", Msg: fmt.Sprintf("netdev: this server has %s, the successor %s", kindName(kind), req.Netdev)})
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: incompatible successor: %s", errRefused, model.Join(probs))
	}
	return nil
}

func kindName(k string) string {
	if k == "" {
		return "none"
	}
	return k
}

// exported is a paused server's handover: the STATE body, the
// descriptors it passes (some borrowed, some duplicated for it), and how
// to undo the pause.
type exported struct {
	body  []byte
	state []byte
	fds   []int
	own   []int // the duplicates among fds, closed once sent
	conn  *vfiouser.Handoff
	undo  []func()
}

func (x *exported) closeOwn() { closeInts(x.own); x.own = nil }

// resume undoes the pause in reverse order: the backend, the NIC, the
// client.
func (x *exported) resume() {
	for i := len(x.undo) - 1; i >= 0; i-- {
		x.undo[i]()
	}
	x.undo = nil
}

// export pauses the client between messages, quiesces the NIC and pauses
// the backend, then describes everything. What cannot be handed over is
// refused before anything stops, or undone.
func (s *server) export(ctx context.Context) (_ *exported, err error) {
	if st := s.dev.MigrationState(); st != device.MigRunning {
		return nil, fmt.Errorf("a migration is under way (state %s); take over once it has ended", st)
	}
	hb, ok := s.backend.(netdev.Handoverable)
	if kind, _, _ := netdev.HandoverKind(s.backend); !ok || kind == "" {
		return nil, fmt.Errorf("the backend (--netdev %s) cannot be handed over; only none, tap and dgram can", s.cfg.NetdevSpec)
	}
	if s.cfg.MigrationV1 == "mmap" {
		return nil, errors.New("--migration-v1 mmap: the client may have mapped the v1 data area, which cannot be handed over")
	}
	x := &exported{}
	defer func() {
		// A panic is a bug, and Handover's caller counts and logs it;
		// it must not leave the guest's NIC paused on its way there.
		p := recover()
		if err != nil || p != nil {
			x.resume()
			x.closeOwn()
		}
		if p != nil {
			panic(p)
		}
	}()
	// Clients that connect from now on wait in the backlog: for the
	// successor, or for this server if it resumes.
	if err := s.vfu.HoldAccepts(ctx); err != nil {
		return nil, err
	}
	x.undo = append(x.undo, s.vfu.ResumeAccepts)
	if x.conn, err = s.vfu.Pause(ctx); err != nil {
		return nil, err
	}
	if x.conn != nil {
		x.undo = append(x.undo, x.conn.Resume)
	}
	s.nic.Quiesce()
	x.undo = append(x.undo, s.nic.ResumeInPlace)
	// An unmask the client signals from now on is the successor's to
	// read: INTxMasked, sampled below, is then the state it starts from.
	s.nic.HoldINTxUnmask()
	x.undo = append(x.undo, s.nic.ResumeINTxUnmask)
	if err := hb.Pause(ctx); err != nil {
		return nil, err
	}
	x.undo = append(x.undo, hb.Resume)
	// The message in hand may have started a migration.
	if st := s.dev.MigrationState(); st != device.MigRunning {
		return nil, fmt.Errorf("a migration is under way (state %s); take over once it has ended", st)
	}

	st := &handover.State{}
	src := s.target.cfg.Source()
	src.MAC = s.nic.MAC()
	if st.Config, err = json.Marshal(src); err != nil {
		return nil, err
	}
	if st.Device, err = migration.Save(nil, s.nic, migration.Limits{}); err != nil {
		return nil, err
	}
	x.state = st.Device
	add := func(fd int, r handover.Role, a, b uint32) {
		x.fds = append(x.fds, fd)
		st.FDs = append(st.FDs, handover.FD{Role: r, A: a, B: b})
	}
	// The listeners are duplicated (ours to close once sent), never
	// through os.File: see vfiouser.Listener.DupFD.
	lfd, err := s.ln.DupFD()
	if err != nil {
		return nil, fmt.Errorf("the vfio-user listener: %w", err)
	}
	x.own = append(x.own, lfd)
	add(lfd, handover.RoleListener, 0, 0)
	if s.ctlLn != nil {
		cfd, err := vfiouser.DupSocketFD(s.ctlLn)
		if err != nil {
			return nil, fmt.Errorf("the control listener: %w", err)
		}
		x.own = append(x.own, cfd)
		add(cfd, handover.RoleControl, 0, 0)
	}
	kind, ifname, bfd := hb.HandoverFD()
	st.Netdev = handover.Netdev{Kind: kind, IfName: ifname}
	if bfd >= 0 {
		add(bfd, handover.RoleBackend, 0, 0)
	}
	if p, ok := s.backend.(*netdev.Pcap); ok {
		add(p.FileFD(), handover.RolePcap, 0, 0)
	}
	if x.conn != nil {
		cx, err := x.conn.Export()
		if err != nil {
			return nil, err
		}
		add(cx.FD, handover.RoleConn, 0, 0)
		st.Proto, st.Maps = cx.Proto, cx.Maps
		for i, fd := range cx.Files {
			add(fd, handover.RoleDMAFile, uint32(i), 0)
		}
		for _, q := range cx.IRQs {
			add(q.FD, handover.RoleIRQ, q.Index, q.Vector)
		}
		if cx.Unmask >= 0 {
			add(cx.Unmask, handover.RoleUnmask, 0, 0)
		}
		for _, b := range cx.Buffered {
			add(b.FD, handover.RoleBufferedFDs, b.Offset, 0)
		}
		st.INTxMasked = s.nic.INTxMasked()
	}
	if x.body, err = handover.EncodeState(st); err != nil {
		return nil, err
	}
	return x, nil
}

func closeInts(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// ownSource is this server's configuration as a predecessor compares it
// by check's rules: the source list and the MAC.
func ownSource(cfg *Config) model.Source {
	mine := cfg.Device.Source()
	mine.MAC = cfg.MAC
	return mine
}

// takeOver is the successor's side: it returns a server that runs, or an
// error after which the predecessor runs on (exit status 1 when it was
// refused before anything was passed, 4 after).
func takeOver(ctx context.Context, cfg *Config, log *slog.Logger) (*server, error) {
	tlog := log.With("part", "takeover")
	cctx, cancel := context.WithTimeout(ctx, handoverTimeout)
	defer cancel()
	raw, err := control.Call(cctx, cfg.Takeover, control.Request{Cmd: control.CmdQueryConfig})
	if err != nil {
		return nil, fmt.Errorf("--takeover %s: %w", cfg.Takeover, err)
	}
	old, err := model.DecodeSource(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("--takeover %s: its query-config: %w", cfg.Takeover, err)
	}
	// Without --mac, the address is the predecessor's (not one derived
	// from the socket's path: the predecessor may have been given one).
	if !cfg.MACFixed {
		cfg.MAC = old.MAC
	}
	mine := ownSource(cfg)
	if probs := model.Compare(old, mine); len(probs) > 0 {
		return nil, &statusError{code: exitIncompatible, err: fmt.Errorf("incompatible with the server at %s: %s", cfg.Takeover, model.Join(probs))}
	}

	d := net.Dialer{}
	nc, err := d.DialContext(cctx, "unix", cfg.Takeover)
	if err != nil {
		return nil, fmt.Errorf("--takeover %s: %w", cfg.Takeover, err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(handoverTimeout))
	cj, err := json.Marshal(mine)
	if err != nil {
		return nil, err
	}
	kind := kindName(cfg.Netdev.Type)
	reqLine, err := json.Marshal(map[string]any{"cmd": control.CmdTakeover, "config": json.RawMessage(cj), "netdev": kind, "version": handover.Version})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(append(reqLine, '\n')); err != nil {
		return nil, fmt.Errorf("--takeover %s: %w", cfg.Takeover, err)
	}
	peer := handover.NewPeer(c, nil)
	defer peer.Close()
	line, err := peer.ReadLine(control.MaxReply)
	if err != nil {
		return nil, fmt.Errorf("--takeover %s: reading the reply: %w", cfg.Takeover, err)
	}
	var rep struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return nil, fmt.Errorf("--takeover %s: reply: %w", cfg.Takeover, err)
	}
	if !rep.OK {
		return nil, &statusError{code: exitIncompatible, err: fmt.Errorf("the server at %s refused: %s", cfg.Takeover, rep.Error)}
	}
	start := time.Now()
	h, body, fds, err := peer.ReadFrame()
	if err == nil && h.Kind != handover.KindState {
		err = fmt.Errorf("frame kind %d where STATE belongs", h.Kind)
	}
	var s *server
	if err == nil {
		s, err = adoptState(cfg, body, fds, log)
		fds = nil // adoptState owns them
	}
	closeInts(fds)
	if err != nil {
		peer.SendFrame(handover.KindFail, []byte(truncate(err.Error(), handover.MaxReason)), nil)
		tlog.Error("takeover failed; the predecessor serves on", "err", err)
		return nil, fmt.Errorf("takeover: %w", err)
	}
	c.SetDeadline(time.Now().Add(handoverTimeout))
	if err := peer.SendFrame(handover.KindReady, nil, nil); err != nil {
		s.discard()
		return nil, fmt.Errorf("takeover: %w", err)
	}
	h, _, fds, err = peer.ReadFrame()
	closeInts(fds)
	if err == nil && h.Kind != handover.KindCommit {
		err = fmt.Errorf("the predecessor did not commit (frame kind %d)", h.Kind)
	}
	if err != nil {
		s.discard()
		tlog.Error("takeover abandoned; the predecessor serves on", "err", err)
		return nil, fmt.Errorf("takeover: %w", err)
	}
	s.run()
	tlog.Info("took over", "handover", time.Since(start), "state_bytes", len(s.loaded))
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
