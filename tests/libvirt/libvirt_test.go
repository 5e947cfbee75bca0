//go:build integration

package libvirt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"sync/atomic"
	"testing"
	"time"

	"e1000e-vfu/tests/agentproto"
	"e1000e-vfu/tests/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "libvirt tests", 30*time.Minute, &suite))
}

const (
	domain  = "evfu-lv"
	nicID   = "nic0"
	guestIP = harness.GuestIP
	peerIP  = harness.PeerIP
	// The NIC as every host names it: the server's socket and its TAP,
	// which the hook puts on the host's bridge.
	nicSocket = "/run/e1000e-vfu/" + domain + "-" + nicID + ".sock"
	nicMAC    = "52:54:00:e1:0e:01"
)

// guest is the running guest, wherever it runs.
type guest struct {
	host    *lvHost
	console *harness.Console
	agent   *harness.Agent
}

// TestLibvirt boots one guest under libvirt on host A and, with
// `virsh migrate --live`, moves it to host B and back under a TCP stream;
// then checks what must not move: a version-2 guest to a host that
// accepts only version 1, and a host without the program. Last, destroy
// and undefine leave no server, and a stock QEMU refuses the NIC.
func TestLibvirt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	sweepLeftovers(t)
	dir := harness.TestDir(t)
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	lvRoot := prepareRoot(t, ctx)

	hosts, err := harness.NewHosts(fmt.Sprintf("%s%d", nsPrefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hosts.Close(); err != nil {
			t.Errorf("removing the network: %v", err)
		}
	})
	start := time.Now()
	a := newHost(t, ctx, 0, hosts, lvRoot, filepath.Join(dir, "a"))
	b := newHost(t, ctx, 1, hosts, lvRoot, filepath.Join(dir, "b"))
	a.waitReady(ctx)
	b.waitReady(ctx)
	t.Logf("two libvirt hosts up in %v", time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range []*lvHost{a, b} {
				t.Logf("%s: libvirtd log (tail):\n%s\nserver log:\n%s", h.name, h.libvirtdLog(30), tailString(h.serverLog(domain, nicID), 3000))
				q, _ := os.ReadFile(h.path("/var/log/libvirt/qemu/" + domain + ".log"))
				t.Logf("%s: QEMU log (tail):\n%s", h.name, tailString(string(q), 3000))
			}
		}
	})

	// Version 2, not the latest: RefusedByVersion1Only moves it to a
	// host that accepts version 1 only.
	nic := libvirtXML(t, "--socket", nicSocket, "--mac", nicMAC, "--version", "2", "--netdev", "tap,ifname=evfu0", "--bridge", "br0")
	xml := domainXML(domain, "/opt/qemu-mig/bin/qemu-system-x86_64", nic)
	if err := os.WriteFile(a.path("/tmp/"+domain+".xml"), []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	a.mustVirsh(ctx, "define", "/tmp/"+domain+".xml")
	start = time.Now()
	a.mustVirsh(ctx, "start", domain)
	g := &guest{host: a}
	if g.console, g.agent, err = a.guestPorts(30*time.Second, "console-a.log"); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	err = g.agent.WaitReady(rctx)
	rcancel()
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, g.console.Tail(3000))
	}
	t.Logf("guest ready on %s in %v", a.name, time.Since(start).Round(100*time.Millisecond))
	g.sh(t, ctx, "for c in all default eth0; do echo 1 > /proc/sys/net/ipv6/conf/$c/disable_ipv6; done")
	g.sh(t, ctx, "ip link set eth0 up && ip addr add "+guestIP+"/24 dev eth0")
	if _, err := g.agent.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		t.Fatalf("%v\n%s", err, g.sh(t, ctx, "ip link show; dmesg | tail -n 20"))
	}
	g.ping(t, ctx, 3)
	if q, _ := os.ReadFile(a.path("/var/log/libvirt/qemu/" + domain + ".log")); !strings.Contains(string(q), "tainted: custom-argv") {
		t.Errorf("libvirt did not mark the domain tainted (custom-argv): the NIC is outside its model")
	}

	t.Run("MigrateAB", func(t *testing.T) { g.migrate(t, ctx, hosts, b, "--p2p") })
	if t.Failed() {
		t.FailNow()
	}
	t.Run("MigrateBA", func(t *testing.T) { g.migrate(t, ctx, hosts, a) })
	if t.Failed() {
		t.FailNow()
	}

	t.Run("RefusedByVersion1Only", func(t *testing.T) {
		b.setHook("E1000E_VFU_DESCRIBE=" + v1OnlyDesc + "\n")
		defer b.setHook("")
		out := g.refused(t, ctx, b)
		if !strings.Contains(out, "rx-filter-size") {
			t.Errorf("libvirt's error does not carry the check's reason (rx-filter-size):\n%s", out)
		}
	})
	t.Run("DestinationHookFails", func(t *testing.T) {
		b.setHook("E1000E_VFU=/opt/absent/e1000e-vfu\n")
		defer b.setHook("")
		out := g.refused(t, ctx, b)
		if !strings.Contains(out, "not found") {
			t.Errorf("libvirt's error does not say what the destination lacks:\n%s", out)
		}
	})

	t.Run("DestinationServerFails", func(t *testing.T) {
		// The check passes, then the destination's server cannot start
		// (here a capture file in a directory that does not exist): the
		// hook fails at prepare, before QEMU starts there.
		b.setHook("E1000E_VFU_ARGS='--pcap /opt/absent/nic.pcap'\n")
		defer b.setHook("")
		out := g.refused(t, ctx, b)
		if !strings.Contains(out, "the server did not start") || !strings.Contains(out, "--pcap") {
			t.Errorf("libvirt's error does not carry the server's reason:\n%s", out)
		}
	})

	t.Run("DestroyUndefine", func(t *testing.T) {
		a.mustVirsh(ctx, "destroy", domain)
		a.mustVirsh(ctx, "undefine", domain)
		waitNoServers(t, a, b)
		if _, err := os.Stat(a.path(nicSocket)); err == nil {
			t.Errorf("the server's socket %s is left behind", nicSocket)
		}
		if out := a.mustVirsh(ctx, "list", "--all", "--name"); strings.TrimSpace(out) != "" {
			t.Errorf("domains left on %s: %s", a.name, out)
		}
	})

	t.Run("StockQEMURefuses", func(t *testing.T) {
		// Debian's QEMU, which cannot migrate the device: the domain must
		// not start at all, rather than start and lose the NIC's state
		// at its first migration.
		x := domainXML("evfu-stock", "/usr/bin/qemu-system-x86_64",
			libvirtXML(t, "--socket", "/run/e1000e-vfu/evfu-stock-nic0.sock", "--mac", "52:54:00:e1:0e:02"))
		if err := os.WriteFile(a.path("/tmp/evfu-stock.xml"), []byte(x), 0o644); err != nil {
			t.Fatal(err)
		}
		a.mustVirsh(ctx, "define", "/tmp/evfu-stock.xml")
		defer a.virsh(ctx, "undefine", "evfu-stock")
		out, err := a.virsh(ctx, "start", "evfu-stock")
		if err == nil {
			t.Fatalf("the stock QEMU started the domain:\n%s", out)
		}
		if !strings.Contains(out, "enable-migration") {
			t.Errorf("the failure does not name enable-migration:\n%s", out)
		}
		t.Logf("stock QEMU: %s", firstLine(out, "enable-migration"))
		waitNoServers(t, a, b)
	})
}

