//go:build integration

package integration

import (
	"context"
	"fmt"
	"net"
	"os/exec"
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
}

type rigOpts struct {
	backend    string // backendTAP when empty
	kernelArgs string
	mtu        int
	noIP       bool // leave eth0 down
}

var (
	serverOnce sync.Once
	serverBin  string
	serverErr  error
)

// server builds bin/e1000e-vfu once per run.
func server(t *testing.T) string {
	t.Helper()
	serverOnce.Do(func() {
		serverBin = filepath.Join(repo, "bin", "e1000e-vfu")
		cmd := exec.Command("go", "build", "-o", serverBin, "./cmd/e1000e-vfu")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			serverErr = fmt.Errorf("building the server: %v\n%s", err, out)
		}
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	return serverBin
}

func newRig(t *testing.T, ctx context.Context, kind string, o rigOpts) *rig {
	t.Helper()
	if o.backend == "" {
		o.backend = backendTAP
	}
	r := &rig{t: t, ctx: ctx, kind: kind, dir: shortDir(t)}
	r.ns = netns(t, o.mtu)
	r.stream = filepath.Join(r.dir, "net.sock")
	cfg := harness.VMConfig{Dir: filepath.Join(r.dir, "vm"), KernelArgs: o.kernelArgs}
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
		sc := harness.ServerConfig{Bin: server(t), Dir: filepath.Join(r.dir, "srv")}
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
	r.t.Cleanup(func() {
		if r.t.Failed() {
			r.t.Logf("server log (tail):\n%s", srv.LogTail(8192))
		}
		srv.Stop()
	})
}

var relayMu sync.Mutex

func (r *rig) startRelay() {
	rl, err := harness.StartRelay(r.ns, "tap0", r.stream, 60*time.Second)
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
	timeout := time.Duration(size/(256<<10))*time.Second + 60*time.Second // ≥ 2 Mbit/s
	for i, dir := range []string{"guest→host", "host→guest"} {
		l, err := r.ns.Listen("tcp", hostIP+":0")
		if err != nil {
			r.t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		addr := fmt.Sprintf("%s:%d", hostIP, port)
		seed := uint64(time.Now().UnixNano())
		type res struct {
			x   harness.Transfer
			err error
		}
		done := make(chan res, 1)
		go func() {
			var x harness.Transfer
			var err error
			if i == 0 {
				x, err = harness.SinkOnce(l, timeout)
			} else {
				x, err = harness.SourceOnce(l, size, seed, timeout)
			}
			done <- res{x, err}
		}()
		var rep map[string]any
		if i == 0 {
			rp, err := r.vm.Agent.Call(r.ctx, timeout, "send", addr, fmt.Sprint(size), fmt.Sprint(seed))
			if err != nil {
				l.Close()
				r.t.Fatalf("%s: %v", dir, err)
			}
			rep = rp.Data
		} else {
			rp, err := r.vm.Agent.Call(r.ctx, timeout, "recv", addr)
			if err != nil {
				l.Close()
				r.t.Fatalf("%s: %v", dir, err)
			}
			rep = rp.Data
		}
		host := <-done
		l.Close()
		if host.err != nil {
			r.t.Fatalf("%s: host side: %v", dir, host.err)
		}
		want := harness.StreamSHA256(size, seed)
		gotBytes := int64(rep["bytes"].(float64))
		if gotBytes != size || host.x.Bytes != size {
			r.t.Fatalf("%s: guest moved %d bytes, host %d, want %d", dir, gotBytes, host.x.Bytes, size)
		}
		if rep["sha256"] != want || host.x.SHA256 != want {
			r.t.Fatalf("%s: checksum mismatch: guest %v, host %s, want %s", dir, rep["sha256"], host.x.SHA256, want)
		}
		secs := rep["seconds"].(float64)
		rate := float64(size) * 8 / secs / 1e6
		r.t.Logf("%s: %d MiB in %.1f s, %.1f Mbit/s, SHA-256 equal at both ends", dir, size>>20, secs, rate)
		if i == 0 {
			up = rate
		} else {
			down = rate
		}
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
