//go:build integration

package migration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

const (
	hostIP  = harness.PeerIP
	guestIP = harness.GuestIP
)

// side is one QEMU with its own server on one of the two hosts: a
// migration goes from one side to another.
type side struct {
	name string
	dir  string
	host int    // which of the rig's hosts it runs on
	tap  string // its TAP device, a port of that host's bridge
	srv  *harness.Server
	vm   *harness.VM
}

// rig is one guest that moves between sides on two hosts joined by a LAN
// (harness.Hosts): the sides alternate between host 0 and host 1, each
// side's NIC backend is a TAP on its host's bridge, QEMUs migrate over TCP
// between the hosts, and the peer at hostIP sits on the LAN. Nothing in the
// rig tells the bridges that the guest moved: only frames from its MAC
// arriving through the new host do.
type rig struct {
	t     testing.TB
	ctx   context.Context
	dir   string
	hosts *harness.Hosts
	ns    *harness.NetNS // the peer's namespace: the LAN
	stock bool           // stock QEMU from the prepared root instead of the patched one
	// builtin gives the guest QEMU's own e1000e (for the benchmark's
	// comparison) instead of our server.
	builtin bool
	// moreNICs, if set, gives each side's guest further NICs
	// (rigOpts.moreNICs).
	moreNICs func(r *rig, s *side, incoming bool) []harness.NIC
	// rootPort, if set, puts the NIC into a PCIe root port of that id
	// (rigOpts.rootPort).
	rootPort string
	cur      *side
	n        int
}

type rigOpts struct {
	stock      bool     // run the stock QEMU (no vfio-user migration)
	builtin    bool     // QEMU's built-in e1000e instead of our server
	serverArgs []string // the source server's flags, e.g. --version 1
	// moreNICs, if set, is called as each side starts, before its QEMU,
	// and returns the NICs the guest has besides the rig's own (eth0): it
	// starts whatever servers they need on the side's host.
	moreNICs func(r *rig, s *side, incoming bool) []harness.NIC
	// rootPort, if set, is the id of a PCIe root port each side's QEMU
	// has, with the NIC in it (so that it can be unplugged).
	rootPort string
}

// newRig boots the guest on side "a": server, QEMU, eth0 up, the second
// agent started.
func newRig(t testing.TB, ctx context.Context, o rigOpts) *rig {
	t.Helper()
	r := &rig{t: t, ctx: ctx, dir: harness.TestDir(t), stock: o.stock, builtin: o.builtin, moreNICs: o.moreNICs, rootPort: o.rootPort}
	hosts, err := harness.NewHosts(fmt.Sprintf("evfu-m%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("MAC tables: LAN switch:\n%s\nhost 0:\n%s\nhost 1:\n%s", hosts.FDB(-1), hosts.FDB(0), hosts.FDB(1))
		}
		if err := hosts.Close(); err != nil {
			t.Errorf("removing the network: %v", err)
		}
	})
	r.hosts, r.ns = hosts, hosts.LAN
	start := time.Now()
	r.cur = r.startSide(o.serverArgs, false)
	t.Logf("guest ready on %s in %v", r.cur.name, time.Since(start).Round(100*time.Millisecond))
	// IPv4 only: the guest's IPv6 autoconfiguration keeps sending router
	// solicitations, backing off for minutes, and each one would tell the
	// bridges where the guest is; a test of what a guest that only receives
	// meets must not depend on them.
	r.sh("for c in all default eth0; do echo 1 > /proc/sys/net/ipv6/conf/$c/disable_ipv6; done")
	r.sh("ip link set eth0 up && ip addr add " + guestIP + "/24 dev eth0")
	if _, err := r.cur.vm.Agent.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		t.Fatalf("%v\n%s", err, r.sh("ip link show eth0; dmesg | tail -n 20"))
	}
	if err := r.cur.vm.StartAgent2(ctx); err != nil {
		t.Fatal(err)
	}
	r.ping(3)
	return r
}

