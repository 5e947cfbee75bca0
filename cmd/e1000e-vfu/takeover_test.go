package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"e1000e-vfu/control"
	"e1000e-vfu/device"
	"e1000e-vfu/device/model"
	"e1000e-vfu/handover"
	"e1000e-vfu/vfiouser"
)

// upgrade is a server under a guest, to be replaced.
type upgrade struct {
	t         *testing.T
	sock, ctl string
	mac       string
	netdev    string
	cur       *proc
	g         *guest
}

func startUpgrade(t *testing.T, extra ...string) *upgrade {
	t.Helper()
	return startUpgradeOn(t, "none", extra...)
}

func startUpgradeOn(t *testing.T, netdev string, extra ...string) *upgrade {
	t.Helper()
	dir := t.TempDir()
	u := &upgrade{t: t, sock: filepath.Join(dir, "vfu.sock"), ctl: filepath.Join(dir, "vfu.ctl"), mac: "52:54:00:12:34:99", netdev: netdev}
	u.cur = startServe(t, append([]string{"--socket", u.sock, "--control", u.ctl, "--mac", u.mac, "--netdev", netdev}, extra...)...)
	u.cur.waitLog("msg=serving", 10*time.Second)
	u.g = connect(t, u.sock, 5*time.Second)
	u.g.setup()
	return u
}

// stats reads a counter through the control socket, served by whichever
// process holds it now.
func (u *upgrade) stat(name string) uint64 {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := control.Call(ctx, u.ctl, control.Request{Cmd: control.CmdQueryStats})
	if err != nil {
		u.t.Fatal(err)
	}
	var res control.StatsResult
	if err := json.Unmarshal(raw, &res); err != nil {
		u.t.Fatal(err)
	}
	return res.Stats[name]
}

// takeover starts a successor and waits for it to run and for the
// predecessor to exit 0. The successor names the same socket and no MAC:
// an omitted --mac is the predecessor's, whatever --socket is.
func (u *upgrade) takeover(args ...string) {
	u.t.Helper()
	nu := startServe(u.t, append([]string{"--takeover", u.ctl, "--socket", u.sock, "--netdev", u.netdev}, args...)...)
	nu.waitLog("took over", 15*time.Second)
	if code := u.cur.wait(10 * time.Second); code != 0 {
		u.t.Fatalf("predecessor exit status %d", code)
	}
	if !strings.Contains(u.cur.log.String(), "handed over") {
		u.t.Fatal("the predecessor did not log the handover")
	}
	u.cur = nu
}

// serverFDs counts the descriptors of a server process.
func serverFDs(t *testing.T, p *proc) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// sameFDs fails unless the server comes back to want descriptors: a
// control connection the test closed is closed by the server on its own
// goroutine, a moment later.
func sameFDs(t *testing.T, p *proc, want int, what string) {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = serverFDs(t, p); got == want {
			return
		}
	}
	t.Fatalf("%s: %d descriptors, were %d", what, got, want)
}

// TestTakeoverKeepsGuest: a guest's NIC passes through three servers in a
// row; each time the next message is answered, TX keeps completing with
// its interrupt, the guest's registers and statistics carry over, and the
// last server shuts down as any other.
func TestTakeoverKeepsGuest(t *testing.T) {
	u := startUpgrade(t)
	frame := testFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1)
	for i := 0; i < 3; i++ {
		u.g.transmit(frame)
	}
	before := u.stat("gptc")
	if before != 3 {
		t.Fatalf("gptc %d before, want 3", before)
	}
	const ims = 0x00D0 // IMS: the guest's interrupt mask
	mask := u.g.rd(ims)
	for round := 1; round <= 3; round++ {
		u.takeover()
		if got := u.g.rd(ims); got != mask {
			t.Fatalf("round %d: IMS %#x, was %#x", round, got, mask)
		}
		u.g.transmit(frame)
		if got := u.stat("gptc"); got != before+uint64(round) {
			t.Fatalf("round %d: gptc %d, want %d", round, got, before+uint64(round))
		}
	}
	if code := u.cur.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	gone(t, u.sock)
	gone(t, u.ctl)
}

