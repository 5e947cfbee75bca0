// The hook's own tests: it runs as libvirt runs it (the domain's XML on
// stdin, name, operation and sub-operation as arguments) against the real
// program, with a server on a socket in a temporary directory and no
// network backend, so no root is needed. make test-libvirt runs it under
// two real libvirt daemons.
package libvirt_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var program string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "evfu-hook-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	program = filepath.Join(dir, "e1000e-vfu")
	if out, err := exec.Command("go", "build", "-o", program, "../../cmd/e1000e-vfu").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the program: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type hookEnv struct {
	dir, conf, socket, xml string
	env                    []string
}

// newHookEnv writes the hook's settings (conf is appended) and a domain
// with one NIC whose server listens in a temporary directory.
func newHookEnv(t *testing.T, conf string, nicArgs ...string) *hookEnv {
	t.Helper()
	// Short: the sockets' paths must fit a UNIX socket address.
	dir, err := os.MkdirTemp("", "evfu-h")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &hookEnv{dir: dir, conf: filepath.Join(dir, "hook.conf"), socket: filepath.Join(dir, "g-nic0.sock")}
	// The sockets stay the test's own unless a test hands them over.
	settings := fmt.Sprintf("E1000E_VFU=%s\nE1000E_VFU_RUN_DIR=%s/run\nE1000E_VFU_LOG_DIR=%s/log\nE1000E_VFU_SYSTEMD=no\nE1000E_VFU_QEMU_USER=none\nE1000E_VFU_SOCKET_DIR=%s\n%s",
		program, dir, dir, dir, conf)
	if err := os.WriteFile(h.conf, []byte(settings), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"libvirt-xml", "--socket", h.socket, "--socket-dir", dir, "--mac", "52:54:00:12:34:56"}, nicArgs...)
	blocks, err := exec.Command(program, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("libvirt-xml: %v\n%s", err, blocks)
	}
	h.xml = "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>g</name>" +
		"<uuid>8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a</uuid>" + string(blocks) + "</domain>"
	h.env = append(os.Environ(), "E1000E_VFU_HOOK_CONF="+h.conf)
	return h
}

// run runs the hook as libvirt does and returns its exit status and
// stderr. It must return promptly: libvirt waits for the hook's pipes to
// close, so a server that kept them would hang the guest's start.
func (h *hookEnv) run(t *testing.T, op, sub string, xml string) (int, string) {
	t.Helper()
	cmd := exec.Command("sh", "e1000e-vfu-hook", "g", op, sub, "-")
	cmd.Env = h.env
	cmd.Stdin = strings.NewReader(xml)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if out.Len() > 0 {
			t.Errorf("hook %s %s wrote to stdout (libvirt reads it as XML for migrate): %q", op, sub, out.String())
		}
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), errOut.String()
			}
			t.Fatal(err)
		}
		return 0, errOut.String()
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("hook %s %s did not return: a child holds its pipes", op, sub)
		return 0, ""
	}
}

// serverPid is the pid of the server serving socket, or 0.
func serverPid(socket string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, []byte("serve\x00--socket\x00"+socket+"\x00")) {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			return pid
		}
	}
	return 0
}

func TestHookStartsAndStopsTheServer(t *testing.T) {
	h := newHookEnv(t, "")
	if code, msg := h.run(t, "prepare", "begin", h.xml); code != 0 {
		t.Fatalf("prepare begin: exit %d: %s", code, msg)
	}
	// QEMU starts after prepare: the socket must be there by then.
	if fi, err := os.Stat(h.socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no socket after prepare begin: %v", err)
	}
	pid := serverPid(h.socket)
	if pid == 0 {
		t.Fatal("no server running")
	}
	t.Cleanup(func() {
		if p, _ := os.FindProcess(pid); p != nil {
			p.Kill()
		}
	})
	cfg, err := exec.Command(program, "control", "--socket", filepath.Join(h.dir, "g-nic0.ctl"), "query-config").CombinedOutput()
	if err != nil || !strings.Contains(string(cfg), `"mac":"52:54:00:12:34:56"`) || !strings.Contains(string(cfg), `"rx-filter-size":16`) {
		t.Errorf("the server's configuration: %v: %s", err, cfg)
	}
	// Another operation, or another domain, leaves it alone.
	h.run(t, "started", "begin", h.xml)
	if code, _ := h.run(t, "release", "end", "<domain><name>other</name></domain>"); code != 0 || serverPid(h.socket) != pid {
		t.Fatalf("a domain without our metadata touched the server (exit %d)", code)
	}
	if code, msg := h.run(t, "release", "end", h.xml); code != 0 {
		t.Fatalf("release end: exit %d: %s", code, msg)
	}
	if p := serverPid(h.socket); p != 0 {
		t.Errorf("server %d still running after release end", p)
	}
	if _, err := os.Stat(h.socket); err == nil {
		t.Error("socket left behind")
	}
	log, _ := os.ReadFile(filepath.Join(h.dir, "log", "g-nic0.log"))
	if !strings.Contains(string(log), "msg=serving") {
		t.Errorf("the server's log: %s", log)
	}
}

