package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device/announce"
	"e1000e-vfu/device/model"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/vfiouser"
)

// shutdownTimeout bounds the whole shutdown: dropping the client, stopping
// the backend and the control socket. A part that hangs past it (a backend
// stuck in a system call, say) turns the exit into a failure rather than a
// process that never ends.
const shutdownTimeout = 5 * time.Second

// run serves the device described by cfg until ctx is cancelled (SIGINT or
// SIGTERM) or serving fails. It is where the server, the NIC, the backend
// and the control socket are put together.
func run(ctx context.Context, cfg Config) error {
	logw := cfg.Log
	if logw == nil {
		logw = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: cfg.LogLevel}))
	var s *server
	var err error
	if cfg.Takeover != "" {
		// A takeover fills in what the predecessor decides (socket,
		// MAC) before the startup line.
		s, err = takeOver(ctx, &cfg, log)
	} else {
		s, err = start(cfg, log)
	}
	if err != nil {
		return err
	}
	log.Info("serving", s.startAttrs(cfg)...)
	s.cfg = cfg
	s.handedOver = make(chan struct{})

	serveDone := make(chan error, 1)
	go func() { serveDone <- s.vfu.Serve(s.ln) }()

	ctlCtx, ctlCancel := context.WithCancel(context.Background())
	defer ctlCancel()
	ctlDone := make(chan error, 1)
	if s.ctlLn != nil {
		srv := &control.Server{Target: &handoverTarget{nicTarget: s.target, s: s}, Logger: log.With("part", "control")}
		go func() { ctlDone <- srv.Serve(ctlCtx, s.ctlLn) }()
	}

	var failure error
	// Each pass handles one event; the control socket ends at most once.
	for failure == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-s.handedOver:
			// The successor serves everything now; shutting down would
			// remove its socket files. The process's exit closes what
			// is left of ours.
			log.Info("stopped", "reason", "handed over to the successor")
			return nil
		case err := <-serveDone:
			serveDone = nil
			if s.isHandedOver() {
				log.Info("stopped", "reason", "handed over to the successor")
				return nil
			}
			if err == nil {
				err = errors.New("listener closed")
			}
			failure = fmt.Errorf("vfio-user socket %s: %w", cfg.Socket, err)
		case err := <-ctlDone:
			// The NIC matters more than its remote control: a guest keeps
			// its network when the control socket breaks.
			ctlDone = nil
			log.Error("control socket stopped; the device is still served", "path", cfg.Control, "err", err)
		}
	}
	// A takeover under way ends first: a signal that arrives as it
	// commits must not shut down what is the successor's now (shutdown
	// removes the socket files and hangs up on the client).
	s.takeoverMu.Lock()
	s.stopping = true
	s.takeoverMu.Unlock()
	if s.isHandedOver() {
		log.Info("stopped", "reason", "handed over to the successor")
		return nil
	}
	if failure != nil {
		log.Error("stopping", "err", failure)
	} else {
		log.Info("stopping", "reason", "signal")
	}

	if err := s.shutdown(serveDone, ctlCancel, ctlDone); err != nil {
		log.Error("shutdown", "err", err)
		return errors.Join(failure, err)
	}
	log.Info("stopped")
	return failure
}

// server is the running pieces, in the order start builds them.
type server struct {
	log     *slog.Logger
	backend netdev.Backend
	nic     *e1000e.NIC
	dev     *e1000e.Migratable // the NIC as served: with its migration state machine
	watch   *clientWatch
	target  *nicTarget
	ctlLn   *net.UnixListener // nil without --control
	vfu     *vfiouser.Server
	ln      *vfiouser.Listener

	cfg Config
	// adopted is the client a takeover brought, served once it commits;
	// loaded is the device state it loaded.
	adopted *vfiouser.Conn
	loaded  []byte
	// handedOver is closed once a successor has taken over (takeover.go).
	handedOver chan struct{}
	takeoverMu sync.Mutex // one takeover at a time
	stopping   bool       // shutdown has begun: no takeover; guarded by takeoverMu
}

// isHandedOver reports whether a successor has taken over.
func (s *server) isHandedOver() bool {
	select {
	case <-s.handedOver:
		return true
	default:
		return false
	}
}

// start builds everything, the vfio-user socket last: QEMU may connect the
// moment the socket exists, and by then the NIC is ready. On error,
// whatever was built is released again.
func start(cfg Config, log *slog.Logger) (_ *server, err error) {
	s := &server{log: log}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	b, err := netdev.Open(cfg.Netdev, log.With("part", "netdev"))
	if err != nil {
		return nil, fmt.Errorf("--netdev %s: %w", cfg.NetdevSpec, err)
	}
	s.backend = b
	if cfg.PCAP != "" {
		p, err := netdev.OpenPcap(s.backend, cfg.PCAP, log.With("part", "pcap"))
		if err != nil {
			return nil, fmt.Errorf("--pcap %s: %w", cfg.PCAP, err)
		}
		s.backend = p
	}
	if err := s.buildDevice(cfg); err != nil {
		return nil, err
	}
	nic := s.nic

	if err := s.backend.Start(nic); err != nil {
		return nil, fmt.Errorf("--netdev %s: starting: %w", cfg.NetdevSpec, err)
	}

	if cfg.Control != "" {
		ln, err := control.Listen(cfg.Control)
		if err != nil {
			return nil, fmt.Errorf("--control: %w", err)
		}
		s.ctlLn = ln
	}

	ln, err := vfiouser.Listen(cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("--socket: %w", err)
	}
	s.ln = ln
	return s, nil
}

