//go:build integration

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// Backend kinds a rig can give the NIC.
const (
	backendTAP    = "tap"
	backendStream = "stream"
)

// rig is one guest with one NIC joined to a namespace whose tap0 is the
// host-side peer at hostIP, directly (TAP backend) or through a relay
// (stream backend).
type rig struct {
	t      *testing.T
	ctx    context.Context
	kind   string
	dir    string
	ns     *harness.NetNS
	srv    *harness.Server
	vm     *harness.VM
	relay  *harness.Relay
	g      guest
	stream string // the stream backend's socket path
	vlan   uint16
}

type rigOpts struct {
	backend    string // backendTAP when empty
	kernelArgs string
	mtu        int
	noIP       bool     // leave eth0 down
	privateRAM bool     // guest RAM without an fd: every DMA by message
	vlan       uint16   // with backendStream: the relay tags and untags this VLAN
	serverArgs []string // more flags for our server, e.g. --param name=value
	agent2     bool     // a second guest agent, for two requests at once
}

func newRig(t *testing.T, ctx context.Context, kind string, o rigOpts) *rig {
	t.Helper()
	if o.backend == "" {
		o.backend = backendTAP
	}
	r := &rig{t: t, ctx: ctx, kind: kind, dir: harness.TestDir(t), vlan: o.vlan}
	r.ns = netns(t, o.mtu)
	r.stream = filepath.Join(r.dir, "net.sock")
	cfg := harness.VMConfig{Dir: filepath.Join(r.dir, "vm"), KernelArgs: o.kernelArgs, PrivateRAM: o.privateRAM, Agent2: o.agent2}
	switch kind {
	case harness.BuiltinE1000E:
		cfg.NIC = harness.NIC{Kind: kind}
		switch o.backend {
		case backendTAP:
			cfg.NetNS = r.ns
			cfg.NIC.Netdev = "tap,id=n0,ifname=tap0,script=no,downscript=no"
		case backendStream:
			cfg.NIC.Netdev = "stream,id=n0,server=on,addr.type=unix,addr.path=" + r.stream
		}
	case harness.VFIOUser:
		sc := harness.ServerConfig{Bin: suite.ServerBin, Dir: filepath.Join(r.dir, "srv"), Args: o.serverArgs}
		switch o.backend {
		case backendTAP:
			sc.NetNS = r.ns
			sc.Netdev = "tap,ifname=tap0"
		case backendStream:
			sc.Netdev = "stream,path=" + r.stream + ",server=on"
		}
		r.startServer(sc)
		cfg.NIC = harness.NIC{Kind: kind, Socket: r.srv.Socket}
	}
	if o.backend == backendStream && kind == harness.BuiltinE1000E {
		// QEMU listens on the stream socket at start-up; the relay connects
		// once QEMU runs, in the background so that StartVM can proceed.
		go r.startRelay()
	}
	r.vm = startVM(t, ctx, cfg)
	if o.backend == backendStream && kind == harness.VFIOUser {
		r.startRelay()
	}
	r.g = guest{t: t, ctx: ctx, vm: r.vm}
	if o.agent2 {
		if err := r.vm.StartAgent2(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !o.noIP {
		r.g.upEth0(guestIP + "/24")
	}
	return r
}

func (r *rig) startServer(sc harness.ServerConfig) {
	r.t.Helper()
	srv, err := harness.StartServer(r.ctx, sc)
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv = srv
	srv.StopAtEnd(r.t, "server", 8192)
}

var relayMu sync.Mutex

func (r *rig) startRelay() {
	rl, err := harness.StartVLANRelay(r.ns, "tap0", r.stream, r.vlan, 60*time.Second)
	relayMu.Lock()
	defer relayMu.Unlock()
	if err != nil {
		r.t.Errorf("relay: %v", err)
		return
	}
	r.relay = rl
	r.t.Cleanup(func() {
		if err := rl.Close(); err != nil {
			r.t.Logf("relay: %v", err)
		}
	})
}

// tcpBothWays moves size bytes guest→host and host→guest, each checked by
// SHA-256 at both ends, and returns the two rates in Mbit/s.
func (r *rig) tcpBothWays(size int64) (up, down float64) {
	r.t.Helper()
	for _, dir := range []bool{true, false} {
		res, err := harness.TCPTransfer(r.ctx, r.ns, r.vm.Agent, hostIP, dir, size)
		if err != nil {
			r.t.Fatal(err)
		}
		way := "host→guest"
		if dir {
			way, up = "guest→host", res.Mbps()
		} else {
			down = res.Mbps()
		}
		r.t.Logf("%s: %d MiB in %.1f s, %.1f Mbit/s, SHA-256 equal at both ends", way, size>>20, res.Seconds, res.Mbps())
	}
	return up, down
}

// ping pings the host peer from the guest and fails unless all come back.
func (r *rig) ping(count int, extra string) string {
	r.t.Helper()
	out := r.g.sh(fmt.Sprintf("ping -c %d -W 5 %s %s", count, extra, hostIP))
	if !strings.Contains(out, fmt.Sprintf("%d packets received", count)) {
		r.t.Fatalf("ping: %s", out)
	}
	return out
}

// udp runs the guest's UDP echo exchange against an echo peer in the
// namespace and fails on any loss.
func (r *rig) udp(count, size int) {
	r.t.Helper()
	c, err := r.ns.ListenPacket("udp", hostIP+":0")
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	go harness.UDPEcho(c)
	rp, err := r.vm.Agent.Call(r.ctx, time.Minute, "udpecho", c.LocalAddr().String(), fmt.Sprint(count), fmt.Sprint(size))
	if err != nil {
		r.t.Fatal(err)
	}
	if echoed := int(rp.Data["echoed"].(float64)); echoed != count {
		r.t.Fatalf("udp: %d of %d datagrams of %d bytes echoed", echoed, count, size)
	}
	r.t.Logf("udp: %d datagrams of %d bytes echoed, mean RTT %v µs", count, size, rp.Data["rtt_us"])
}
