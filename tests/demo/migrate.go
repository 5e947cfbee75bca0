package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"e1000e-vfu/tests/harness"
)

// liveMigration is the demo's last act: the running guest moves from QEMU A
// + server A on host 0 to QEMU B + server B on host 1 while a TCP stream
// flows into it. Server B starts with server A's configuration
// (query-config, then serve --config); `e1000e-vfu migrate` checks it,
// drives both QEMUs and prints its progress and summary; server B announces
// the guest's address through host 1's bridge, so the LAN's switch sends
// the stream there, and the stream completes on B. The guest only
// receives: without the announcement nothing would tell the switch it
// moved.
// The stream that runs across the migration: 32 MiB at 32 Mbit/s, so it
// lasts 8 s, several times what a migration takes here.
const (
	streamSize = 32 << 20
	streamRate = 4 << 20 // bytes a second
)

type liveMigration struct {
	bin, dir  string
	cache     *harness.Cache
	qemu      *harness.MigQEMU
	initramfs string
	hosts     *harness.Hosts
	srv       *harness.Server
	vm        *harness.VM
	size      int64
}

func (m liveMigration) run(ctx context.Context) error {
	say("live migration: QEMU A + server A → QEMU B + server B, with a TCP stream running")
	raw, err := m.srv.Ctl(ctx, map[string]any{"cmd": "query-config"})
	if err != nil {
		return err
	}
	conf := filepath.Join(m.dir, "source-config.json")
	if err := os.WriteFile(conf, raw, 0o644); err != nil {
		return err
	}
	say("server A's configuration (query-config): %s", strings.TrimSpace(string(raw)))
	bdir := filepath.Join(m.dir, "b")
	if err := m.hosts.AddTAP(1, "tap-b"); err != nil {
		return err
	}
	srvB, err := harness.StartServer(ctx, harness.ServerConfig{
		Bin: m.bin, Dir: bdir, Netdev: "tap,ifname=tap-b", NetNS: m.hosts.Host[1], Args: []string{"--config", conf},
	})
	if err != nil {
		return err
	}
	defer func() {
		err := srvB.Stop()
		say("server B stopped (exit: %v)", errOrOK(err))
	}()
	say("server B on host 1: serve --config %s --netdev tap,ifname=tap-b (pid %d)", filepath.Base(conf), srvB.Pid())
	vmB, err := harness.StartVM(ctx, harness.VMConfig{
		Cache: m.cache, Initramfs: m.initramfs, Dir: filepath.Join(bdir, "vm"),
		NIC:   harness.NIC{Kind: harness.VFIOUser, Socket: srvB.Socket},
		NetNS: m.hosts.Host[1],
		QEMU:  m.qemu.Command, ExtraQMP: true, Incoming: "defer",
	})
	if err != nil {
		return err
	}
	defer func() {
		vmB.Stop()
		say("QEMU B stopped")
	}()
	say("QEMU B (pid %d) waits for the guest (-incoming defer)", vmB.Pid())

	// A host → guest stream, begun on A and answered by the guest on B.
	// It is paced so that it is sure to run across the migration, however
	// fast the link is.
	l, err := m.hosts.LAN.Listen("tcp", harness.PeerIP+":0")
	if err != nil {
		return err
	}
	defer l.Close()
	seed := uint64(time.Now().UnixNano())
	type peer struct {
		x   harness.Transfer
		err error
	}
	var sent atomic.Int64
	fed := make(chan peer, 1)
	go func() {
		x, err := harness.SourcePaced(l, streamSize, seed, streamRate, &sent, 5*time.Minute)
		fed <- peer{x, err}
	}()
	id, err := m.vm.Agent.Begin(5*time.Minute, "recv", l.Addr().String())
	if err != nil {
		return err
	}
	say("TCP host → guest: %d MiB at %d Mbit/s (%d s); migrating once 2 MiB went through", streamSize>>20, streamRate*8>>20, streamSize/streamRate)
	for sent.Load() < 2<<20 {
		select {
		case p := <-fed:
			return fmt.Errorf("the stream ended before the migration: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}

	uri := fmt.Sprintf("tcp:%s:4444", harness.HostIP(1))
	cmd := exec.CommandContext(ctx, m.bin, "migrate",
		"--src-control", m.srv.Control, "--dst-control", srvB.Control,
		"--src-qmp", m.vm.QMP2Path, "--dst-qmp", vmB.QMP2Path,
		"--uri", uri)
	say("$ %s migrate --src-control A --dst-control B --src-qmp A --dst-qmp B --uri %s", filepath.Base(m.bin), uri)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(io.LimitReader(out, 1<<20))
	for sc.Scan() {
		say("  | %s", sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("e1000e-vfu migrate: %w", err)
	}

	atEnd := sent.Load()
	if atEnd >= streamSize {
		return fmt.Errorf("the host had sent the whole stream before the migration ended: it did not run across it")
	}
	say("%.1f of %d MiB had been sent when the migration ended; the rest goes to the guest on host 1", float64(atEnd)/(1<<20), streamSize>>20)
	vmB.Agent.FollowIDs(m.vm.Agent)
	rp, err := vmB.Agent.Await(ctx, id, 5*time.Minute)
	if err != nil {
		return err
	}
	p := <-fed
	if p.err != nil {
		return p.err
	}
	want := harness.StreamSHA256(streamSize, seed)
	if rp.Data["sha256"] != want || p.x.SHA256 != want {
		return fmt.Errorf("the stream across the migration differs: guest %v, host %s, want %s", rp.Data["sha256"], p.x.SHA256, want)
	}
	secs, _ := rp.Data["seconds"].(float64)
	say("TCP host → guest across the migration: %d MiB in %.1f s, SHA-256 equal at both ends; the guest answered from QEMU B", streamSize>>20, secs)
	if raw, err := srvB.Ctl(ctx, map[string]any{"cmd": "query-stats"}); err == nil {
		var st struct {
			Announce struct {
				Rounds uint64 `json:"rounds"`
				Frames uint64 `json:"frames"`
			} `json:"announce"`
		}
		if json.Unmarshal(raw, &st) == nil {
			say("server B announced the guest's address after the switch-over: %d rounds, %d RARP frames through host 1's bridge, which a guest that only receives could not have told",
				st.Announce.Rounds, st.Announce.Frames)
		}
	}
	m.vm.Stop()
	m.srv.Stop()
	say("QEMU A and server A stopped; the guest runs on B")
	res, err := harness.TCPTransfer(ctx, m.hosts.LAN, vmB.Agent, harness.PeerIP, true, m.size)
	if err != nil {
		return err
	}
	say("TCP guest → host on B: %d MiB in %.1f s = %.1f Mbit/s, SHA-256 equal", m.size>>20, res.Seconds, res.Mbps())
	out2, err := vmB.Agent.Sh(ctx, time.Minute, "ping -c 3 -W 5 "+harness.PeerIP+" | tail -n 2; echo \"driver hang or reset messages in dmesg: $(dmesg | grep -ciE 'hardware unit hang|reset adapter|NETDEV WATCHDOG')\"")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimSpace(out2), "\n") {
		say("on B: %s", l)
	}
	return nil
}
