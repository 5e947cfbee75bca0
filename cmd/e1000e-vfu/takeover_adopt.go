package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device/model"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/handover"
	"e1000e-vfu/migration"
	"e1000e-vfu/vfiouser"
)

// adoptState builds the successor from a STATE frame and its descriptors,
// which it owns from the call on: decoded and checked as hostile input,
// the configuration compared again, the backend and the sockets taken
// over, the client adopted with its memory and interrupts, and the device
// state loaded as a migration's is. Nothing runs yet (see server.run),
// and nothing is visible to the client, the guest or the network: on error
// everything is closed and the predecessor serves on.
func adoptState(cfg *Config, body []byte, fds []int, log *slog.Logger) (_ *server, err error) {
	defer func() { closeInts(fds) }()
	st, err := handover.DecodeState(body)
	if err != nil {
		return nil, err
	}
	if len(fds) != len(st.FDs) {
		return nil, fmt.Errorf("%d descriptors received, the state describes %d", len(fds), len(st.FDs))
	}
	old, err := model.DecodeSource(bytes.NewReader(st.Config))
	if err != nil {
		return nil, fmt.Errorf("the predecessor's configuration: %w", err)
	}
	if probs := model.Compare(old, ownSource(cfg)); len(probs) > 0 {
		return nil, fmt.Errorf("incompatible with the predecessor: %s", model.Join(probs))
	}
	if k := kindName(cfg.Netdev.Type); st.Netdev.Kind != k {
		return nil, fmt.Errorf("the predecessor's backend is %s, this server's %s", st.Netdev.Kind, k)
	}
	if n := cfg.Netdev.TAP.Name; cfg.Netdev.Type == "tap" && n != "" && n != st.Netdev.IfName {
		return nil, fmt.Errorf("the predecessor's TAP is %s, this server's %s", st.Netdev.IfName, n)
	}
	// take hands descriptor i over to whoever uses it.
	take := func(i int) int {
		if i < 0 {
			return -1 // the decoder requires what is taken this way
		}
		fd := fds[i]
		fds[i] = -1
		return fd
	}
	find := func(r handover.Role) int {
		for i, f := range st.FDs {
			if f.Role == r {
				return i
			}
		}
		return -1
	}

	s := &server{log: log}
	defer func() {
		if err != nil {
			s.discard()
		}
	}()
	switch st.Netdev.Kind {
	case "tap":
		t, err := netdev.TAPFromFD(take(find(handover.RoleBackend)), st.Netdev.IfName, log.With("part", "netdev"))
		if err != nil {
			return nil, err
		}
		s.backend = t
	case "dgram":
		d, err := netdev.DgramFromFD(take(find(handover.RoleBackend)), cfg.Netdev.Dgram, log.With("part", "netdev"))
		if err != nil {
			return nil, err
		}
		s.backend = d
	default:
		s.backend = netdev.None{}
	}
	// The capture, if any, goes on in the predecessor's file.
	if i := find(handover.RolePcap); i >= 0 {
		p, err := netdev.PcapFromFD(s.backend, take(i), log.With("part", "pcap"))
		if err != nil {
			return nil, err
		}
		s.backend = p
	}
	if err := s.buildDevice(*cfg); err != nil {
		return nil, err
	}
	// Quiesced until the predecessor commits: no DMA, no interrupt, and
	// the INTx unmask eventfd left to the predecessor, which may yet
	// resume.
	s.nic.Quiesce()
	s.nic.HoldINTxUnmask()

	lfd := take(find(handover.RoleListener))
	path, err := socketName(lfd)
	if err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("the vfio-user listener: %w", err)
	}
	if path, err = boundPath(path, cfg.Socket); err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("the vfio-user listener: %w", err)
	}
	cfg.Socket = path
	if s.ln, err = vfiouser.ListenerFromFD(lfd, ""); err != nil {
		return nil, err
	}
	s.ln.SetUnlinkOnClose(false) // until the predecessor commits
	if i := find(handover.RoleControl); i >= 0 {
		if s.ctlLn, err = unixListenerFromFD(take(i), cfg.Control); err != nil {
			return nil, fmt.Errorf("the control listener: %w", err)
		}
	}

	if i := find(handover.RoleConn); i >= 0 {
		a := vfiouser.Adopted{FD: take(i), Proto: st.Proto, Maps: st.Maps, Files: map[uint32]int{},
			Unmask: -1, INTxMasked: st.INTxMasked}
		for j, f := range st.FDs {
			switch f.Role {
			case handover.RoleDMAFile:
				a.Files[f.A] = take(j)
			case handover.RoleIRQ:
				a.IRQs = append(a.IRQs, vfiouser.IRQFD{Index: f.A, Vector: f.B, FD: take(j)})
			case handover.RoleUnmask:
				a.Unmask = take(j)
			case handover.RoleBufferedFDs:
				a.Buffered = append(a.Buffered, vfiouser.BufferedFD{Offset: f.A, FD: take(j)})
			}
		}
		if s.adopted, err = s.vfu.Adopt(a); err != nil {
			return nil, err
		}
	}
	// The same checks as a migration's load, in the same order; a refused
	// state leaves the NIC as it was built.
	if err := migration.Load(st.Device, s.nic, migration.Limits{}, log.With("part", "migration")); err != nil {
		return nil, fmt.Errorf("loading the device state: %w", err)
	}
	s.loaded = st.Device
	return s, nil
}