// TestTakeoverPcapAndNoClient: a capture goes on in the same file across
// takeovers, every frame in it once; and a server without a client hands
// over its sockets, the next client served by the successor.
func TestTakeoverPcapAndNoClient(t *testing.T) {
	pcap := filepath.Join(t.TempDir(), "nic.pcap")
	u := startUpgrade(t, "--pcap", pcap)
	frame := testFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1)
	u.g.transmit(frame)
	u.takeover()
	u.g.transmit(frame)
	u.takeover()
	u.g.transmit(frame)
	u.g.close()
	// The client gone, a takeover carries the sockets alone.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(u.cur.log.String(), "client gone"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client's departure was not seen")
		}
	}
	u.takeover()
	u.g = connect(t, u.sock, 5*time.Second)
	u.g.setup()
	u.g.transmit(frame)
	if code := u.cur.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	n, err := countPcap(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("%d frames in the capture, want the 4 sent", n)
	}
}

// TestTakeoverRefusals: an incompatible successor, and one started while a
// migration is under way, exit 1 naming why, and nothing moves: the
// predecessor serves on, with no descriptor more or less.
func TestTakeoverRefusals(t *testing.T) {
	u := startUpgrade(t)
	frame := testFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1)
	u.g.transmit(frame)
	fds := serverFDs(t, u.cur)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--takeover", u.ctl, "--mac", "52:54:00:00:00:01", "--netdev", "none"}, "mac"},
		{[]string{"--takeover", u.ctl, "--mac", u.mac, "--netdev", "none", "--version", "1"}, "rx-filter-size"},
		{[]string{"--takeover", u.ctl, "--mac", u.mac, "--netdev", "tap"}, "netdev"},
	} {
		r := runBinary(t, "", append([]string{"serve"}, c.args...)...)
		if r.code != exitIncompatible || !strings.Contains(r.stderr, c.want) {
			t.Fatalf("%v: status %d, stderr %q", c.args, r.code, r.stderr)
		}
	}
	if r := runBinary(t, "", "serve", "--takeover", u.ctl, "--pcap", filepath.Join(t.TempDir(), "x.pcap")); r.code != exitUsage {
		t.Fatalf("--takeover with --pcap: status %d, stderr %q", r.code, r.stderr)
	}
	// A migration's pre-copy: the takeover is refused with the reason.
	if _, err := u.g.c.SetMigrationState(device.MigPreCopy); err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, "", "serve", "--takeover", u.ctl, "--mac", u.mac, "--netdev", "none")
	if r.code != exitIncompatible || !strings.Contains(r.stderr, "a migration is under way (state PRE_COPY)") {
		t.Fatalf("during pre-copy: status %d, stderr %q", r.code, r.stderr)
	}
	if _, err := u.g.c.SetMigrationState(device.MigRunning); err != nil {
		t.Fatal(err)
	}
	u.g.transmit(frame)
	sameFDs(t, u.cur, fds, "after the refusals")
	if u.stat("gptc") != 2 {
		t.Fatal("the predecessor lost its statistics")
	}
}

// fakeSuccessor asks for a takeover and receives the state and the
// descriptors, then does what a failing successor does.
func fakeSuccessor(t *testing.T, u *upgrade, then func(p *handover.Peer, c *net.UnixConn)) {
	t.Helper()
	c, err := net.Dial("unix", u.ctl)
	if err != nil {
		t.Fatal(err)
	}
	uc := c.(*net.UnixConn)
	defer uc.Close()
	p, st, fds := takeoverOn(t, uc, u.mac)
	defer p.Close()
	if len(fds) != len(st.FDs) || len(st.Maps) != 1 || st.Proto.MaxXfer == 0 {
		t.Fatalf("%d descriptors for %d, %d maps", len(fds), len(st.FDs), len(st.Maps))
	}
	closeInts(fds)
	then(p, uc)
}