// buildDevice makes the NIC for cfg on s.backend, serves it for migration
// and makes the vfio-user server for it: what start and a takeover share.
func (s *server) buildDevice(cfg Config) error {
	log := s.log
	if cfg.Device.Model == nil || cfg.Device.Model.Name != model.E1000EName {
		return errors.New("the device configuration is not one of the e1000e model")
	}
	var missing []string
	param := func(name string) model.Value {
		v, ok := cfg.Device.Value(name)
		if !ok {
			missing = append(missing, name)
		}
		return v
	}
	filterSize, hide, caps := param(model.RXFilterSize), param(model.HideMSIX), param(model.Caps82574L)
	if len(missing) > 0 {
		return fmt.Errorf("device model %s has no %s parameter", cfg.Device.Model.Name, strings.Join(missing, ", "))
	}
	nic, err := e1000e.New(e1000e.Config{
		MAC:          cfg.MAC,
		Backend:      s.backend,
		Logger:       log.With("part", "e1000e"),
		RXFilterSize: int(filterSize.Int),
		HideMSIX:     hide.Bool,
		Caps82574L:   caps.Bool,
		Announce:     &cfg.Announce,
	})
	if err != nil {
		return fmt.Errorf("building the NIC: %w", err)
	}
	s.nic = nic
	// Migration v2 is always offered: it costs nothing until a client
	// asks, and a VM whose device cannot migrate cannot be moved off a host.
	// The P2P states are offered unless turned off: QEMU refuses to
	// migrate a guest with two VFIO devices unless all of them have them.
	dev, err := e1000e.NewMigratable(nic, e1000e.MigrationOptions{
		Logger: log.With("part", "migration"),
		V1:     cfg.MigrationV1 != "off",
		V1MMap: cfg.MigrationV1 == "mmap",
		P2P:    cfg.MigrationP2P != "off",
	})
	if err != nil {
		return fmt.Errorf("serving the NIC for migration: %w", err)
	}
	s.dev = dev
	s.watch = newClientWatch(dev, log)
	s.target = &nicTarget{nic: nic, cfg: cfg.Device, watch: s.watch}
	// Guest memory backed by files other than shared memory only when
	// asked (--dma-fd any): see vfiouser's checkDMAFile.
	s.vfu = vfiouser.NewServer(s.watch.served(), vfiouser.Options{Logger: log,
		DMALimits: vfiouser.DMALimits{AnyFile: cfg.DMAFD == "any"}})
	s.target.vfu = s.vfu
	return nil
}

// startAttrs is the startup line: where the device is served, its
// address, its backend and its model configuration.
func (s *server) startAttrs(cfg Config) []any {
	params := make([]string, 0, len(cfg.Device.Values))
	for _, a := range cfg.Device.Effective() {
		params = append(params, a.String())
	}
	attrs := []any{
		"socket", cfg.Socket,
		"mac", cfg.MAC.String(),
		"netdev", cfg.NetdevSpec,
		"model", cfg.Device.Model.Name,
		"version", cfg.Device.Version,
		"params", strings.Join(params, ","),
	}
	if cfg.PCAP != "" {
		attrs = append(attrs, "pcap", cfg.PCAP)
	}
	if cfg.Control != "" {
		attrs = append(attrs, "control", cfg.Control)
	}
	if cfg.MigrationV1 != "" && cfg.MigrationV1 != "off" {
		attrs = append(attrs, "migration-v1", cfg.MigrationV1)
	}
	// Only the departure from the default is worth a word.
	if cfg.MigrationP2P == "off" {
		attrs = append(attrs, "migration-p2p", "off")
	}
	if cfg.Announce != announce.Default() {
		attrs = append(attrs, "announce", cfg.Announce.String())
	}
	if cfg.DMAFD == "any" {
		attrs = append(attrs, "dma-fd", "any")
	}
	return attrs
}

// shutdown stops serving in an order that lets each part finish with the
// next one still there: no new client (the socket file goes), the current
// client dropped and the device disconnected from its memory, the control
// socket closed, then the backend (no more frames) and the NIC (no more
// timers, the v1 region). serveDone and ctlDone are nil once already received.
func (s *server) shutdown(serveDone <-chan error, ctlCancel context.CancelFunc, ctlDone <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var errs []error
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("closing the vfio-user socket: %w", err))
		}
		if serveDone != nil {
			// Serve returns once its accept fails, so no client can
			// arrive after the one dropped below.
			select {
			case <-serveDone:
			case <-ctx.Done():
			}
		}
		s.vfu.Close()
		if err := s.watch.waitIdle(ctx); err != nil {
			errs = append(errs, fmt.Errorf("waiting for the client to be dropped: %w", err))
		}
		ctlCancel()
		if s.ctlLn != nil && ctlDone != nil {
			select {
			case err := <-ctlDone:
				if err != nil {
					errs = append(errs, err)
				}
			case <-ctx.Done():
				errs = append(errs, errors.New("control socket: connections still open"))
			}
		}
		if err := s.backend.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the backend: %w", err))
		}
		s.dev.Close()
		done <- errors.Join(errs...)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("not finished within %v", shutdownTimeout)
	}
}

// release undoes a partial start.
func (s *server) release() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.ctlLn != nil {
		s.ctlLn.Close()
	}
	s.closeDevice()
}

// closeDevice closes the backend and the NIC (served for migration or
// not), whichever a start got to.
func (s *server) closeDevice() {
	if s.backend != nil {
		if err := s.backend.Close(); err != nil {
			s.log.Warn("closing the backend", "err", err)
		}
	}
	switch {
	case s.dev != nil:
		s.dev.Close()
	case s.nic != nil:
		s.nic.Close()
	}
}