// The vfio-user socket goes to the user libvirt runs QEMU as, named by
// the setting or by libvirt's qemu.conf; a user that does not exist
// leaves it alone.
func TestHookHandsTheSocketToQEMUsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	qconf := filepath.Join(t.TempDir(), "qemu.conf")
	if err := os.WriteFile(qconf, []byte("# user = \"root\"\nuser = \"nobody\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, conf string
		uid        uint32
	}{
		{"setting", "E1000E_VFU_QEMU_USER=nobody\n", 65534},
		{"qemu.conf", "E1000E_VFU_QEMU_USER=\nE1000E_VFU_QEMU_CONF=" + qconf + "\n", 65534},
		{"absent user", "E1000E_VFU_QEMU_USER=evfu-no-such-user\n", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHookEnv(t, c.conf)
			if code, msg := h.run(t, "prepare", "begin", h.xml); code != 0 {
				t.Fatalf("prepare begin: exit %d: %s", code, msg)
			}
			defer h.run(t, "release", "end", h.xml)
			fi, err := os.Stat(h.socket)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != c.uid {
				t.Errorf("the socket's owner is %d, want %d", st.Uid, c.uid)
			}
		})
	}
}

// release stops what prepare started from prepare's record, whatever the
// program and the domain's XML have become since.
func TestHookReleasesWhatPrepareRecorded(t *testing.T) {
	h := newHookEnv(t, "")
	if code, msg := h.run(t, "prepare", "begin", h.xml); code != 0 {
		t.Fatalf("prepare begin: exit %d: %s", code, msg)
	}
	pid := serverPid(h.socket)
	if pid == 0 {
		t.Fatal("no server running")
	}
	t.Cleanup(func() {
		if p, _ := os.FindProcess(pid); serverPid(h.socket) == pid && p != nil {
			p.Kill()
		}
	})
	// The program gone, the metadata edited away.
	conf, _ := os.ReadFile(h.conf)
	os.WriteFile(h.conf, append(conf, "E1000E_VFU=/nonexistent/e1000e-vfu\n"...), 0o644)
	bare := "<domain type='qemu'>\n  <name>g</name>\n  <uuid>8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a</uuid>\n</domain>"
	if code, msg := h.run(t, "release", "end", bare); code != 0 {
		t.Fatalf("release end: exit %d: %s", code, msg)
	}
	if p := serverPid(h.socket); p != 0 {
		t.Errorf("server %d still running after release end", p)
	}
	for _, f := range []string{h.socket, filepath.Join(h.dir, "g-nic0.ctl"), filepath.Join(h.dir, "run", "8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a.nics")} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}

// The hook acts as root on what the metadata names: a path outside its
// socket directory or a netdev kind it does not allow fails every
// operation before anything is removed or made, and release removes
// sockets only.
func TestHookRefusesUntrustedMetadata(t *testing.T) {
	h := newHookEnv(t, "")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, xml := range map[string]string{
		"outside":   strings.Replace(h.xml, filepath.Join(h.dir, "g-nic0.ctl"), victim, 1),
		"unclean":   strings.Replace(h.xml, filepath.Join(h.dir, "g-nic0.ctl"), h.dir+"/.."+victim, 1),
		"stream":    strings.Replace(h.xml, "netdev='none'", "netdev='stream,path=/var/run/docker.sock'", 1),
		"dir moved": h.xml,
	} {
		env := h.env
		if name == "dir moved" {
			conf := filepath.Join(h.dir, "moved.conf")
			b, _ := os.ReadFile(h.conf)
			os.WriteFile(conf, append(b, "E1000E_VFU_SOCKET_DIR=/run/e1000e-vfu\n"...), 0o644)
			h.env = append(h.env, "E1000E_VFU_HOOK_CONF="+conf)
		}
		if xml == h.xml && name != "dir moved" {
			t.Fatalf("%s: the domain did not change", name)
		}
		for _, op := range [][2]string{{"prepare", "begin"}, {"release", "end"}} {
			if code, msg := h.run(t, op[0], op[1], xml); code != 1 || !strings.Contains(msg, "metadata is not valid") {
				t.Errorf("%s: %s %s: exit %d, %q; want a refusal", name, op[0], op[1], code, msg)
			}
		}
		h.env = env
		if b, err := os.ReadFile(victim); err != nil || string(b) != "x" {
			t.Fatalf("%s: the file named by the metadata was touched: %v", name, err)
		}
		if serverPid(h.socket) != 0 {
			t.Fatalf("%s: a server started", name)
		}
	}

	// A file that is not a socket at a NIC's path is left alone.
	ctl := filepath.Join(h.dir, "g-nic0.ctl")
	if err := os.WriteFile(ctl, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg := h.run(t, "release", "end", h.xml); code != 0 {
		t.Fatalf("release end: exit %d: %s", code, msg)
	}
	if _, err := os.Stat(ctl); err != nil {
		t.Errorf("release removed a file that is not a socket: %v", err)
	}
}

// Concurrent migrations' checks each read a whole description of the
// host, and leave none behind.
func TestHookChecksConcurrentMigrations(t *testing.T) {
	h := newHookEnv(t, "")
	const n = 24
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			code, msg := h.run(t, "migrate", "begin", h.xml)
			if code != 0 {
				msg = fmt.Sprintf("exit %d: %s", code, msg)
			} else {
				msg = ""
			}
			errs <- msg
		}()
	}
	for i := 0; i < n; i++ {
		if msg := <-errs; msg != "" {
			t.Errorf("migrate begin: %s", msg)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(h.dir, "run", "describe*")); len(left) != 0 {
		t.Errorf("descriptions left behind: %v", left)
	}
}