// TestTakeoverSuccessorFails: a successor that dies after receiving every
// descriptor, one that reports a failure, one that sends garbage, and a
// real one killed at once: each time the predecessor resumes, its guest
// unaware but for the pause, with the descriptors it had.
func TestTakeoverSuccessorFails(t *testing.T) {
	u := startUpgrade(t)
	frame := testFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1)
	u.g.transmit(frame)
	fds := serverFDs(t, u.cur)
	sent := uint64(1)
	failures := 0
	check := func(what string) {
		t.Helper()
		failures++
		for deadline := time.Now().Add(10 * time.Second); u.cur.countLog("takeover failed; serving on") < failures; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no failure logged", what)
			}
		}
		u.g.transmit(frame)
		sent++
		if got := u.stat("gptc"); got != sent {
			t.Fatalf("%s: gptc %d, want %d", what, got, sent)
		}
		sameFDs(t, u.cur, fds, what)
	}
	fakeSuccessor(t, u, func(p *handover.Peer, c *net.UnixConn) { c.Close() })
	check("successor gone after the descriptors")
	fakeSuccessor(t, u, func(p *handover.Peer, c *net.UnixConn) {
		p.SendFrame(handover.KindFail, []byte("cannot map"), nil)
		if h, _, _, err := p.ReadFrame(); err != nil || h.Kind != handover.KindAbort {
			t.Errorf("after FAIL: %v %v, want ABORT", h, err)
		}
	})
	check("successor failed")
	fakeSuccessor(t, u, func(p *handover.Peer, c *net.UnixConn) { c.Write([]byte("garbage garbage!")) })
	check("successor sent garbage")
	// A successor gone between the predecessor's reply and its state:
	// the state is sent into the void.
	c, err := net.Dial("unix", u.ctl)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, `{"cmd":"takeover","config":%s,"netdev":"none","version":%d}`+"\n", defaultSource(t, u.mac), handover.Version)
	c.Close()
	check("successor gone before the state")
	// A real successor killed as it starts, before it reaches the
	// control socket (later moments are the fake ones' above: the whole
	// handover takes about a millisecond, too short to aim a kill at):
	// the predecessor never hears of it.
	nu := startServe(t, "--takeover", u.ctl, "--mac", u.mac, "--netdev", "none")
	nu.cmd.Process.Kill()
	<-nu.done
	time.Sleep(100 * time.Millisecond)
	if n := u.cur.countLog("takeover failed; serving on"); n != failures {
		t.Fatalf("successor killed as it starts: %d failed takeovers logged, want the %d before it", n, failures)
	}
	u.g.transmit(frame)
	sent++
	if got := u.stat("gptc"); got != sent {
		t.Fatalf("successor killed: gptc %d, want %d", got, sent)
	}
	sameFDs(t, u.cur, fds, "after the killed successors")
	// The predecessor, having resumed, stops as any server does.
	if code := u.cur.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", code, u.cur.log.String())
	}
	gone(t, u.sock)
	gone(t, u.ctl)
}

// countPcap counts the records of a capture file, failing on a damaged one.
func countPcap(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		_, _, err := r.ReadPacketData()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// TestTakeoverDgram: a UDP datagram backend passes to the successor, which
// sends from the same address and receives what the peer sends to it.
func TestTakeoverDgram(t *testing.T) {
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	local := probe.LocalAddr().String()
	probe.Close() // a free port for the server
	u := startUpgradeOn(t, "dgram,local="+local+",remote="+peer.LocalAddr().String())
	frame := testFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1)
	buf := make([]byte, 2048)
	expectTX := func(what string) {
		t.Helper()
		u.g.transmit(frame)
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := peer.ReadFromUDP(buf)
		if err != nil || n != len(frame) || from.String() != local {
			t.Fatalf("%s: %d bytes from %v: %v", what, n, from, err)
		}
	}
	expectRX := func(what string, seq byte) {
		t.Helper()
		desc, b := u.g.postRX()
		in := testFrame(net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x99}, seq)
		if _, err := peer.WriteToUDP(in, probe.LocalAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
		u.g.waitRX(desc, b, in)
	}
	expectTX("before")
	expectRX("before", 10)
	u.takeover()
	expectTX("after a takeover")
	expectRX("after a takeover", 11)
	u.takeover()
	expectTX("after two")
}

