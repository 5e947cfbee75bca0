package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
	"e1000e-vfu/e1000e"
)

// The whole server as QEMU and a guest see it: a client negotiates, reads
// the PCI ids, shares memory, sets up MSI-X and the rings, transmits a
// frame that reaches the stream peer and receives one the peer sends; it
// leaves and a second client is served; the control socket reports the
// configuration and takes the link down, which the guest sees in STATUS;
// SIGTERM with a client connected exits 0 and leaves no socket behind.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "vfu.sock")
	peerSock := filepath.Join(dir, "net.sock")
	ctlSock := filepath.Join(dir, "ctl.sock")
	pcapFile := filepath.Join(dir, "frames.pcap")
	mac, _ := net.ParseMAC("52:54:00:12:34:56")

	p := startServe(t, "--socket", sock, "--mac", mac.String(),
		"--netdev", "stream,path="+peerSock+",server=on",
		"--control", ctlSock, "--pcap", pcapFile, "--log-level", "debug")
	start := p.waitLog("msg=serving", 10*time.Second)
	for _, want := range []string{
		"socket=" + sock, "mac=" + mac.String(), `netdev="stream,path=` + peerSock + `,server=on"`,
		"model=" + model.E1000EName, "version=3", `params="caps-82574l=true,hide-msix=false,rx-filter-size=16"`, "control=" + ctlSock, "pcap=" + pcapFile,
	} {
		if !strings.Contains(start, want) {
			t.Errorf("startup line lacks %q:\n%s", want, start)
		}
	}
	if strings.Count(start, "msg=serving") != 1 {
		t.Errorf("startup logged more than once:\n%s", start)
	}

	peer, err := net.DialTimeout("unix", peerSock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	p.waitLog("stream peer connected", 5*time.Second)

	// First client: the datapath both ways.
	g := connect(t, sock, 5*time.Second)
	g.checkIdentity()
	g.setup()
	out := testFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}, 1)
	g.transmit(out)
	got, err := readStreamFrame(peer, 5*time.Second)
	if err != nil {
		t.Fatalf("stream peer: %v", err)
	}
	if !bytes.Equal(got, out) {
		t.Fatalf("stream peer got %x, want %x", got, out)
	}
	in := testFrame(mac, 2)
	desc, buf := g.postRX()
	if err := writeStreamFrame(peer, in); err != nil {
		t.Fatal(err)
	}
	g.waitRX(desc, buf, in)

	// The client goes: the device is disconnected and the next one served.
	g.close()
	p.waitLog("vfio-user: client gone", 5*time.Second)
	g2 := connect(t, sock, 5*time.Second)
	g2.checkIdentity()
	g2.setup()
	out2 := testFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}, 3)
	g2.transmit(out2)
	if got, err := readStreamFrame(peer, 5*time.Second); err != nil || !bytes.Equal(got, out2) {
		t.Fatalf("second client's frame at the peer: %x, %v", got, err)
	}
	if n := p.countLog("vfio-user: client connected"); n != 2 {
		t.Errorf("%d clients connected, want 2", n)
	}

	// The control socket speaks for the NIC the client drives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := control.Call(ctx, ctlSock, control.Request{Cmd: control.CmdQueryConfig})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model":"` + model.E1000EName + `","params":{"caps-82574l":true,"rx-filter-size":16},"version":3,"mac":"52:54:00:12:34:56"}`
	if string(res) != want {
		t.Errorf("query-config %s, want %s", res, want)
	}
	if s := status(t, ctlSock); s != `{"state":"running"}` {
		t.Errorf("query-status with a client: %s", s)
	}
	res, err = control.Call(ctx, ctlSock, control.Request{Cmd: control.CmdQueryStats})
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		LinkUp bool              `json:"link_up"`
		Stats  map[string]uint64 `json:"stats"`
	}
	if err := json.Unmarshal(res, &stats); err != nil {
		t.Fatal(err)
	}
	// The second client reset the device: one frame out since.
	if stats.Stats["gptc"] != 1 {
		t.Errorf("query-stats gptc %d, want 1: %s", stats.Stats["gptc"], res)
	}

	if g2.rd(e1000e.STATUS)&e1000e.STATUS_LU == 0 {
		t.Fatal("STATUS.LU clear before link-down")
	}
	down, up := false, true
	if _, err := control.Call(ctx, ctlSock, control.Request{Cmd: control.CmdSetLink, Up: &down}); err != nil {
		t.Fatal(err)
	}
	if s := g2.rd(e1000e.STATUS); s&e1000e.STATUS_LU != 0 {
		t.Fatalf("STATUS %#x: LU set after link-down", s)
	}
	if _, err := control.Call(ctx, ctlSock, control.Request{Cmd: control.CmdSetLink, Up: &up}); err != nil {
		t.Fatal(err)
	}
	// Link up completes after autonegotiation (half a second).
	deadline := time.Now().Add(5 * time.Second)
	for g2.rd(e1000e.STATUS)&e1000e.STATUS_LU == 0 {
		if time.Now().After(deadline) {
			t.Fatal("STATUS.LU still clear 5 s after link-up")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// SIGTERM with a client connected: the client is dropped, everything
	// closed, the sockets removed.
	if code := p.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	gone(t, sock)
	gone(t, ctlSock)
	if !strings.Contains(p.log.String(), "msg=stopped") {
		t.Error("no stopped line in the log")
	}
	if err := g2.c.Reset(); err == nil {
		t.Error("the client still gets replies after the server stopped")
	}
	if _, err := readStreamFrame(peer, 5*time.Second); err == nil {
		t.Error("the stream peer's connection is still open")
	}

	// Every frame in both directions went to the capture, in order.
	f, err := os.Open(pcapFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for range 10 {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		frames = append(frames, data)
	}
	if len(frames) != 3 || !bytes.Equal(frames[0], out) || !bytes.Equal(frames[1], in) || !bytes.Equal(frames[2], out2) {
		t.Errorf("pcap holds %d frames, want out, in, out2: %x", len(frames), frames)
	}
}

// serve with nothing but --socket serves a NIC with no backend, and
// SIGINT stops it cleanly.
func TestServeSocketOnly(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vfu.sock")
	p := startServe(t, "--socket", sock)
	start := p.waitLog("msg=serving", 10*time.Second)
	for _, want := range []string{"level=INFO", "socket=" + sock, "mac=02:e1:0e:", "netdev=none", `params="caps-82574l=true,hide-msix=false,rx-filter-size=16"`} {
		if !strings.Contains(start, want) {
			t.Errorf("startup line lacks %q:\n%s", want, start)
		}
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v, %v: want a socket with mode 0600", fi, err)
	}
	g := connect(t, sock, 5*time.Second)
	g.checkIdentity()
	g.setup()
	// With no backend the frame is dropped, but the descriptor completes.
	g.transmit(testFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, 0))
	g.close()
	if code := p.signal(syscall.SIGINT, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGINT, want 0", code)
	}
	gone(t, sock)
	if strings.Contains(p.log.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", p.log.String())
	}
}

// --log-level filters: at warn, a clean run logs nothing.
func TestServeLogLevel(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vfu.sock")
	p := startServe(t, "--socket", sock, "--log-level", "warn")
	// Without the startup line, readiness is the client getting in.
	g := connect(t, sock, 10*time.Second)
	g.checkIdentity()
	g.close()
	if code := p.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if s := p.log.String(); s != "" {
		t.Errorf("logged at warn level:\n%s", s)
	}
}

// Failures after the command line was accepted exit 4 with one line naming
// the failing part, and leave nothing behind.
func TestServeStartFailures(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "vfu.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", regular}, "e1000e-vfu serve: --socket: vfio-user: " + regular + ": exists and is not a socket"},
		{[]string{"--socket", sock, "--netdev", "stream,path=" + filepath.Join(dir, "nobody")}, "e1000e-vfu serve: --netdev stream,path=" + filepath.Join(dir, "nobody") + ":"},
		{[]string{"--socket", sock, "--control", regular}, "e1000e-vfu serve: --control: control socket " + regular + ": exists and is not a socket"},
	} {
		r := runBinary(t, "", append([]string{"serve"}, tc.args...)...)
		if r.code != exitFailure {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, r.code, exitFailure, r.stderr)
		}
		if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q, want one line starting %q", tc.args, r.stderr, tc.want)
		}
		gone(t, sock)
	}
	if fi, err := os.Stat(regular); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the regular file at the socket path was touched: %v, %v", fi, err)
	}
}

// A second server on a live socket fails without disturbing the first.
func TestServeSocketInUse(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vfu.sock")
	p := startServe(t, "--socket", sock)
	p.waitLog("msg=serving", 10*time.Second)
	r := runBinary(t, "", "serve", "--socket", sock)
	if r.code != exitFailure || !strings.Contains(r.stderr, "is in use") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("second server: %+v", r)
	}
	g := connect(t, sock, 5*time.Second)
	g.checkIdentity()
	g.close()
	if code := p.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	gone(t, sock)
}
