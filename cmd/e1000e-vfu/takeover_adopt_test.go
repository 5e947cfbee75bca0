package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device/netdev"
	"e1000e-vfu/handover"
	"e1000e-vfu/internal/leakcheck"
	"e1000e-vfu/migration"
)

// TestAdoptStateRefusals: a successor that refuses what it received, at
// every step from decoding to loading the device state, closes every
// descriptor it got and shuts nothing down: the predecessor's sockets
// keep their files and its client connection still carries bytes.
func TestAdoptStateRefusals(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "vfu.sock"), filepath.Join(dir, "vfu.ctl")
	const mac = "52:54:00:12:34:56"
	var stderr bytes.Buffer
	cfg, err := parseServe(env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr},
		[]string{"--takeover", ctl, "--mac", mac, "--netdev", "none"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Socket = sock
	log := slog.New(slog.DiscardHandler)

	// What a predecessor holds, and a device state of the right model.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cln, err := net.Listen("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer cln.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	s := &server{log: log, cfg: cfg}
	s.backend = netdev.None{}
	if err := s.buildDevice(cfg); err != nil {
		t.Fatal(err)
	}
	stream, err := migration.Save(nil, s.nic, migration.Limits{})
	s.dev.Close()
	if err != nil {
		t.Fatal(err)
	}
	lfile := func(l net.Listener) int {
		f, err := l.(*net.UnixListener).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	dupFD := func(fd int) int {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	memfd := func() int {
		fd, err := unix.MemfdCreate("not-an-eventfd", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	goodConfig := []byte(defaultSource(t, mac))
	state := func() (*handover.State, []int) {
		return &handover.State{
				Config: goodConfig, Netdev: handover.Netdev{Kind: "none"},
				Proto:  handover.Proto{Negotiated: true, MaxXfer: 1 << 20},
				FDs:    []handover.FD{{Role: handover.RoleListener}, {Role: handover.RoleControl}, {Role: handover.RoleConn}},
				Device: stream,
			},
			[]int{lfile(ln), lfile(cln), dupFD(pair[0])}
	}
	cases := map[string]func() ([]byte, []int){
		"garbage": func() ([]byte, []int) {
			_, fds := state()
			return []byte("not a state"), fds
		},
		"a descriptor missing": func() ([]byte, []int) {
			st, fds := state()
			b, _ := handover.EncodeState(st)
			unix.Close(fds[2])
			return b, fds[:2]
		},
		"another MAC": func() ([]byte, []int) {
			st, fds := state()
			st.Config = []byte(strings.Replace(string(goodConfig), mac, "52:54:00:00:00:01", 1))
			b, _ := handover.EncodeState(st)
			return b, fds
		},
		"a listener that is not one": func() ([]byte, []int) {
			st, fds := state()
			unix.Close(fds[0])
			fds[0] = memfd()
			b, _ := handover.EncodeState(st)
			return b, fds
		},
		"a control socket that does not listen": func() ([]byte, []int) {
			st, fds := state()
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "bound.sock")}); err != nil {
				t.Fatal(err)
			}
			unix.Close(fds[1])
			fds[1] = fd
			b, _ := handover.EncodeState(st)
			return b, fds
		},
		"a connection that is a listener": func() ([]byte, []int) {
			st, fds := state()
			unix.Close(fds[2])
			fds[2] = lfile(cln)
			b, _ := handover.EncodeState(st)
			return b, fds
		},
		"an interrupt that is no eventfd": func() ([]byte, []int) {
			st, fds := state()
			st.FDs = append(st.FDs, handover.FD{Role: handover.RoleIRQ, A: 2, B: 0})
			b, _ := handover.EncodeState(st)
			return b, append(fds, memfd())
		},
		"a device state refused": func() ([]byte, []int) {
			st, fds := state()
			bad := append([]byte(nil), stream...)
			bad[len(bad)-1] ^= 0xff // the stream's checksum
			st.Device = bad
			b, _ := handover.EncodeState(st)
			return b, fds
		},
	}
	// A unixgram backend, adopted before the device state is refused: its
	// socket file is still the predecessor's.
	gram := filepath.Join(dir, "gram.sock")
	gc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: gram, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	gcfg := cfg
	gcfg.Netdev = netdev.Config{Type: "dgram", Dgram: netdev.DgramConfig{Network: "unixgram", Local: gram, Remote: filepath.Join(dir, "peer.sock")}}
	cases["a unixgram backend and a device state refused"] = func() ([]byte, []int) {
		st, fds := state()
		bad := append([]byte(nil), stream...)
		bad[len(bad)-1] ^= 0xff
		st.Device = bad
		st.Netdev = handover.Netdev{Kind: "dgram"}
		st.FDs = append(st.FDs, handover.FD{Role: handover.RoleBackend})
		f, err := gc.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, _ := handover.EncodeState(st)
		return b, append(fds, dupFD(int(f.Fd())))
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			body, fds := mk()
			before := leakcheck.FDCount(t) - len(fds)
			c := cfg
			if strings.Contains(name, "unixgram") {
				c = gcfg
			}
			if _, err := adoptState(&c, body, fds, log); err == nil {
				t.Fatal("adopted")
			}
			if after := leakcheck.FDCount(t); after != before {
				t.Fatalf("descriptors: %d before the handover, %d after its refusal", before, after)
			}
			for _, p := range []string{sock, ctl, gram} {
				if _, err := os.Stat(p); err != nil {
					t.Fatalf("%s: %v", p, err)
				}
			}
			if _, err := unix.Write(pair[1], []byte("x")); err != nil {
				t.Fatalf("the client connection was shut down: %v", err)
			}
			var b [1]byte
			if n, err := unix.Read(pair[0], b[:]); n != 1 || err != nil {
				t.Fatalf("the client connection was shut down: %d %v", n, err)
			}
		})
	}
}

