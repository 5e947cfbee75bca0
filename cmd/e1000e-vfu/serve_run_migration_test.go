package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device"
	"e1000e-vfu/device/announce"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/migration/driver"
)

// migPair is a source and a destination server, each with its stream
// peer, started as an orchestrator would: the destination with the
// source's query-config as --config and the source's MAC.
type migPair struct {
	src, dst         *proc
	srcCtl, dstCtl   string
	srcSock, dstSock string
	srcPeer, dstPeer net.Conn
	mac              net.HardwareAddr
	srcConfig        string
}

func startPair(t *testing.T, srcArgs []string, dstConfig func(srcConfig string) []string) *migPair {
	t.Helper()
	dir := t.TempDir()
	p := &migPair{
		srcSock: filepath.Join(dir, "src.sock"), dstSock: filepath.Join(dir, "dst.sock"),
		srcCtl: filepath.Join(dir, "src.ctl"), dstCtl: filepath.Join(dir, "dst.ctl"),
	}
	p.mac, _ = net.ParseMAC("52:54:00:ab:cd:ef")
	peer := func(s *proc, path string) net.Conn {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s.waitLog("stream peer connected", 5*time.Second)
		return c
	}
	srcNet := filepath.Join(dir, "src.net")
	p.src = startServe(t, append([]string{"--socket", p.srcSock, "--mac", p.mac.String(),
		"--netdev", "stream,path=" + srcNet + ",server=on", "--control", p.srcCtl}, srcArgs...)...)
	p.src.waitLog("msg=serving", 10*time.Second)
	p.srcPeer = peer(p.src, srcNet)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := control.Call(ctx, p.srcCtl, control.Request{Cmd: control.CmdQueryConfig})
	if err != nil {
		t.Fatal(err)
	}
	p.srcConfig = string(res)

	dstNet := filepath.Join(dir, "dst.net")
	p.dst = startServe(t, append([]string{"--socket", p.dstSock, "--mac", p.mac.String(),
		"--netdev", "stream,path=" + dstNet + ",server=on", "--control", p.dstCtl}, dstConfig(p.srcConfig)...)...)
	p.dst.waitLog("msg=serving", 10*time.Second)
	p.dstPeer = peer(p.dst, dstNet)
	return p
}

func (p *migPair) stop(t *testing.T) {
	t.Helper()
	for _, s := range []*proc{p.src, p.dst} {
		if code := s.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("exit status %d after SIGTERM", code)
		}
	}
	gone(t, p.srcSock)
	gone(t, p.dstSock)
}

func status(t *testing.T, ctl string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := control.Call(ctx, ctl, control.Request{Cmd: control.CmdQueryStatus})
	if err != nil {
		t.Fatal(err)
	}
	// The goroutine count and the heap vary (the heap is 0 until the
	// first collection); that the count is reported is what counts.
	var st control.Status
	if err := json.Unmarshal(res, &st); err != nil || st.Goroutines <= 0 {
		t.Fatalf("query-status %s: %v, want a goroutine count", res, err)
	}
	st.Goroutines, st.HeapLiveBytes = 0, 0
	out, _ := json.Marshal(st)
	return string(out)
}

// A NIC that moved frames both ways migrates through v2 to a second server
// started with the source's configuration, and carries on there: its rings
// continue at the next descriptor, frames reach the destination's network
// and arrive from it.
func TestServeMigrationV2(t *testing.T) {
	p := startPair(t, []string{"--param", "rx-filter-size=4"},
		func(cfg string) []string { return []string{"--config", cfg} })
	if !strings.Contains(p.srcConfig, `"rx-filter-size":4`) {
		t.Fatalf("source configuration %s", p.srcConfig)
	}
	p.migrateAndContinue(t, driver.MigrateV2)
}

