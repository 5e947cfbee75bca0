//go:build integration

package migration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// The guest's second network: a LAN of its own (a second harness.Hosts,
// so separate namespaces and bridges), addressed in another subnet than
// the first so that the guest routes each peer through its own NIC.
const (
	net2MAC     = "52:54:00:12:34:58" // our second NIC (eth1)
	net2GuestIP = "10.0.4.15"
	net2PeerIP  = "10.0.4.2"
)

// QEMU's built-in e1000e (eth2): on the first network's host bridge, as a
// TAP QEMU opens itself, in a subnet of its own on that LAN.
const (
	builtinMAC     = "52:54:00:12:34:60"
	builtinGuestIP = "10.0.6.15"
	builtinPeerIP  = "10.0.6.2"
)

// multiNIC is what the test keeps of the NICs the rig does not know:
// each side's second server, on the side's host of the second network.
type multiNIC struct {
	t     testing.TB
	ctx   context.Context
	net2  *harness.Hosts
	srv   map[string]*harness.Server // the second server of each side
	cur   *harness.Server            // the second server the guest uses now
	confs int
}

// nics starts side s's second server (with the source's configuration,
// MAC included, on an incoming side) and adds the built-in NIC's TAP to
// the side's host on the first network: QEMU runs there and opens it.
func (m *multiNIC) nics(r *rig, s *side, incoming bool) []harness.NIC {
	m.t.Helper()
	tap := "tap-" + s.name
	if err := m.net2.AddTAP(s.host, tap); err != nil {
		m.t.Fatal(err)
	}
	// StartServer passes --mac ServerMAC first; a later --mac wins (the
	// flag package keeps the last value), and a destination started from
	// the source's query-config must name the same MAC or none.
	args := []string{"--mac", net2MAC}
	if incoming {
		args = append(m.sourceConfig(), args...)
	}
	srv, err := harness.StartServer(m.ctx, harness.ServerConfig{
		Bin: suite.ServerBin, Dir: filepath.Join(r.dir, s.name+"-net2"), Netdev: "tap,ifname=" + tap,
		NetNS: m.net2.Host[s.host], Args: args,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	m.srv[s.name] = srv
	if !incoming {
		m.cur = srv
	}
	srv.StopAtEnd(m.t, "server "+s.name+" (second network)", 6144)
	btap := "tapb-" + s.name
	if err := r.hosts.AddTAP(s.host, btap); err != nil {
		m.t.Fatal(err)
	}
	return []harness.NIC{
		{Kind: harness.VFIOUser, Socket: srv.Socket},
		{Kind: harness.BuiltinE1000E, MAC: builtinMAC,
			Netdev: "tap,id=n2,ifname=" + btap + ",script=no,downscript=no"},
	}
}

// sourceConfig is the current second server's query-config, as
// `serve --config` flags.
func (m *multiNIC) sourceConfig() []string {
	m.t.Helper()
	raw, err := m.cur.Ctl(m.ctx, map[string]any{"cmd": "query-config"})
	if err != nil {
		m.t.Fatal(err)
	}
	m.confs++
	path := filepath.Join(filepath.Dir(filepath.Dir(m.cur.Socket)), fmt.Sprintf("config-net2-%d.json", m.confs))
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		m.t.Fatal(err)
	}
	return []string{"--config", path}
}

// A guest with two of our NICs, each on its own network, and QEMU's
// built-in e1000e as a third moves from host 0 to host 1 while a
// host→guest TCP stream runs on each of our NICs and both peers ping the
// guest: both streams arrive whole, both devices' state moved (QEMU's
// total, and each destination server's log), and on the destination every
// interface works and the driver reports nothing.
func TestMigrateMultiNIC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	net2, err := harness.NewHosts(fmt.Sprintf("evfu-n%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("second network's MAC tables: LAN switch:\n%s\nhost 0:\n%s\nhost 1:\n%s", net2.FDB(-1), net2.FDB(0), net2.FDB(1))
		}
		if err := net2.Close(); err != nil {
			t.Errorf("removing the second network: %v", err)
		}
	})
	// Each LAN's peer gets an address in its guest NIC's subnet.
	if err := net2.LAN.IP("addr", "add", net2PeerIP+"/24", "dev", "lan0"); err != nil {
		t.Fatal(err)
	}
	m := &multiNIC{t: t, ctx: ctx, net2: net2, srv: map[string]*harness.Server{}}
	r := newRig(t, ctx, rigOpts{moreNICs: m.nics})
	if err := r.ns.IP("addr", "add", builtinPeerIP+"/24", "dev", "lan0"); err != nil {
		t.Fatal(err)
	}

	// Name the guest's interfaces by MAC: the rig configured eth0 as ours.
	ifs := r.guestIfaces()
	if ifs[strings.ToLower(harness.ServerMAC)] != "eth0" {
		t.Fatalf("eth0 is not the first of our NICs: interfaces by MAC %v", ifs)
	}
	eth1, eth2 := ifs[net2MAC], ifs[builtinMAC]
	if eth1 == "" || eth2 == "" {
		t.Fatalf("the guest lacks a NIC: interfaces by MAC %v", ifs)
	}
	// eth0 and the built-in NIC share a LAN: each answers ARP only for
	// its own address, or the peer could learn the wrong NIC's MAC.
	r.sh(fmt.Sprintf("for c in %[1]s %[2]s; do echo 1 > /proc/sys/net/ipv6/conf/$c/disable_ipv6; done; "+
		"for c in all eth0 %[1]s %[2]s; do echo 1 > /proc/sys/net/ipv4/conf/$c/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$c/arp_announce; done; "+
		"ip link set %[1]s up && ip addr add %[3]s/24 dev %[1]s && ip link set %[2]s up && ip addr add %[4]s/24 dev %[2]s",
		eth1, eth2, net2GuestIP, builtinGuestIP))
	for _, i := range []string{eth1, eth2} {
		if _, err := r.cur.vm.Agent.Call(ctx, 30*time.Second, "wait-link", i, "up"); err != nil {
			t.Fatalf("%v\n%s", err, r.sh("ip link show; dmesg | tail -n 20"))
		}
	}
	peers := []struct{ name, iface, ip string }{
		{"our NIC on network 1", "eth0", hostIP},
		{"our NIC on network 2", eth1, net2PeerIP},
		{"built-in e1000e", eth2, builtinPeerIP},
	}
	for _, p := range peers {
		r.pingFrom(p.name, p.ip, 3)
	}
	srcCfg2, err := m.cur.Ctl(ctx, map[string]any{"cmd": "query-config"})
	if err != nil {
		t.Fatal(err)
	}

	dst := r.dest(nil) // the hook starts the second server from its source's configuration
	// The orchestrator checks and reports one NIC (nic0's control
	// sockets); QEMU migrates every device. The second destination's
	// configuration is compared here instead.
	dstCfg2, err := m.srv[dst.name].Ctl(ctx, map[string]any{"cmd": "query-config"})
	if err != nil {
		t.Fatal(err)
	}
	if string(dstCfg2) != string(srcCfg2) {
		t.Fatalf("second NIC: destination configuration %s, source's %s", dstCfg2, srcCfg2)
	}

	tcp1, err := startTCPAt(r.ns, r.cur.vm.Agent, hostIP, streamSize, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tcp2, err := startTCPAt(net2.LAN, r.cur.vm.Agent2, net2PeerIP, streamSize, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*tcpFlow{tcp1, tcp2} {
		if err := f.waitSent(ctx, 2<<20); err != nil {
			t.Fatal(err)
		}
	}
	// Pings from each peer to the guest across the migration (15 s).
	var pings [2]*peerPing
	for i, x := range []struct {
		ns *harness.NetNS
		ip string
	}{{r.ns, guestIP}, {net2.LAN, net2GuestIP}} {
		if pings[i], err = startPeerPing(x.ns, x.ip, 150); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)

	src1, src2 := r.cur.srv, m.cur
	begun := time.Now()
	res := r.mustMigrate(dst)
	ended := time.Now()
	atEnd := [2]int64{tcp1.sent.Load(), tcp2.sent.Load()}
	m.cur = m.srv[dst.name]
	wrote := [2]chan time.Duration{sentAll(tcp1, ended), sentAll(tcp2, ended)}
	src2.Stop()
	for i, f := range []*tcpFlow{tcp1, tcp2} {
		if atEnd[i] >= f.size {
			t.Errorf("stream %d: the host had sent it whole before the migration ended: it did not run across it", i+1)
		}
	}
	if res.summary.DeviceBytes == 0 {
		t.Errorf("no device state moved (query-migrate's vfio.transferred is 0)")
	}
	// Each destination server logs the device state it loaded.
	var loaded [2]int
	for i, srv := range []*harness.Server{r.cur.srv, m.cur} {
		loaded[i] = stateBytesReceived(srv.Log())
		if loaded[i] == 0 {
			t.Errorf("destination server %d: no \"migration: state change\" line with state_bytes_received in its log:\n%s", i+1, srv.LogTail(4096))
		}
	}
	t.Logf("device state: %d bytes in QEMU's vfio total; loaded by the destination servers: %d (network 1) and %d (network 2)",
		res.summary.DeviceBytes, loaded[0], loaded[1])
	checkP2POrder(t, [2]string{src1.Log(), src2.Log()}, [2]string{r.cur.srv.Log(), m.cur.Log()})

	for i, x := range []struct {
		f     *tcpFlow
		agent *harness.Agent
	}{{tcp1, r.cur.vm.Agent}, {tcp2, r.cur.vm.Agent2}} {
		secs, err := x.f.finish(ctx, x.agent, 5*time.Minute)
		if err != nil {
			t.Errorf("stream on network %d: %v", i+1, err)
			continue
		}
		t.Logf("network %d: TCP stream of %d MiB whole (SHA-256 equal) in %.1f s; %.1f MiB had been sent when the migration ended (%.1f s after it began), the rest in %v; the host's longest pause between writes %v",
			i+1, x.f.size>>20, secs, float64(atEnd[i])/(1<<20), ended.Sub(begun).Seconds(),
			(<-wrote[i]).Round(100*time.Millisecond), x.f.maxPause.Round(time.Millisecond))
	}
	for i, p := range pings {
		sent, got, err := p.wait()
		if err != nil {
			t.Errorf("network %d: peer's ping: %v", i+1, err)
			continue
		}
		t.Logf("network %d: the peer's pings across the migration: %d sent, %d answered", i+1, sent, got)
		if sent-got > 20 {
			t.Errorf("network %d: %d of the peer's %d pings lost across the migration, want at most 20", i+1, sent-got, sent)
		}
	}

	// On the destination: every device configured, every link up, every
	// peer reached through its own NIC, and nothing in the driver's log.
	for _, id := range []string{"nic0", "nic1", "nic2"} {
		dev, err := harness.QueryPCIDevice(ctx, r.cur.vm.QMP, id)
		if err != nil {
			t.Fatal(err)
		}
		if !dev.MemoryBARsMapped() {
			t.Errorf("QEMU %s: %s's memory BARs are not mapped: %+v", r.cur.name, id, dev.Regions)
		}
	}
	for _, p := range peers {
		if st := strings.TrimSpace(r.sh("cat /sys/class/net/" + p.iface + "/operstate")); st != "up" {
			t.Errorf("%s (%s): link %s on the destination", p.name, p.iface, st)
		}
		if cmd := r.ifaceCommand(p.iface); cmd&0x6 != 0x6 {
			t.Errorf("%s (%s): PCI command register %#04x, want memory and bus master on", p.name, p.iface, cmd)
		}
		r.pingFrom(p.name, p.ip, 3)
	}
	r.checkDriver()
}

// sentAll reports how long after since the host had written all of f.
func sentAll(f *tcpFlow, since time.Time) chan time.Duration {
	c := make(chan time.Duration, 1)
	go func() {
		for f.sent.Load() < f.size && time.Since(since) < 5*time.Minute {
			time.Sleep(20 * time.Millisecond)
		}
		c <- time.Since(since)
	}()
	return c
}

// guestIfaces maps the guest's MAC addresses to their interfaces.
func (r *rig) guestIfaces() map[string]string {
	r.t.Helper()
	ifs := map[string]string{}
	for _, l := range strings.Split(r.sh(`for i in /sys/class/net/eth*; do echo "$(cat $i/address) ${i##*/}"; done`), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			ifs[strings.ToLower(f[0])] = f[1]
		}
	}
	return ifs
}