// migrate moves the guest to dst with virsh migrate --live (from the
// guest's host), under a host→guest TCP stream paced so that it runs
// through the migration, and checks the stream whole and the server's
// state moved.
// The stream lasts 20 s at its pace, twice the slowest migration seen on
// a loaded 2-core machine (9.6 s), so that it still runs when virsh
// returns.
const (
	streamSize = 40 << 20
	streamRate = 2 << 20
)

func (g *guest) migrate(t *testing.T, ctx context.Context, hosts *harness.Hosts, dst *lvHost, extra ...string) {
	src := g.host
	flow, err := startStream(hosts.LAN, g.agent, streamSize, streamRate)
	if err != nil {
		t.Fatal(err)
	}
	if err := flow.waitSent(ctx, 2<<20); err != nil {
		t.Fatal(err)
	}
	ports := make(chan error, 1)
	var con *harness.Console
	var agent *harness.Agent
	go func() {
		var err error
		con, agent, err = dst.guestPorts(2*time.Minute, "console-"+dst.name+".log")
		ports <- err
	}()
	args := append([]string{"migrate", "--live", "--verbose"}, extra...)
	args = append(args, domain, "qemu+tcp://"+dst.ip+"/system")
	start := time.Now()
	_, err = src.virsh(ctx, args...)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if perr := <-ports; perr != nil {
		t.Fatal(perr)
	}
	agent.FollowIDs(g.agent)
	g.host, g.console, g.agent = dst, con, agent
	sentAtEnd := flow.sent.Load()
	if sentAtEnd >= streamSize {
		// virsh returns after the switch-over: a stream already whole
		// then did not run across it, and the step proved nothing.
		t.Errorf("the whole stream was sent before virsh returned (%v): the switch-over was not under traffic", took.Round(100*time.Millisecond))
	}
	if _, err := flow.finish(ctx, agent, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The completed job's statistics: on the destination, where the
	// domain now is (a transient one is gone from the source).
	job, err := dst.virsh(ctx, "domjobinfo", "--completed", domain)
	if err != nil {
		job, _ = src.virsh(ctx, "domjobinfo", "--completed", domain)
	}
	downtime := jobField(job, "Total downtime")
	t.Logf("%s → %s: virsh migrate %s took %v; libvirt's downtime %s; the stream (%d MiB, %d MiB/s) arrived whole, %.1f MiB of it sent when virsh returned, longest pause between the host's writes %v",
		src.name, dst.name, strings.Join(extra, " "), took.Round(100*time.Millisecond), downtime,
		streamSize>>20, streamRate>>20, float64(sentAtEnd)/(1<<20), flow.maxPause.Round(time.Millisecond))
	log := dst.serverLog(domain, nicID)
	m := regexp.MustCompile(`state_bytes_received=(\d+)`).FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		t.Errorf("the destination server logged no device state received:\n%s", tailString(log, 2000))
	} else {
		t.Logf("device state received on %s: %s bytes", dst.name, m[len(m)-1][1])
	}
	if state := strings.TrimSpace(dst.mustVirsh(ctx, "domstate", domain)); state != "running" {
		t.Errorf("on %s the domain is %q", dst.name, state)
	}
	// release runs after virsh has returned.
	waitNoServers(t, src)
	g.ping(t, ctx, 3)
}