// run starts what a takeover built, once the predecessor has let go: the
// NIC resumes (held interrupts are sent), the backend delivers, the
// client is served, and the socket files are ours to remove at shutdown.
func (s *server) run() {
	s.ln.SetUnlinkOnClose(true)
	if s.ctlLn != nil {
		s.ctlLn.SetUnlinkOnClose(true)
	}
	if u, ok := s.backend.(interface{ SetUnlinkOnClose(bool) }); ok {
		u.SetUnlinkOnClose(true)
	}
	s.nic.ResumeInPlace()
	s.nic.ResumeINTxUnmask()
	if err := s.backend.Start(s.nic); err != nil {
		s.log.Error("starting the backend after the takeover", "err", err)
	}
	if s.adopted != nil {
		s.vfu.ServeAdopted(s.adopted)
	}
}

// discard drops what a takeover built, leaving the sockets, the client
// and the network to the predecessor: nothing is shut down or unlinked.
func (s *server) discard() {
	if s.adopted != nil {
		s.adopted.Discard()
		s.adopted = nil
	}
	if s.ln != nil {
		s.ln.Detach()
	}
	if s.ctlLn != nil {
		s.ctlLn.SetUnlinkOnClose(false)
		s.ctlLn.Close()
	}
	s.closeDevice()
}

// socketName is the path a UNIX socket is bound to.
func socketName(fd int) (string, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", fmt.Errorf("getsockname: %w", err)
	}
	ua, ok := sa.(*unix.SockaddrUnix)
	if !ok || ua.Name == "" {
		return "", errors.New("not a named UNIX socket")
	}
	return ua.Name, nil
}

// boundPath checks a handed-over socket's bound name against want (this
// server's own option, empty for none) and returns the socket's absolute
// path. A relative name was resolved in the predecessor's directory,
// which need not be ours: it is taken only when want names the same file.
func boundPath(name, want string) (string, error) {
	if want != "" && !sameSocket(want, name) {
		return "", fmt.Errorf("bound to %s, not %s", name, want)
	}
	if !filepath.IsAbs(name) {
		if want == "" {
			return "", fmt.Errorf("bound to the relative name %s; name the socket with its option", name)
		}
		name = want
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return "", fmt.Errorf("socket %s: %w", name, err)
	}
	return abs, nil
}

// sameSocket says whether two paths name one socket file.
func sameSocket(a, b string) bool {
	if samePath(a, b) {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// unixListenerFromFD serves a handed-over listening socket bound to path,
// leaving the file in place on Close until run says otherwise. It owns fd.
func unixListenerFromFD(fd int, path string) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	if err := vfiouser.CheckListening(fd, ""); err != nil {
		return nil, err
	}
	name, err := socketName(fd)
	if err != nil {
		return nil, err
	}
	if _, err := boundPath(name, path); err != nil {
		return nil, err
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New("not a UNIX listener")
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}