// ifaceCommand reads the PCI command register of the NIC behind iface as
// the guest sees it.
func (r *rig) ifaceCommand(iface string) uint16 {
	r.t.Helper()
	out := strings.TrimSpace(r.sh("hexdump -s 4 -n 2 -e '1/2 \"%u\\n\"' /sys/class/net/" + iface + "/device/config"))
	v, err := strconv.ParseUint(out, 10, 16)
	if err != nil {
		r.t.Fatalf("%s's command register: %q: %v", iface, out, err)
	}
	return uint16(v)
}

// peerPing is a ping from a LAN's peer to the guest, run in the
// background: ICMP echo requests on a raw socket in the peer's namespace
// (the hosts need no ping program), their replies counted by sequence.
type peerPing struct {
	c    net.PacketConn
	ip   net.IP
	id   uint16
	sent int
	mu   sync.Mutex
	got  map[uint16]bool
	done chan error
}

// startPeerPing pings ip from ns count times, every 0.1 s.
func startPeerPing(ns *harness.NetNS, ip string, count int) (*peerPing, error) {
	c, err := ns.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, err
	}
	p := &peerPing{c: c, ip: net.ParseIP(ip), id: uint16(os.Getpid()), got: map[uint16]bool{}, done: make(chan error, 1)}
	go p.read()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for seq := range count {
			<-tick.C
			msg := []byte{8, 0, 0, 0, byte(p.id >> 8), byte(p.id), byte(seq >> 8), byte(seq), 'e', 'v', 'f', 'u'}
			sum := icmpChecksum(msg)
			msg[2], msg[3] = byte(sum>>8), byte(sum)
			if _, err := c.WriteTo(msg, &net.IPAddr{IP: p.ip}); err != nil {
				p.done <- err
				return
			}
			p.sent++
		}
		p.done <- nil
	}()
	return p, nil
}