// The same through the legacy v1 region, its data area mapped.
func TestServeMigrationV1(t *testing.T) {
	p := startPair(t, []string{"--migration-v1", "mmap"},
		func(cfg string) []string { return []string{"--config", cfg, "--migration-v1", "mmap"} })
	p.migrateAndContinue(t, driver.MigrateV1)
}

func (p *migPair) migrateAndContinue(t *testing.T, migrate func(src, dst driver.Endpoint, opts driver.Options) (driver.Report, error)) {
	t.Helper()
	ga := connect(t, p.srcSock, 5*time.Second)
	ga.setup()
	out1 := testFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}, 1)
	ga.transmit(out1)
	if got, err := readStreamFrame(p.srcPeer, 5*time.Second); err != nil || !bytes.Equal(got, out1) {
		t.Fatalf("source peer: %x, %v", got, err)
	}
	in1 := testFrame(p.mac, 2)
	desc, buf := ga.postRX()
	if err := writeStreamFrame(p.srcPeer, in1); err != nil {
		t.Fatal(err)
	}
	ga.waitRX(desc, buf, in1)

	gb := connect(t, p.dstSock, 5*time.Second)
	gb.mapMemory()
	rep, err := migrate(
		driver.Endpoint{Client: ga.c, Mem: ga.mem.Data, IOVA: memBase},
		driver.Endpoint{Client: gb.c, Mem: gb.mem.Data, IOVA: memBase},
		driver.Options{})
	if err != nil {
		t.Fatalf("migration: %v", err)
	}
	if rep.StateBytes == 0 {
		t.Errorf("report %+v: no state moved", rep)
	}
	if s := status(t, p.srcCtl); s != `{"state":"running","migration":"STOP"}` {
		t.Errorf("source status after migration: %s", s)
	}
	if s := status(t, p.dstCtl); s != `{"state":"running"}` {
		t.Errorf("destination status after migration: %s", s)
	}

	// Running again, the destination announces the guest's address to
	// its network before the guest sends anything.
	var mac [6]byte
	copy(mac[:], p.mac)
	rarp := announce.AppendRARP(nil, announce.Address{MAC: mac})
	if got, err := readStreamFrame(p.dstPeer, 5*time.Second); err != nil || !bytes.Equal(got, rarp) {
		t.Fatalf("destination peer after migration: %x, %v; want the announcement %x", got, err, rarp)
	}
	p.dst.waitLog("reason=migration addresses=1 tagged=0 rounds=5", 5*time.Second)
	if strings.Contains(p.src.log.String(), "msg=announcing") {
		t.Error("the source announced itself")
	}

	// QEMU restores config space and interrupts on the destination.
	gb.enablePCI()
	gb.txN, gb.rxN = ga.txN, ga.rxN
	if h, tl := gb.rd(e1000e.TDH0), gb.rd(e1000e.TDT0); h != 1 || tl != 1 {
		t.Fatalf("destination TDH %d TDT %d, want 1 1 as the source left them", h, tl)
	}
	out2 := testFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}, 3)
	gb.transmit(out2)
	// The later rounds may come first.
	got, err := readStreamFrame(p.dstPeer, 5*time.Second)
	for err == nil && bytes.Equal(got, rarp) {
		got, err = readStreamFrame(p.dstPeer, 5*time.Second)
	}
	if err != nil || !bytes.Equal(got, out2) {
		t.Fatalf("destination peer: %x, %v", got, err)
	}
	in2 := testFrame(p.mac, 4)
	desc, buf = gb.postRX()
	if err := writeStreamFrame(p.dstPeer, in2); err != nil {
		t.Fatal(err)
	}
	gb.waitRX(desc, buf, in2)
	p.stop(t)
}