// panicHandover is a backend with a bug: handing its descriptor over
// panics, once the server is paused.
type panicHandover struct {
	netdev.None
	calls           int
	paused, resumed bool
}

func (b *panicHandover) Pause(context.Context) error { b.paused = true; return nil }
func (b *panicHandover) Resume()                     { b.resumed = true }
func (b *panicHandover) HandoverFD() (string, string, int) {
	// The first call is export's check, before anything is paused.
	if b.calls++; b.calls > 1 {
		panic("a bug in HandoverFD")
	}
	return "none", "", -1
}

// TestExportPanicResumes: a panic while the server is paused for a
// takeover resumes the NIC and the backend and closes the duplicated
// descriptors before it goes on to the control socket, which counts it.
func TestExportPanicResumes(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	cfg, err := parseServe(env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr},
		[]string{"--socket", filepath.Join(dir, "vfu.sock"), "--control", filepath.Join(dir, "vfu.ctl"), "--netdev", "none"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	s.cfg = cfg
	b := &panicHandover{}
	s.backend = b
	before := leakcheck.FDCount(t)
	func() {
		defer func() {
			if p := recover(); p == nil {
				t.Error("the panic was swallowed")
			}
		}()
		s.export(context.Background())
	}()
	if !b.paused || !b.resumed {
		t.Fatalf("backend paused %v, resumed %v", b.paused, b.resumed)
	}
	if s.nic.Quiesced() {
		t.Fatal("the NIC is left quiesced")
	}
	if after := leakcheck.FDCount(t); after != before {
		t.Fatalf("descriptors: %d before, %d after", before, after)
	}
}

// TestBoundPath: a handed-over socket's relative name (resolved in the
// predecessor's directory) is taken only when this server's option names
// the same file, and the path kept is absolute.
func TestBoundPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ln, err := net.Listen("unix", "rel.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	abs := filepath.Join(dir, "rel.sock")
	if _, err := boundPath("rel.sock", ""); err == nil {
		t.Fatal("a relative name taken without the option")
	}
	if _, err := boundPath("rel.sock", filepath.Join(dir, "other.sock")); err == nil {
		t.Fatal("a relative name taken for another file")
	}
	for _, want := range []string{abs, "rel.sock", "./rel.sock"} {
		got, err := boundPath("rel.sock", want)
		if err != nil || got != abs {
			t.Fatalf("option %s: %q %v, want %s", want, got, err, abs)
		}
	}
	if got, err := boundPath(abs, ""); err != nil || got != abs {
		t.Fatalf("an absolute name: %q %v", got, err)
	}
}
