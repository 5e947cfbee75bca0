package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/control"
	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/vfiouser"
)

// run in process: cancelling its context with a client connected drops
// the client, removes the socket and returns nil within the shutdown bound.
func TestRunStopsOnCancel(t *testing.T) {
	r := startInProc(t, "", "--version", "1")
	sock, ctl, logs := r.sock, r.ctl, r.logs
	g := connect(t, sock, 10*time.Second)
	g.checkIdentity()
	g.setup()
	if !strings.Contains(logs.String(), `params="caps-82574l=false,hide-msix=false,rx-filter-size=0"`) {
		t.Errorf("version 1's parameters not in the startup line:\n%s", logs)
	}

	r.stop()
	gone(t, sock)
	gone(t, ctl)
	if err := g.c.Reset(); err == nil {
		t.Error("the client is still served after run returned")
	}
	for _, want := range []string{"msg=stopping reason=signal", "msg=stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// A start failure returns an error naming the part, and nothing is left.
func TestRunStartFailure(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "vfu.sock")
	e := env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	cfg, err := parseServe(e, []string{"--socket", sock, "--pcap", dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = io.Discard
	err = run(context.Background(), cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "--pcap "+dir+": ") {
		t.Fatalf("run with a directory as pcap file: %v", err)
	}
	gone(t, sock)
}

// run checks the configuration it is handed rather than trusting it.
func TestRunRefusesAnUnresolvedConfig(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vfu.sock")
	err := run(context.Background(), Config{Socket: sock, Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "e1000e model") {
		t.Fatalf("run without a device configuration: %v", err)
	}
	gone(t, sock)
}

// A destination started with --config takes the source's MAC from it: the
// startup line and query-config show the source's address, not the one
// derived from the destination's socket path.
func TestRunConfigAppliesTheSourceMAC(t *testing.T) {
	const src = `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1,"mac":"02:e1:0e:aa:bb:cc"}`
	r := startInProc(t, src, "--config", "-")
	sock, ctl, logs := r.sock, r.ctl, r.logs
	g := connect(t, sock, 10*time.Second)
	g.close()
	if !strings.Contains(logs.String(), "mac=02:e1:0e:aa:bb:cc") {
		t.Errorf("the startup line does not show the source's MAC:\n%s", logs)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer qcancel()
	res, err := control.Call(qctx, ctl, control.Request{Cmd: control.CmdQueryConfig})
	if err != nil {
		t.Fatal(err)
	}
	// The destination now announces exactly the source's configuration.
	if string(res) != src {
		t.Errorf("query-config %s, want %s", res, src)
	}
	r.stop()
}

// inProc is serve's run in this process, with a control socket.
type inProc struct {
	sock, ctl string
	logs      *logBuf
	cancel    context.CancelFunc
	done      chan error
	t         *testing.T
}

// startInProc parses serve's flags (with stdin) beside a fresh socket and
// control socket, and runs the server until stop or the test's end. The
// test fails if the server logged a recovered panic.
func startInProc(t *testing.T, stdin string, args ...string) *inProc {
	t.Helper()
	dir := t.TempDir()
	r := &inProc{sock: filepath.Join(dir, "vfu.sock"), ctl: filepath.Join(dir, "ctl.sock"), logs: &logBuf{}, done: make(chan error, 1), t: t}
	e := env{stdin: strings.NewReader(stdin), stdout: io.Discard, stderr: io.Discard}
	cfg, err := parseServe(e, append([]string{"--socket", r.sock, "--control", r.ctl}, args...))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = r.logs
	var ctx context.Context
	ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		r.cancel()
		panictest.CheckLog(t, "serve", r.logs.String())
	})
	go func() { r.done <- run(ctx, cfg) }()
	return r
}

// stop cancels run and fails the test unless it returns nil in time.
func (r *inProc) stop() {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Fatalf("run: %v", err)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		r.t.Fatal("run did not return after cancel")
	}
}

// --mac beside a --config that carries a MAC must agree with it; a config
// without one keeps --mac, or the derived address.
func TestServeConfigMAC(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vfu.sock")
	const withMAC = `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"mac":"02:e1:0e:aa:bb:cc"}`
	const without = `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{}}`
	for _, tc := range []struct {
		name, config, mac, want, wantErr string
	}{
		{"config's mac", withMAC, "", "02:e1:0e:aa:bb:cc", ""},
		{"the same mac twice", withMAC, "02:E1:0E:AA:BB:CC", "02:e1:0e:aa:bb:cc", ""},
		{"no mac in the config, --mac", without, "52:54:00:00:00:01", "52:54:00:00:00:01", ""},
		{"no mac at all", without, "", defaultMAC(sock).String(), ""},
		{"different", withMAC, "52:54:00:00:00:01", "",
			"--mac 52:54:00:00:00:01 differs from the mac 02:e1:0e:aa:bb:cc in --config"},
	} {
		args := []string{"--socket", sock, "--config", tc.config}
		if tc.mac != "" {
			args = append(args, "--mac", tc.mac)
		}
		cfg, err := parseServe(env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}, args)
		var ue *usageError
		switch {
		case tc.wantErr != "":
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want a usage error %q", tc.name, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case cfg.MAC.String() != tc.want:
			t.Errorf("%s: MAC %s, want %s", tc.name, cfg.MAC, tc.want)
		}
	}
}

// --dma-fd: by default guest memory backed by a file on a disk filesystem
// is refused (EPERM, and the log says what would allow it); with --dma-fd
// any it is mapped. A memfd is taken either way.
func TestRunDMAFD(t *testing.T) {
	// The test binary is a file on the disk the build runs from.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	disk, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(disk.Fd()), &fs); err != nil {
		t.Fatal(err)
	}
	if typ := uint32(fs.Type); typ == unix.TMPFS_MAGIC || typ == unix.HUGETLBFS_MAGIC {
		t.Fatalf("the test binary %s is on shared memory (filesystem %#x): this test needs it on a disk", exe, typ)
	}
	m := make([]byte, vfiouser.DMAMapSize)
	vfiouser.DMAMap{Argsz: vfiouser.DMAMapSize, Flags: vfiouser.DMAFlagRead, Addr: 1 << 32, Size: vfiouser.DMAPageSize}.Encode(m)
	for _, tc := range []struct {
		args []string
		ok   bool
	}{{nil, false}, {[]string{"--dma-fd", "any"}, true}} {
		r := startInProc(t, "", tc.args...)
		g := connect(t, r.sock, 10*time.Second)
		g.mapMemory()
		_, err := g.c.Call(vfiouser.CmdDMAMap, m, []int{int(disk.Fd())})
		var re *vfiouser.ReplyError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%v: disk file refused: %v", tc.args, err)
		case !tc.ok && (!errors.As(err, &re) || re.Errno != syscall.EPERM):
			t.Errorf("%v: disk file: %v, want EPERM", tc.args, err)
		case !tc.ok && !strings.Contains(r.logs.String(), "--dma-fd any"):
			t.Errorf("%v: the refusal is not explained in the log:\n%s", tc.args, r.logs)
		}
		if got := strings.Contains(r.logs.String(), "dma-fd=any"); got != tc.ok {
			t.Errorf("%v: the startup line says dma-fd=any: %v, want %v", tc.args, got, tc.ok)
		}
		g.checkIdentity()
		g.close()
		r.stop()
	}
}
