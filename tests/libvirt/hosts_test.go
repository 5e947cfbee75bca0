//go:build integration

package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"e1000e-vfu/internal/unixsock"
	"e1000e-vfu/tests/harness"
)

// lvHost is one libvirt "host": a network namespace of the two-host
// network (its bridge br0 at harness.HostIP), a mount and UTS namespace
// with its own hostname, and libvirtd chrooted into an overlay of the
// prepared root, so that each host has its own configuration, state,
// /run and logs. Paths inside the host are the overlay's merged
// directory (root) joined with the host's own path.
type lvHost struct {
	t      testing.TB
	name   string // its hostname
	ip     string
	ns     *harness.NetNS
	dir    string // the overlay's layers
	root   string // the merged root
	daemon *exec.Cmd
	exited chan struct{}
	// The guest's serial ports connect to these, on whichever host its
	// QEMU runs.
	conL, agtL *net.UnixListener
}

// The guest's files inside every host, at the same paths (a migrated
// domain's XML names them).
const (
	guestDir   = "/var/lib/evfu-test"
	hookConf   = "/etc/e1000e-vfu/libvirt-hook.conf"
	v1OnlyDesc = "/etc/e1000e-vfu/v1-only.json"
)

// sweepLeftovers stops what a run of this test killed before its
// cleanup left behind: libvirt double-forks its QEMUs and the hook
// detaches the servers, so neither dies with the test binary as libvirtd
// does. They are found by their root, an overlay this test mounts
// (TMPDIR/evfu-*/a|b/root over its own upper layer), and that overlay is
// unmounted once nothing runs in it.
func sweepLeftovers(t testing.TB) {
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return
	}
	pat := regexp.MustCompile(`^` + regexp.QuoteMeta(os.TempDir()) + `/evfu-[0-9]+/[ab]/root$`)
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[2] != "overlay" || !pat.MatchString(f[1]) ||
			!strings.Contains(f[3], "upperdir="+filepath.Join(filepath.Dir(f[1]), "upper")) {
			continue
		}
		// A run still going owns its overlay: its test binary's pid is
		// in the directory.
		if livePid(filepath.Join(filepath.Dir(filepath.Dir(f[1])), ownerFile)) {
			continue
		}
		h := &lvHost{root: f[1]}
		ps := h.procs()
		for _, p := range ps {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
		err := syscall.Unmount(f[1], syscall.MNT_DETACH)
		t.Logf("a killed run's host at %s: %d processes killed, unmounted (%v)", f[1], len(ps), err)
	}
	// Its network: namespaces named after a test binary's pid that no
	// longer runs this test.
	ents, _ := os.ReadDir("/run/netns")
	nsPat := regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-(lan|h0|h1)$`)
	for _, e := range ents {
		m := nsPat.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if testRuns(m[1]) {
			continue
		}
		err := exec.Command("ip", "netns", "del", e.Name()).Run()
		t.Logf("a killed run's network namespace %s removed (%v)", e.Name(), err)
	}
}

// ownerFile, in a run's directory, holds its test binary's pid.
const ownerFile = "owner.pid"

// livePid says whether the pid in file is a test binary of this test
// still running.
func livePid(file string) bool {
	b, err := os.ReadFile(file)
	return err == nil && testRuns(strings.TrimSpace(string(b)))
}

// testRuns says whether pid is a running binary of this test.
func testRuns(pid string) bool {
	comm, err := os.ReadFile("/proc/" + pid + "/comm")
	return err == nil && strings.HasPrefix(string(comm), "libvirt.test")
}

// nsPrefix starts the names of the test's network namespaces, followed
// by the test binary's pid.
const nsPrefix = "evlv"

// newHost builds host i (0 or 1) in dir and starts its libvirtd, without
// waiting for it (waitReady).
func newHost(t testing.TB, ctx context.Context, i int, hosts *harness.Hosts, lvRoot, dir string) *lvHost {
	t.Helper()
	h := &lvHost{t: t, name: fmt.Sprintf("lvhost-%c", 'a'+i), ip: harness.HostIP(i), ns: hosts.Host[i], dir: dir, exited: make(chan struct{})}
	h.root = filepath.Join(dir, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lvRoot, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", h.root, "overlay", 0, opts); err != nil {
		t.Fatalf("%s: mounting the overlay: %v", h.name, err)
	}
	t.Cleanup(h.close)

	mig := suite.MigQEMU(t)
	copies := [][2]string{
		{filepath.Join(mig.Root, "opt/qemu-mig/bin/qemu-system-x86_64"), "/opt/qemu-mig/bin/qemu-system-x86_64"},
		{suite.ServerBin, "/usr/local/bin/e1000e-vfu"},
		{filepath.Join(suite.Repo, "contrib/libvirt/e1000e-vfu-hook"), "/etc/libvirt/hooks/qemu.d/e1000e-vfu"},
		{filepath.Join(suite.Repo, "cmd/e1000e-vfu/testdata/v1-only.json"), v1OnlyDesc},
		{suite.Cache.Kernel, guestDir + "/vmlinuz"},
		{suite.Initramfs, guestDir + "/initramfs.cpio.gz"},
	}
	for _, c := range copies {
		if err := copyFile(c[0], h.path(c[1])); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}
	// libvirt skips a hook that is not executable, whatever the
	// checkout's modes.
	if err := os.Chmod(h.path("/etc/libvirt/hooks/qemu.d/e1000e-vfu"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"/etc/hostname": h.name + "\n",
		"/etc/hosts": fmt.Sprintf("127.0.0.1 localhost\n%s lvhost-a\n%s lvhost-b\n",
			harness.HostIP(0), harness.HostIP(1)),
		// TCP without authentication, on the host's LAN address only:
		// the network is the test's own. Distinct host UUIDs, or
		// libvirt refuses a migration to "the same host".
		"/etc/libvirt/libvirtd.conf": fmt.Sprintf(`listen_tls = 0