// An incoming guest is checked against what the host accepts: a
// version-2 NIC at a host that stands for a version-1-only one is
// refused with the check's words, and nothing starts.
func TestHookRefusesAnIncompatibleIncomingGuest(t *testing.T) {
	v1, _ := filepath.Abs("../../cmd/e1000e-vfu/testdata/v1-only.json")
	h := newHookEnv(t, "E1000E_VFU_DESCRIBE="+v1+"\n", "--version", "2")
	code, msg := h.run(t, "migrate", "begin", h.xml)
	if code != 1 || !strings.Contains(msg, "rx-filter-size") || strings.Count(msg, "\n") != 1 {
		t.Errorf("migrate begin: exit %d, %q; want 1 and one line naming rx-filter-size", code, msg)
	}
	if serverPid(h.socket) != 0 {
		t.Error("a server started")
	}

	// A version-1 NIC goes; its server then starts with the source's list
	// and is checked against it.
	h = newHookEnv(t, "E1000E_VFU_DESCRIBE="+v1+"\n", "--version", "1")
	if code, msg := h.run(t, "migrate", "begin", h.xml); code != 0 {
		t.Fatalf("migrate begin, version 1: exit %d: %s", code, msg)
	}
	if code, msg := h.run(t, "prepare", "begin", h.xml); code != 0 {
		t.Fatalf("prepare begin, version 1: exit %d: %s", code, msg)
	}
	h.run(t, "release", "end", h.xml)
	if serverPid(h.socket) != 0 {
		t.Error("server left after release")
	}
}