// --migration-v1 decides whether the v1 region (index 9) exists and
// whether its data area is offered for mmap.
func TestServeMigrationV1Flag(t *testing.T) {
	for _, tc := range []struct {
		mode       string
		size, mmap bool
	}{{"off", false, false}, {"on", true, false}, {"mmap", true, true}} {
		sock := filepath.Join(t.TempDir(), "vfu.sock")
		s := startServe(t, "--socket", sock, "--migration-v1", tc.mode)
		s.waitLog("msg=serving", 10*time.Second)
		g := connect(t, sock, 5*time.Second)
		ri, _, f, err := g.c.RegionInfo(device.RegionMigration)
		if f != nil {
			f.Close()
		}
		if tc.size && (err != nil || ri.Size == 0) || !tc.size && err == nil && ri.Size != 0 {
			t.Errorf("--migration-v1 %s: region 9 %+v, %v", tc.mode, ri, err)
		}
		if got := err == nil && ri.Flags&uint32(device.RegionMMap) != 0; got != tc.mmap {
			t.Errorf("--migration-v1 %s: region 9 flags %#x, mmap %v, want %v", tc.mode, ri.Flags, got, tc.mmap)
		}
		g.close()
		if code := s.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("--migration-v1 %s: exit %d", tc.mode, code)
		}
	}
	r := runBinary(t, "", "serve", "--socket", filepath.Join(t.TempDir(), "s"), "--migration-v1", "yes")
	if r.code != 2 || !strings.Contains(r.stderr, `--migration-v1 "yes": want off, on or mmap`) {
		t.Errorf("bad --migration-v1: %+v", r)
	}
}

// --migration-p2p decides whether the device offers the P2P states (on
// by default), and the startup line mentions it only when it is off.
func TestServeMigrationP2PFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		p2p  bool
	}{{nil, true}, {[]string{"--migration-p2p", "on"}, true}, {[]string{"--migration-p2p", "off"}, false}} {
		name := strings.Join(append([]string{"default"}, tc.args...), " ")
		sock := filepath.Join(t.TempDir(), "vfu.sock")
		s := startServe(t, append([]string{"--socket", sock}, tc.args...)...)
		start := s.waitLog("msg=serving", 10*time.Second)
		if got := strings.Contains(start, "migration-p2p=off"); got == tc.p2p {
			t.Errorf("%s: startup line %q", name, start)
		}
		g := connect(t, sock, 5*time.Second)
		flags, err := g.c.MigrationFlags()
		if err != nil || (flags&device.MigFlagP2P != 0) != tc.p2p {
			t.Errorf("%s: MIGRATION flags %#x, %v; want P2P=%v", name, flags, err, tc.p2p)
		}
		_, err = g.c.SetMigrationState(device.MigRunningP2P)
		if (err == nil) != tc.p2p {
			t.Errorf("%s: RUNNING→RUNNING_P2P: %v", name, err)
		}
		g.close()
		if code := s.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("%s: exit %d", name, code)
		}
	}
}

// A destination whose configuration differs refuses the stream before
// anything is applied, and the log names the parameter.
func TestServeMigrationRefused(t *testing.T) {
	p := startPair(t, []string{"--param", "rx-filter-size=4"},
		func(string) []string { return nil }) // the default, rx-filter-size=16
	ga := connect(t, p.srcSock, 5*time.Second)
	ga.setup()
	gb := connect(t, p.dstSock, 5*time.Second)
	gb.mapMemory()
	_, err := driver.MigrateV2(
		driver.Endpoint{Client: ga.c, Mem: ga.mem.Data, IOVA: memBase},
		driver.Endpoint{Client: gb.c, Mem: gb.mem.Data, IOVA: memBase},
		driver.Options{})
	if err == nil {
		t.Fatal("a destination with rx-filter-size=16 took a stream of rx-filter-size=4")
	}
	p.dst.waitLog("source runs rx-filter-size=4", 5*time.Second)
	if s := status(t, p.dstCtl); !strings.Contains(s, `"migration":"RESUMING"`) {
		t.Errorf("destination status after the refusal: %s, want still RESUMING", s)
	}
	p.stop(t)
}