// refused tries to migrate the guest to dst, which must refuse it before
// anything moves: virsh fails, the guest runs on at its host with the
// same server, which never stopped, and dst runs no server. It returns
// virsh's output.
func (g *guest) refused(t *testing.T, ctx context.Context, dst *lvHost) string {
	src := g.host
	before := src.servers()
	stateChanges := strings.Count(src.serverLog(domain, nicID), "migration: state change")
	out, err := src.virsh(ctx, "migrate", "--live", "--p2p", domain, "qemu+tcp://"+dst.ip+"/system")
	if err == nil {
		t.Fatalf("the migration to %s succeeded:\n%s", dst.name, out)
	}
	msg := firstLine(out, "error")
	if _, m, ok := strings.Cut(msg, "unexpected exit status 1: "); ok {
		msg = m // the hook's own line, after libvirt's preamble
	}
	t.Logf("refused: %s", msg)
	if state := strings.TrimSpace(src.mustVirsh(ctx, "domstate", domain)); state != "running" {
		t.Errorf("the source is %q after the refusal", state)
	}
	if after := src.servers(); len(after) != 1 || len(before) != 1 || after[0] != before[0] {
		t.Errorf("the source's server changed: before %v, after %v", before, after)
	}
	if n := strings.Count(src.serverLog(domain, nicID), "migration: state change"); n != stateChanges {
		t.Errorf("the source's device changed state %d times during the refused migration", n-stateChanges)
	}
	waitNoServers(t, dst)
	g.ping(t, ctx, 3)
	return out
}