// A server that cannot start fails prepare with its own words, and
// leaves nothing behind.
func TestHookReportsAServerThatCannotStart(t *testing.T) {
	h := newHookEnv(t, "E1000E_VFU_ARGS='--pcap /nonexistent/dir/x.pcap'\n")
	code, msg := h.run(t, "prepare", "begin", h.xml)
	if code != 1 || !strings.Contains(msg, "did not start") || !strings.Contains(msg, "--pcap") {
		t.Errorf("prepare begin: exit %d, %q", code, msg)
	}
	if serverPid(h.socket) != 0 {
		t.Error("a server runs")
	}
	// Each step is checked, though prepare runs it where set -e is off:
	// a log directory that cannot be made fails at once.
	h = newHookEnv(t, "")
	conf, _ := os.ReadFile(h.conf)
	os.WriteFile(h.conf, append(conf, "E1000E_VFU_LOG_DIR="+h.conf+"/log\n"...), 0o644)
	start := time.Now()
	if code, msg := h.run(t, "prepare", "begin", h.xml); code != 1 || !strings.Contains(msg, "cannot make "+h.conf+"/log") {
		t.Errorf("prepare begin with a log directory under a file: exit %d, %q", code, msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the failure took %v: a later step waited instead", d)
	}
	if serverPid(h.socket) != 0 {
		t.Error("a server runs")
	}
	h = newHookEnv(t, "E1000E_VFU=/nonexistent/e1000e-vfu\n")
	if code, msg := h.run(t, "prepare", "begin", h.xml); code != 1 || !strings.Contains(msg, "not found") {
		t.Errorf("prepare begin without the program: exit %d, %q", code, msg)
	}
}

// Where systemd runs, each server is a transient unit; stand-ins for
// systemd-run and systemctl record what the hook asks and run the server
// as systemd would, detached.
func TestHookUsesSystemd(t *testing.T) {
	h := newHookEnv(t, "E1000E_VFU_SYSTEMD=yes\n")
	bin := filepath.Join(h.dir, "bin")
	calls := filepath.Join(h.dir, "calls")
	os.MkdirAll(bin, 0o755)
	stub := func(name, body string) {
		script := "#!/bin/sh\necho \"" + name + " $*\" >>" + calls + "\n" + body
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pidf := filepath.Join(h.dir, "unit.pid")
	stub("systemd-run", `while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done
setsid "$@" </dev/null >/dev/null 2>&1 &
echo $! >`+pidf+"\n")
	stub("systemctl", `case "$1" in
is-active) kill -0 "$(cat `+pidf+` 2>/dev/null)" 2>/dev/null ;;
stop)
	# As systemctl stop does, return once the unit's process is gone.
	if [ -f `+pidf+` ]; then
		p=$(cat `+pidf+`)
		kill "$p"
		n=0
		while kill -0 "$p" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
		rm -f `+pidf+`
	fi
	exit 0 ;;
esac
`)
	h.env = append(h.env, "PATH="+bin+":"+os.Getenv("PATH"))
	if code, msg := h.run(t, "prepare", "begin", h.xml); code != 0 {
		t.Fatalf("prepare begin: exit %d: %s", code, msg)
	}
	pid := serverPid(h.socket)
	t.Cleanup(func() {
		if p, _ := os.FindProcess(pid); pid != 0 && p != nil {
			p.Kill()
		}
	})
	if code, msg := h.run(t, "release", "end", h.xml); code != 0 {
		t.Fatalf("release end: exit %d: %s", code, msg)
	}
	b, _ := os.ReadFile(calls)
	log := string(b)
	unit := "e1000e-vfu-8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a-nic0"
	if !strings.Contains(log, "systemd-run --quiet --collect --unit="+unit+" ") || !strings.Contains(log, program+" serve --socket "+h.socket) {
		t.Errorf("systemd-run was not asked for unit %s running the server:\n%s", unit, log)
	}
	if !strings.Contains(log, "systemctl stop "+unit+".service") {
		t.Errorf("release did not stop the unit:\n%s", log)
	}
	if pid == 0 || serverPid(h.socket) != 0 {
		t.Errorf("server pid %d at prepare, %d after release", pid, serverPid(h.socket))
	}
	if _, err := os.Stat(filepath.Join(h.dir, "log")); err == nil {
		t.Error("a log directory was made: under systemd the journal keeps the log")
	}

	// A server that cannot start: the error carries the unit's journal.
	stub("journalctl", "echo \"the server's reason\"\n")
	conf, _ := os.ReadFile(h.conf)
	os.WriteFile(h.conf, append(conf, "E1000E_VFU_ARGS='--pcap /nonexistent/dir/x.pcap'\n"...), 0o644)
	code, msg := h.run(t, "prepare", "begin", h.xml)
	if code != 1 || !strings.Contains(msg, "did not start: the server's reason") {
		t.Errorf("prepare begin of a failing server: exit %d, %q", code, msg)
	}
	b, _ = os.ReadFile(calls)
	if !strings.Contains(string(b), "journalctl -u "+unit+" --since ") {
		t.Errorf("the journal was not asked for the unit's lines since its start:\n%s", b)
	}
}

// The template's NIC is what libvirt-xml prints for it, and reads back.
func TestDomainTemplate(t *testing.T) {
	got, err := exec.Command(program, "libvirt-xml", "--read-domain", "domain.xml").CombinedOutput()
	if err == nil && !strings.Contains(string(got), "\tnic0\t/run/e1000e-vfu/web1-nic0.sock\t") {
		err = fmt.Errorf("unexpected NICs")
	}
	if err != nil {
		t.Fatalf("--read-domain domain.xml: %v: %s", err, got)
	}
	want, err := exec.Command(program, "libvirt-xml", "--socket", "/run/e1000e-vfu/web1-nic0.sock",
		"--mac", "52:54:00:12:34:56", "--netdev", "tap,ifname=evfu-web1", "--bridge", "br0").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	tmpl, _ := os.ReadFile("domain.xml")
	for _, l := range strings.Split(string(want), "\n") {
		l = strings.TrimSpace(strings.Replace(l, " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'", "", 1))
		if l != "" && !strings.HasPrefix(l, "<!--") && !strings.Contains(string(tmpl), l) {
			t.Errorf("the template lacks libvirt-xml's line %s", l)
		}
	}
}