// defaultSource is the configuration a server started with the defaults
// and mac hands its successor, as the JSON a takeover request carries.
func defaultSource(t *testing.T, mac string) string {
	t.Helper()
	cfg, err := model.E1000E().Resolve(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := cfg.Source()
	if src.MAC, err = net.ParseMAC(mac); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(src)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// askTakeover asks the server at ctl for a takeover as a successor would
// and returns the connection and the STATE frame's descriptors.
func askTakeover(t *testing.T, ctl, mac string) (*handover.Peer, *handover.State, []int) {
	t.Helper()
	c, err := net.Dial("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	uc := c.(*net.UnixConn)
	t.Cleanup(func() { uc.Close() })
	return takeoverOn(t, uc, mac)
}

// takeoverOn asks for a takeover on the control connection uc, with the
// default configuration and mac, and returns the STATE frame and its
// descriptors.
func takeoverOn(t *testing.T, uc *net.UnixConn, mac string) (*handover.Peer, *handover.State, []int) {
	t.Helper()
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(uc, `{"cmd":"takeover","config":%s,"netdev":"none","version":%d}`+"\n", defaultSource(t, mac), handover.Version)
	p := handover.NewPeer(uc, nil)
	t.Cleanup(func() { p.Close() })
	line, err := p.ReadLine(4096)
	if err != nil || !strings.Contains(string(line), `"ok":true`) {
		t.Fatalf("reply %q %v", line, err)
	}
	h, body, fds, err := p.ReadFrame()
	if err != nil || h.Kind != handover.KindState {
		t.Fatalf("state frame: %v %v", h, err)
	}
	st, err := handover.DecodeState(body)
	if err != nil || len(st.FDs) != len(fds) {
		closeInts(fds)
		t.Fatalf("state: %v, %d descriptors", err, len(fds))
	}
	return p, st, fds
}

// TestTakeoverClientWaitsInBacklog: a client that connects while a server
// without one is handing over is not accepted by it. When the handover
// fails, the resumed server serves it; when it commits, the client waits
// in the listener's backlog for the successor, which accepts it on the
// descriptor it was handed.
func TestTakeoverClientWaitsInBacklog(t *testing.T) {
	dir := t.TempDir()
	sock, ctl, mac := filepath.Join(dir, "vfu.sock"), filepath.Join(dir, "vfu.ctl"), "52:54:00:12:34:99"
	old := startServe(t, "--socket", sock, "--control", ctl, "--mac", mac, "--netdev", "none")
	old.waitLog("msg=serving", 10*time.Second)

	p, _, fds := askTakeover(t, ctl, mac)
	closeInts(fds)
	vc, err := vfiouser.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	negotiated := make(chan error, 1)
	go func() { _, err := vc.Negotiate(nil); negotiated <- err }()
	select {
	case err := <-negotiated:
		t.Fatalf("a client was served during the handover (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	p.SendFrame(handover.KindFail, []byte("giving up"), nil)
	if h, _, _, err := p.ReadFrame(); err != nil || h.Kind != handover.KindAbort {
		t.Fatalf("after FAIL: %v %v, want ABORT", h, err)
	}
	select {
	case err := <-negotiated:
		if err != nil {
			t.Fatalf("the resumed server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the resumed server did not take the waiting client")
	}
	vc.Close()
	old.waitLog("client gone", 5*time.Second)

	p, st, fds := askTakeover(t, ctl, mac)
	defer closeInts(fds)
	lfd := -1
	for i, f := range st.FDs {
		if f.Role == handover.RoleListener {
			lfd = fds[i]
		}
	}
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p.SendFrame(handover.KindReady, nil, nil)
	if h, _, _, err := p.ReadFrame(); err != nil || h.Kind != handover.KindCommit {
		t.Fatalf("after READY: %v %v, want COMMIT", h, err)
	}
	if code := old.wait(10 * time.Second); code != 0 {
		t.Fatalf("predecessor exit status %d", code)
	}
	f := os.NewFile(uintptr(lfd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(5 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatalf("the client is not in the backlog: %v", err)
	}
	defer sc.Close()
	client.Write([]byte("x"))
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := sc.Read(make([]byte, 1)); n != 1 {
		t.Fatalf("the accepted connection is not the client's: %v", err)
	}
}

// TestTakeoverRefusesChanges: set-link and announce during a takeover are
// refused, not answered and then lost with the state already sent;
// queries are answered; once the takeover has failed, they work again.
func TestTakeoverRefusesChanges(t *testing.T) {
	u := startUpgrade(t)
	call := func(req control.Request) (json.RawMessage, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return control.Call(ctx, u.ctl, req)
	}
	p, _, fds := askTakeover(t, u.ctl, u.mac)
	closeInts(fds)
	down := false
	if _, err := call(control.Request{Cmd: control.CmdSetLink, Up: &down}); err == nil || !strings.Contains(err.Error(), "takeover under way") {
		t.Fatalf("set-link during a takeover: %v", err)
	}
	if _, err := call(control.Request{Cmd: control.CmdAnnounce}); err == nil || !strings.Contains(err.Error(), "takeover under way") {
		t.Fatalf("announce during a takeover: %v", err)
	}
	if _, err := call(control.Request{Cmd: control.CmdQueryStatus}); err != nil {
		t.Fatalf("query-status during a takeover: %v", err)
	}
	p.SendFrame(handover.KindFail, []byte("giving up"), nil)
	if h, _, _, err := p.ReadFrame(); err != nil || h.Kind != handover.KindAbort {
		t.Fatalf("after FAIL: %v %v, want ABORT", h, err)
	}
	// The predecessor lets go of the takeover a moment after its ABORT.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := call(control.Request{Cmd: control.CmdSetLink, Up: &down})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "takeover under way") || time.Now().After(deadline) {
			t.Fatalf("set-link after the failed takeover: %v", err)
		}
	}
}

// TestTakeoverSignalWaitsForCommit: a SIGTERM during a takeover waits for
// its end; once it has committed, the predecessor exits 0 without shutting
// anything down (the socket files are the successor's now).
func TestTakeoverSignalWaitsForCommit(t *testing.T) {
	dir := t.TempDir()
	sock, ctl, mac := filepath.Join(dir, "vfu.sock"), filepath.Join(dir, "vfu.ctl"), "52:54:00:12:34:99"
	old := startServe(t, "--socket", sock, "--control", ctl, "--mac", mac, "--netdev", "none")
	old.waitLog("msg=serving", 10*time.Second)
	p, _, fds := askTakeover(t, ctl, mac)
	defer closeInts(fds)
	if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.done:
		t.Fatalf("the predecessor exited during the takeover:\n%s", old.log.String())
	case <-time.After(300 * time.Millisecond):
	}
	p.SendFrame(handover.KindReady, nil, nil)
	if h, _, _, err := p.ReadFrame(); err != nil || h.Kind != handover.KindCommit {
		t.Fatalf("after READY: %v %v, want COMMIT", h, err)
	}
	if code := old.wait(10 * time.Second); code != 0 {
		t.Fatalf("predecessor exit status %d:\n%s", code, old.log.String())
	}
	if strings.Contains(old.log.String(), "msg=stopping") {
		t.Fatalf("the predecessor shut down after handing over:\n%s", old.log.String())
	}
	for _, f := range []string{sock, ctl} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}