// startSide starts a server with args and a QEMU attached to it on the
// next host in turn; an incoming side waits for a migration.
func (r *rig) startSide(serverArgs []string, incoming bool) *side {
	r.t.Helper()
	s := &side{name: string(rune('a' + r.n)), host: r.n % 2}
	r.n++
	s.dir = filepath.Join(r.dir, s.name)
	s.tap = "tap-" + s.name
	if err := r.hosts.AddTAP(s.host, s.tap); err != nil {
		r.t.Fatal(err)
	}
	if r.builtin {
		return r.startBuiltinSide(s, incoming)
	}
	srv, err := harness.StartServer(r.ctx, harness.ServerConfig{
		Bin: suite.ServerBin, Dir: s.dir, Netdev: "tap,ifname=" + s.tap, NetNS: r.hosts.Host[s.host],
		Args: serverArgs,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	s.srv = srv
	srv.StopAtEnd(r.t, "server "+s.name, 6144)
	cfg := harness.VMConfig{
		Cache: suite.Cache, Initramfs: suite.Initramfs, Dir: filepath.Join(s.dir, "vm"),
		NIC:    harness.NIC{Kind: harness.VFIOUser, Socket: srv.Socket},
		NetNS:  r.hosts.Host[s.host],
		Agent2: true, ExtraQMP: true,
	}
	if r.moreNICs != nil {
		cfg.MoreNICs = r.moreNICs(r, s, incoming)
	}
	if r.rootPort != "" {
		cfg.ExtraArgs = harness.RootPortArgs(r.rootPort, 1)
		cfg.DeviceProps = map[string]any{"bus": r.rootPort}
	}
	if !r.stock {
		cfg.QEMU = suite.MigQEMU(r.t).Command
	}
	return r.startVM(s, cfg, incoming)
}

// startBuiltinSide starts a QEMU whose NIC is its own e1000e on the side's
// TAP; QEMU announces that NIC itself after a migration.
func (r *rig) startBuiltinSide(s *side, incoming bool) *side {
	r.t.Helper()
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	cfg := harness.VMConfig{
		Cache: suite.Cache, Initramfs: suite.Initramfs, Dir: filepath.Join(s.dir, "vm"),
		NIC: harness.NIC{Kind: harness.BuiltinE1000E,
			Netdev: "tap,id=n0,ifname=" + s.tap + ",script=no,downscript=no"},
		NetNS:  r.hosts.Host[s.host],
		Agent2: true, ExtraQMP: true, QEMU: suite.MigQEMU(r.t).Command,
	}
	return r.startVM(s, cfg, incoming)
}

// startVM starts the side's QEMU; an incoming one waits for a migration.
func (r *rig) startVM(s *side, cfg harness.VMConfig, incoming bool) *side {
	r.t.Helper()
	if incoming {
		cfg.Incoming = "defer"
	}
	vm, err := harness.StartVM(r.ctx, cfg)
	if err != nil {
		r.t.Fatalf("starting QEMU %s: %v", s.name, err)
	}
	s.vm = vm
	r.t.Cleanup(func() {
		if r.t.Failed() {
			r.t.Logf("QEMU %s failure dump:\n%s", s.name, vm.Dump())
		}
		vm.Stop()
	})
	return s
}

// uri is where dst's QEMU listens for the migration: a TCP port on its
// host's address, reached from the other host across the LAN.
func (r *rig) uri(dst *side) string {
	return fmt.Sprintf("tcp:%s:%d", harness.HostIP(dst.host), 4400+int(dst.name[0]-'a'))
}

// sourceConfig writes the current server's query-config to a file and
// returns the flags that start a destination server with exactly it.
func (r *rig) sourceConfig() []string {
	r.t.Helper()
	raw, err := r.cur.srv.Ctl(r.ctx, map[string]any{"cmd": "query-config"})
	if err != nil {
		r.t.Fatal(err)
	}
	path := filepath.Join(r.dir, fmt.Sprintf("config-%d.json", r.n))
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		r.t.Fatal(err)
	}
	return []string{"--config", path}
}

// dest starts a destination side: a server with args (nil: the source's
// configuration) and a QEMU waiting for the migration.
func (r *rig) dest(args []string) *side {
	r.t.Helper()
	if args == nil && !r.builtin {
		args = r.sourceConfig()
	}
	return r.startSide(args, true)
}

// migResult is one run of `e1000e-vfu migrate`.
type migResult struct {
	code    int
	out     string // stdout and stderr
	summary struct {
		TotalMS     int64  `json:"total_ms"`
		DowntimeMS  int64  `json:"downtime_ms"`
		SetupMS     int64  `json:"setup_ms"`
		DeviceBytes uint64 `json:"device_bytes"`
		RAMBytes    uint64 `json:"ram_bytes"`
		DirtySyncs  uint64 `json:"dirty_syncs"`
	}
	took time.Duration
}

// migrate runs the orchestrator command from the current side to dst;
// extra flags are added (e.g. --dest-describe). The destination is checked
// on its server's control socket unless extra names another check.
func (r *rig) migrate(dst *side, extra ...string) migResult {
	r.t.Helper()
	if !slices.Contains(extra, "--dst-control") && !slices.Contains(extra, "--dest-describe") {
		extra = append(extra, "--dst-control", dst.srv.Control)
	}
	sum := filepath.Join(r.dir, fmt.Sprintf("summary-%s.json", dst.name))
	os.Remove(sum)
	args := append([]string{"migrate",
		"--src-control", r.cur.srv.Control,
		"--src-qmp", r.cur.vm.QMP2Path, "--dst-qmp", dst.vm.QMP2Path,
		"--uri", r.uri(dst),
		"--summary-json", sum, "--timeout", "4m",
	}, extra...)
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.ServerBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	res := migResult{out: out.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		r.t.Fatalf("e1000e-vfu migrate: %v", err)
	}
	if b, err := os.ReadFile(sum); err == nil {
		if err := json.Unmarshal(b, &res.summary); err != nil {
			r.t.Fatalf("summary %s: %v", b, err)
		}
	}
	os.WriteFile(filepath.Join(r.dir, fmt.Sprintf("migrate-%s.log", dst.name)), out.Bytes(), 0o644)
	return res
}

// mustMigrate migrates to dst, fails the test unless it completed, and
// makes dst the current side (the old one is stopped).
func (r *rig) mustMigrate(dst *side, extra ...string) migResult {
	r.t.Helper()
	res := r.migrate(dst, extra...)
	if res.code != 0 {
		r.t.Fatalf("migration %s→%s: exit %d\n%s", r.cur.name, dst.name, res.code, res.out)
	}
	r.t.Logf("migration %s→%s: total %d ms, downtime %d ms, device state %d bytes, RAM %.1f MiB, %d dirty syncs",
		r.cur.name, dst.name, res.summary.TotalMS, res.summary.DowntimeMS, res.summary.DeviceBytes,
		float64(res.summary.RAMBytes)/(1<<20), res.summary.DirtySyncs)
	r.adopt(dst)
	return res
}

// slowMigration starts migrating to dst at 1 MiB/s, which keeps the
// migration running long enough to try something during it, and returns
// once QEMU reports it active. The function it returns lifts the limit,
// waits for the migration to end, requires it to have succeeded (what
// names what was tried during it), adopts dst and checks the NIC there.
func (r *rig) slowMigration(ctx context.Context, dst *side, what string) (finish func()) {
	r.t.Helper()
	src := r.cur
	setBandwidth := func(bps int64) {
		r.t.Helper()
		if err := src.vm.QMP.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": bps}, nil); err != nil {
			r.t.Fatal(err)
		}
	}
	setBandwidth(1 << 20)
	done := make(chan migResult, 1)
	go func() { done <- r.migrate(dst) }()
	waitMigrationActive(r.t, ctx, src.vm.QMP)
	return func() {
		r.t.Helper()
		setBandwidth(1 << 30)
		var res migResult
		select {
		case res = <-done:
		case <-ctx.Done():
			r.t.Fatal("the migration did not end")
		}
		if res.code != 0 {
			r.t.Fatalf("migration after %s: exit %d\n%s", what, res.code, res.out)
		}
		r.adopt(dst)
		r.ping(3)
		r.checkDevice()
		r.checkDriver()
	}
}