func (h *lvHost) mustVirsh(ctx context.Context, args ...string) string {
	h.t.Helper()
	out, err := h.virsh(ctx, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// waitNoServers waits a little for the hook's servers to be gone from the
// hosts (release runs after virsh returns).
func waitNoServers(t *testing.T, hs ...*lvHost) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, h := range hs {
		for {
			s := h.servers()
			if len(s) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: servers left behind: %v", h.name, s)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func (g *guest) sh(t *testing.T, ctx context.Context, cmd string) string {
	t.Helper()
	out, err := g.agent.Sh(ctx, 30*time.Second, cmd)
	if err != nil {
		t.Fatalf("guest: %s: %v\n%s", cmd, err, out)
	}
	return out
}

func (g *guest) ping(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	if _, err := harness.PingRTT(ctx, g.agent, peerIP, n); err != nil {
		t.Fatalf("guest on %s: %v", g.host.name, err)
	}
}

// prepareRoot runs the libvirt root's recipe (quick when cached).
func prepareRoot(t *testing.T, ctx context.Context) string {
	t.Helper()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(suite.Repo, "tests/libvirt/prepare.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tests/libvirt/prepare.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := lines[len(lines)-1]
	v, _ := os.ReadFile(filepath.Join(dir, "libvirt-version"))
	t.Logf("libvirt root %s (%s) ready in %v", dir, strings.TrimSpace(string(v)), time.Since(start).Round(100*time.Millisecond))
	return filepath.Join(dir, "root")
}

// libvirtXML runs e1000e-vfu libvirt-xml, as a user would.
func libvirtXML(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(suite.ServerBin, append([]string{"libvirt-xml"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("libvirt-xml: %v\n%s", err, out)
	}
	return string(out)
}

// domainXML is the test's guest: the harness's kernel and initramfs, a
// TCG q35 machine with shared memfd RAM (which the server maps), the
// console and agent ports as UNIX sockets the test listens on, and the
// NIC's blocks from libvirt-xml.
func domainXML(name, emulator, nic string) string {
	return fmt.Sprintf(`<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>%s</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%[2]s/vmlinuz</kernel>
    <initrd>%[2]s/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 loglevel=6</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%[3]s</emulator>
    <serial type='unix'>
      <source mode='connect' path='%[2]s/console.sock'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='connect' path='%[2]s/agent.sock'/>
      <target port='1'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
%[4]s</domain>
`, name, guestDir, emulator, nic)
}

// stream is a host→guest TCP stream of a seeded sequence at a paced
// rate: the guest's agent reads and hashes it (recv); the host records
// the longest pause between two of its writes, the gap the migration
// made as the sender saw it.
type stream struct {
	size     int64
	seed     uint64
	id       int64
	sent     atomic.Int64
	maxPause time.Duration
	done     chan error
	l        net.Listener
}

func startStream(ns *harness.NetNS, agent *harness.Agent, size, rate int64) (*stream, error) {
	l, err := ns.Listen("tcp", net.JoinHostPort(peerIP, "0"))
	if err != nil {
		return nil, err
	}
	s := &stream{size: size, seed: uint64(time.Now().UnixNano()), done: make(chan error, 1), l: l}
	timeout := 2*time.Duration(size/rate)*time.Second + 2*time.Minute
	go func() { s.done <- s.feed(rate, timeout) }()
	if s.id, err = agent.Begin(timeout, "recv", l.Addr().String()); err != nil {
		l.Close()
		<-s.done
		return nil, err
	}
	return s, nil
}

func (s *stream) feed(rate int64, timeout time.Duration) error {
	defer s.l.Close()
	s.l.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	c, err := s.l.Accept()
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	src := io.LimitReader(agentproto.Stream(s.seed), s.size)
	buf := make([]byte, 32<<10)
	start := time.Now()
	var last time.Time
	var n int64
	for {
		m, rerr := io.ReadFull(src, buf)
		if m > 0 {
			if _, err := c.Write(buf[:m]); err != nil {
				return fmt.Errorf("stream: after %d bytes: %w", n, err)
			}
			now := time.Now()
			// A pause counts beyond the pacing's own sleep.
			if !last.IsZero() && now.Sub(last) > s.maxPause {
				s.maxPause = now.Sub(last)
			}
			n += int64(m)
			s.sent.Store(n)
			if wait := time.Until(start.Add(time.Duration(n * int64(time.Second) / rate))); wait > 0 {
				time.Sleep(wait)
			}
			last = time.Now()
		}
		if rerr != nil {
			return nil
		}
	}
}

func (s *stream) waitSent(ctx context.Context, n int64) error {
	for s.sent.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream: %d of %d bytes sent: %w", s.sent.Load(), n, ctx.Err())
		case err := <-s.done:
			return fmt.Errorf("stream ended early: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// finish waits for the guest's reply on agent and checks the stream end
// to end.
func (s *stream) finish(ctx context.Context, agent *harness.Agent, wait time.Duration) (float64, error) {
	rp, err := agent.Await(ctx, s.id, wait)
	if err != nil {
		s.l.Close()
		return 0, errors.Join(err, <-s.done)
	}
	if err := <-s.done; err != nil {
		return 0, err
	}
	h := sha256.New()
	io.CopyBuffer(h, io.LimitReader(agentproto.Stream(s.seed), s.size), make([]byte, 256<<10))
	want := hex.EncodeToString(h.Sum(nil))
	got, _ := rp.Data["bytes"].(float64)
	if int64(got) != s.size || rp.Data["sha256"] != want {
		return 0, fmt.Errorf("stream: guest read %d bytes with SHA-256 %v, want %d with %s", int64(got), rp.Data["sha256"], s.size, want)
	}
	secs, _ := rp.Data["seconds"].(float64)
	return secs, nil
}

func jobField(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "(not reported)"
}

func firstLine(out, with string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, with) {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(out)
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