listen_tcp = 1
listen_addr = %q
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "7e57e1a0-0000-4000-8000-%012d"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`, h.ip, i+1),
		// QEMU as root with no security driver, cgroups or private
		// /dev: the host is a chroot, not a machine. migration_host is
		// the LAN address (libvirt refuses one on loopback).
		"/etc/libvirt/qemu.conf": fmt.Sprintf(`user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_host = %q
`, h.ip),
		hookConf: "",
	}
	for p, s := range files {
		if err := os.MkdirAll(filepath.Dir(h.path(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(h.path(p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if h.conL, err = listenUnix(h.path(guestDir + "/console.sock")); err != nil {
		t.Fatal(err)
	}
	if h.agtL, err = listenUnix(h.path(guestDir + "/agent.sock")); err != nil {
		t.Fatal(err)
	}

	// proc, sys and dev are mounted in the daemon's own mount namespace
	// only, so they go when it does; ip netns exec gave it the host's
	// /sys. libvirtd and the QEMUs it starts all live in that namespace.
	script := fmt.Sprintf(`set -e
hostname %s
mount -t proc proc %[2]s/proc
mount --rbind /sys %[2]s/sys
mount --rbind /dev %[2]s/dev
exec chroot %[2]s /usr/sbin/libvirtd --listen`, h.name, h.root)
	h.daemon = h.ns.Command(context.Background(), "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script)
	log, err := os.Create(filepath.Join(dir, "libvirtd.out"))
	if err != nil {
		t.Fatal(err)
	}
	h.daemon.Stdout, h.daemon.Stderr = log, log
	// Every exec keeps the pid: ip, unshare, sh and chroot each exec the
	// next, so the death signal reaches libvirtd if the test dies.
	h.daemon.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.daemon.Start(); err != nil {
		t.Fatalf("%s: starting libvirtd: %v", h.name, err)
	}
	go func() {
		h.daemon.Wait()
		log.Close()
		close(h.exited)
	}()
	return h
}

// waitReady waits for the host's libvirtd to answer (it probes its QEMUs
// first, several seconds each: the hosts start together, then wait).
func (h *lvHost) waitReady(ctx context.Context) {
	h.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, err := h.virsh(ctx, "version")
		if err == nil {
			return
		}
		if time.Now().After(deadline) || h.daemonExited() {
			out, _ := os.ReadFile(filepath.Join(h.dir, "libvirtd.out"))
			h.t.Fatalf("%s: libvirtd not ready: %v\n%s\n%s", h.name, err, out, h.libvirtdLog(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *lvHost) path(p string) string { return filepath.Join(h.root, p) }

func (h *lvHost) daemonExited() bool {
	select {
	case <-h.exited:
		return true
	default:
		return false
	}
}

// virsh runs virsh inside the host (its namespaces and root) against its
// own libvirtd; the output is stdout and stderr together.
func (h *lvHost) virsh(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	argv := append([]string{"-t", strconv.Itoa(h.daemon.Process.Pid), "-m", "-u", "-n", "-r", "-w",
		"virsh", "-c", "qemu:///system"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: virsh %s: %w: %s", h.name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// setHook writes the hook's settings on this host; the hook reads them at
// every call, so no restart is needed.
func (h *lvHost) setHook(conf string) {
	h.t.Helper()
	if err := os.WriteFile(h.path(hookConf), []byte(conf), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// servers lists the e1000e-vfu processes running inside this host.
func (h *lvHost) servers() []string {
	var out []string
	for _, p := range h.procs() {
		cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
		if bytes.Contains(cmd, []byte("e1000e-vfu\x00serve")) {
			out = append(out, fmt.Sprintf("%d: %s", p, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// procs are the processes whose root is this host's: libvirtd, its
// QEMUs and the hook's servers, and nothing else on the machine.
func (h *lvHost) procs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if r, err := os.Readlink(filepath.Join("/proc", e.Name(), "root")); err == nil && r == h.root {
			out = append(out, pid)
		}
	}
	return out
}

func (h *lvHost) libvirtdLog(n int) string {
	b, _ := os.ReadFile(h.path("/var/log/libvirt/libvirtd.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// serverLog is the hook's log of a NIC's server on this host (the plain
// fallback: there is no systemd in the host).
func (h *lvHost) serverLog(domain, nic string) string {
	b, _ := os.ReadFile(h.path(fmt.Sprintf("/var/log/e1000e-vfu/%s-%s.log", domain, nic)))
	return string(b)
}

// close destroys every domain, stops libvirtd, kills whatever still runs
// in the host's root and unmounts it. Logs stay in the test directory.
func (h *lvHost) close() {
	if h.daemon != nil && h.daemon.Process != nil && !h.daemonExited() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if out, err := h.virsh(ctx, "list", "--name"); err == nil {
			for _, d := range strings.Fields(out) {
				h.virsh(ctx, "destroy", d)
			}
		}
		cancel()
		h.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.exited:
		case <-time.After(10 * time.Second):
			h.daemon.Process.Kill()
			<-h.exited
		}
	}
	for range 50 {
		ps := h.procs()
		if len(ps) == 0 {
			break
		}
		for _, p := range ps {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h.conL != nil {
		h.conL.Close()
		h.agtL.Close()
	}
	if err := syscall.Unmount(h.root, 0); err != nil {
		syscall.Unmount(h.root, syscall.MNT_DETACH)
	}
	os.RemoveAll(filepath.Join(h.dir, "work"))
}

// guestPorts waits for a QEMU starting on this host to connect the
// guest's console and agent ports.
func (h *lvHost) guestPorts(d time.Duration, logName string) (*harness.Console, *harness.Agent, error) {
	deadline := time.Now().Add(d)
	h.conL.SetDeadline(deadline)
	h.agtL.SetDeadline(deadline)
	con, err := h.conL.Accept()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: console port: %w", h.name, err)
	}
	agt, err := h.agtL.Accept()
	if err != nil {
		con.Close()
		return nil, nil, fmt.Errorf("%s: agent port: %w", h.name, err)
	}
	c, err := harness.NewConsole(con, filepath.Join(h.dir, logName))
	if err != nil {
		con.Close()
		agt.Close()
		return nil, nil, err
	}
	return c, harness.NewAgent(agt), nil
}

func listenUnix(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	ln, err := unixsock.Listen(path, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ln, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}