// read counts the echo replies from the guest to this ping.
func (p *peerPing) read() {
	b := make([]byte, 1500)
	for {
		n, from, err := p.c.ReadFrom(b)
		if err != nil {
			return
		}
		// The socket reads ICMP messages, the IPv4 header stripped.
		if n < 8 || b[0] != 0 || !from.(*net.IPAddr).IP.Equal(p.ip) || uint16(b[4])<<8|uint16(b[5]) != p.id {
			continue
		}
		p.mu.Lock()
		p.got[uint16(b[6])<<8|uint16(b[7])] = true
		p.mu.Unlock()
	}
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// wait waits for the last request, gives its reply 2 s, and returns how
// many requests went out and how many were answered.
func (p *peerPing) wait() (sent, got int, err error) {
	err = <-p.done
	time.Sleep(2 * time.Second)
	p.c.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, len(p.got), err
}

var stateReceived = regexp.MustCompile(`migration: state change.*state_bytes_received=(\d+)`)

// stateBytesReceived sums the device-state bytes a server's log says it
// loaded.
func stateBytesReceived(log string) int {
	n := 0
	for _, m := range stateReceived.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// checkP2POrder checks, from the servers' logs, the order in which QEMU
// moved the two devices, which the P2P states exist for: on the source both
// devices reach a P2P state (they still run, but start no peer-to-peer DMA)
// before either is stopped for its final save, and on the destination both
// leave RESUMING for RUNNING_P2P before either runs. It logs the timeline.
func checkP2POrder(t *testing.T, srcLogs, dstLogs [2]string) {
	t.Helper()
	type ev struct {
		dev int
		stateChange
	}
	var timeline []ev
	firstInto := func(logs [2]string, to string) (at [2]time.Time) {
		for d, l := range logs {
			for _, c := range stateChanges(l) {
				if c.to == to && at[d].IsZero() {
					at[d] = c.began
				}
			}
		}
		return at
	}
	// The migration starts when the destinations enter RESUMING; what the
	// sources did before (their own start) is not part of it.
	resuming := earliest(firstInto(dstLogs, "RESUMING"))
	for d, l := range append(srcLogs[:], dstLogs[:]...) {
		for _, c := range stateChanges(l) {
			if !c.began.Before(resuming) {
				timeline = append(timeline, ev{d, c})
			}
		}
	}
	sort.Slice(timeline, func(i, j int) bool { return timeline[i].began.Before(timeline[j].began) })
	var b strings.Builder
	for _, e := range timeline {
		side := "source"
		if e.dev >= 2 {
			side = "destination"
		}
		fmt.Fprintf(&b, "  %s  %s NIC %d: %s → %s (%v)\n", e.began.Format("15:04:05.000000"), side, e.dev%2+1, e.from, e.to, e.took)
	}
	t.Logf("the two NICs' state changes:\n%s", b.String())
	// firstInto takes each log's first arc into a state: the sources
	// reach PRE_COPY_P2P and STOP_COPY, the destinations RUNNING_P2P and
	// RUNNING, only in this migration.
	inOrder := func(side, first, then string, logs [2]string) {
		a, b := firstInto(logs, first), firstInto(logs, then)
		for d := range 2 {
			if a[d].IsZero() || b[d].IsZero() {
				t.Errorf("%s NIC %d: no %s or no %s in its log", side, d+1, first, then)
				return
			}
		}
		if !latest(a).Before(earliest(b)) {
			t.Errorf("%s: a NIC entered %s (%v) before both were in %s (%v)", side, then, earliest(b), first, latest(a))
		}
	}
	inOrder("source", "PRE_COPY_P2P", "STOP_COPY", srcLogs)
	inOrder("destination", "RUNNING_P2P", "RUNNING", dstLogs)
}

func latest(t [2]time.Time) time.Time {
	if t[0].After(t[1]) {
		return t[0]
	}
	return t[1]
}

func earliest(t [2]time.Time) time.Time {
	if t[0].Before(t[1]) {
		return t[0]
	}
	return t[1]
}