// adopt makes dst, to which the guest migrated, the current side and stops
// the old one.
func (r *rig) adopt(dst *side) {
	old := r.cur
	dst.vm.Agent.FollowIDs(old.vm.Agent)
	dst.vm.Agent2.FollowIDs(old.vm.Agent2)
	r.cur = dst
	old.vm.Stop()
	if old.srv != nil {
		old.srv.Stop()
	}
}

// status is QEMU's run state.
func status(ctx context.Context, vm *harness.VM) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := vm.QMP.Execute(ctx, "query-status", nil, &st)
	return st.Status, err
}

func (r *rig) sh(cmdline string) string {
	r.t.Helper()
	out, err := r.cur.vm.Agent.Sh(r.ctx, time.Minute, cmdline)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// ping pings the host peer from the guest and fails unless all come back.
func (r *rig) ping(count int) { r.t.Helper(); r.pingFrom("the peer", hostIP, count) }

// pingFrom pings ip from the guest and fails unless all come back.
func (r *rig) pingFrom(what, ip string, count int) {
	r.t.Helper()
	out := r.sh(fmt.Sprintf("ping -c %d -i 0.2 -W 5 %s", count, ip))
	if !strings.Contains(out, fmt.Sprintf("%d packets received", count)) {
		r.t.Fatalf("ping %s (%s) on %s: %s", ip, what, r.cur.name, out)
	}
}

// driverTrouble is what the e1000e driver and the network stack log when
// the NIC stops working: a TX hang, a reset, a watchdog.
var driverTrouble = regexp.MustCompile(`(?i)hardware unit hang|reset adapter|NETDEV WATCHDOG|transmit queue \d+ timed out|e1000e.*(error|fail)`)

// checkDriver fails the test if the guest's kernel log shows the driver in
// trouble.
func (r *rig) checkDriver() {
	r.t.Helper()
	var bad []string
	for _, l := range strings.Split(r.sh("dmesg"), "\n") {
		if driverTrouble.MatchString(l) {
			bad = append(bad, l)
		}
	}
	if len(bad) > 0 {
		r.t.Errorf("guest on %s: the driver is in trouble:\n%s", r.cur.name, strings.Join(bad, "\n"))
	}
}

// checkDevice asserts that the current side's device is configured in QEMU
// (memory BARs mapped) and in the guest (memory and bus master enabled in
// its command register, read through sysfs).
func (r *rig) checkDevice() {
	r.t.Helper()
	dev, err := harness.QueryPCIDevice(r.ctx, r.cur.vm.QMP, "nic0")
	if err != nil {
		r.t.Fatal(err)
	}
	if !dev.MemoryBARsMapped() {
		r.t.Errorf("QEMU %s: the NIC's memory BARs are not mapped: %+v", r.cur.name, dev.Regions)
	}
	cmd := r.guestCommand()
	if cmd&0x6 != 0x6 {
		r.t.Errorf("guest on %s: NIC command register %#04x, want memory and bus master on", r.cur.name, cmd)
	}
}

// guestCommand reads the NIC's PCI command register as the guest sees it.
func (r *rig) guestCommand() uint16 {
	r.t.Helper()
	out := strings.TrimSpace(r.sh("for d in /sys/bus/pci/devices/*; do [ \"$(cat $d/device)\" = 0x10d3 ] && hexdump -s 4 -n 2 -e '1/2 \"%u\\n\"' $d/config; done; true"))
	var v uint16
	if _, err := fmt.Sscan(out, &v); err != nil {
		r.t.Fatalf("the NIC's command register: %q: %v", out, err)
	}
	return v
}

// lastLine is the last line of s, for logs.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
