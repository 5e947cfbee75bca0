//go:build integration

package integration

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// The scenarios of our server attached through vfio-user-pci.

// TestVFUProbe: the guest sees 8086:10d3 with the 82574L's capabilities,
// in its order, the e1000e driver binds, the MAC and link speed are right,
// and the driver logs no warning.
func TestVFUProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	g := r.g
	dev := g.findPCI("8086", "10d3")
	if drv := g.sh("basename $(readlink " + dev + "/driver)"); strings.TrimSpace(drv) != "e1000e" {
		t.Errorf("driver of %s: %q, want e1000e", dev, drv)
	}
	rp, err := r.vm.Agent.Call(ctx, 10*time.Second, "read", dev+"/config")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeBytes(rp.Data["bytes"])
	if err != nil {
		t.Fatal(err)
	}
	caps, err := harness.PCICaps(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for off, id := range map[int]byte{0xc8: 0x01, 0xd0: 0x05, 0xe0: 0x10, 0xa0: 0x11} {
		if caps[off] != id {
			t.Errorf("capability at %#x: id %#x, want %#x (have %v)", off, caps[off], id, caps)
		}
	}
	// The default layout (caps-82574l=true) chains them in the 82574L's
	// order; TestVFUCapsLayout compares the whole of lspci's view.
	checkCapChain82574L(t, r)
	ext, err := harness.PCIExtCaps(cfg)
	if err != nil {
		t.Error(err)
	}
	t.Logf("capabilities %v, extended %v", fmtCaps(caps), fmtExt(ext))
	for off, id := range map[int]uint16{0x100: 0x0001, 0x140: 0x0003} {
		if ext[off] != id {
			t.Errorf("extended capability at %#x: id %#x, want %#x", off, ext[off], id)
		}
	}
	if mac := strings.TrimSpace(g.sh("cat /sys/class/net/eth0/address")); mac != harness.ServerMAC {
		t.Errorf("MAC %s, want %s", mac, harness.ServerMAC)
	}
	if speed := strings.TrimSpace(g.sh("cat /sys/class/net/eth0/speed")); speed != "1000" {
		t.Errorf("link speed %s, want 1000", speed)
	}
	if up := g.dmesg("Link is Up"); len(up) == 0 || !strings.Contains(up[len(up)-1], "1000 Mbps Full Duplex") {
		t.Errorf("dmesg link-up lines: %q", up)
	}
	if w := driverWarnings(g); len(w) > 0 {
		t.Errorf("driver warnings in dmesg:\n%s", strings.Join(w, "\n"))
	}
}

// TestVFUTCP: ping, 64 MiB each way with offloads on (the driver's default:
// TSO, checksum offload, scatter-gather), UDP, then 64 MiB each way with
// offloads off.
func TestVFUTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(5, "")
	rp, err := r.vm.Agent.Call(ctx, 10*time.Second, "ethtool", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tso", "tx", "rx", "sg"} {
		if rp.Data[f] != true {
			t.Errorf("offload %s is off by default: %v", f, rp.Data)
		}
	}
	r.tcpBothWays(64 << 20)
	r.udp(200, 1400)
	for _, f := range []string{"tso", "tx", "rx"} {
		if _, err := r.vm.Agent.Call(ctx, 10*time.Second, "ethtool", "eth0", f, "off"); err != nil {
			t.Fatal(err)
		}
	}
	t.Log("offloads off (tso, tx and rx checksum)")
	r.tcpBothWays(64 << 20)
	if w := driverWarnings(r.g); len(w) > 0 {
		t.Errorf("driver warnings in dmesg:\n%s", strings.Join(w, "\n"))
	}
}

// TestVFUStream: the stream socket backend, with our relay joining it to
// the namespace.
func TestVFUStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{backend: backendStream})
	r.ping(3, "")
	r.tcpBothWays(64 << 20)
	r.udp(100, 1000)
}

// TestVFUJumbo: MTU 9000 on both sides; the driver uses packet split for
// jumbo frames.
func TestVFUJumbo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{mtu: 9000})
	r.g.sh("ip link set eth0 mtu 9000")
	if _, err := r.vm.Agent.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	r.ping(3, "-s 8900")
	r.tcpBothWays(16 << 20)
	r.udp(50, 8000)
}

// TestVFUVLAN: a VLAN sub-interface in the guest (eth0.5). The host side
// has no VLAN support, so the stream backend's relay tags and untags VLAN 5:
// everything the namespace sees went through eth0.5, and frames of eth0
// itself are dropped.
func TestVFUVLAN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{backend: backendStream, vlan: 5, noIP: true})
	r.g.sh("ip link set eth0 up && ip link add link eth0 name eth0.5 type vlan id 5 && ip addr add " + guestIP + "/24 dev eth0.5 && ip link set eth0.5 up")
	if _, err := r.vm.Agent.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	r.ping(3, "")
	r.tcpBothWays(8 << 20)
	r.udp(50, 1400)
}

// TestVFUPromisc: frames to another MAC address reach the guest only in
// promiscuous mode.
func TestVFUPromisc(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(1, "")
	tap, err := tapMAC(r.ns)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := net.ParseMAC("52:54:00:aa:bb:cc")
	var frames [][]byte
	for i := range 20 {
		frames = append(frames, harness.UDPFrame(other, tap, net.ParseIP(hostIP), net.ParseIP(guestIP), 4000, 4001, []byte(fmt.Sprintf("not for you %d", i))))
	}
	rx := func() int {
		var n int
		fmt.Sscan(r.g.sh("cat /sys/class/net/eth0/statistics/rx_packets"), &n)
		return n
	}
	count := func() int {
		before := rx()
		if err := harness.SendFrames(r.ns, "tap0", frames); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // let the NIC deliver what it takes
		return rx() - before
	}
	off := count()
	r.g.sh("ip link set eth0 promisc on")
	on := count()
	t.Logf("frames to another MAC received: %d of 20 with promisc off, %d with promisc on", off, on)
	if on < 20 || off >= 20 {
		t.Errorf("promisc on received %d of 20, off received %d", on, off)
	}
}

func tapMAC(ns *harness.NetNS) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("tap0")
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	return mac, err
}

// TestVFUMulticast: the guest joins a multicast group and receives what the
// host sends to it.
func TestVFUMulticast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(1, "")
	if err := r.ns.IP("route", "add", "239.1.2.3/32", "dev", "tap0"); err != nil {
		t.Fatal(err)
	}
	c, err := r.ns.ListenPacket("udp4", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		dst := mustUDPAddr("239.1.2.3:5000")
		for i := 0; i < 600; i++ { // bounded: 60 s at most
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			c.WriteTo([]byte(fmt.Sprintf("mcast %d", i)), dst)
		}
	}()
	rp, err := r.vm.Agent.Call(ctx, 30*time.Second, "mcast", "eth0", "239.1.2.3:5000", "5")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("multicast: %v", rp.Data)
}

// TestVFUIntModes: MSI-X (IntMode=2, the default), MSI (1) and INTx (0);
// each mode is checked in sysfs and carries traffic.
func TestVFUIntModes(t *testing.T) {
	for _, m := range []struct {
		mode int
		want string // what msi_irqs/<irq> hold, or "" for INTx (no msi_irqs)
		chip string // the controller /proc/interrupts names
	}{{2, "msix", "PCI-MSIX-"}, {1, "msi", "PCI-MSI-"}, {0, "", "IO-APIC"}} {
		t.Run(fmt.Sprintf("IntMode=%d", m.mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			r := newRig(t, ctx, harness.VFIOUser, rigOpts{kernelArgs: fmt.Sprintf("e1000e_opts=IntMode=%d", m.mode)})
			dev := r.g.findPCI("8086", "10d3")
			modes := strings.TrimSpace(r.g.sh("cat " + dev + "/msi_irqs/* 2>/dev/null | sort -u"))
			if modes != m.want {
				t.Errorf("interrupt mode %q, want %q", modes, m.want)
			}
			r.ping(3, "")
			r.tcpBothWays(4 << 20)
			// The interrupts that carried the traffic, by controller.
			irqs := r.g.sh("cat /proc/interrupts")
			var lines []string
			for _, l := range strings.Split(irqs, "\n") {
				if strings.Contains(l, "eth0") {
					lines = append(lines, strings.Join(strings.Fields(l), " "))
				}
			}
			t.Logf("eth0 in /proc/interrupts: %q", lines)
			if len(lines) == 0 || !strings.Contains(lines[0], m.chip) {
				t.Errorf("no %s interrupt for eth0 in /proc/interrupts:\n%s", m.chip, irqs)
			}
			if w := driverWarnings(r.g); len(w) > 0 {
				t.Errorf("driver warnings:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}

// TestVFUModuleReload: rmmod and insmod e1000e; the NIC works again.
func TestVFUModuleReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(2, "")
	for i := range 2 {
		r.g.sh("rmmod e1000e && insmod /lib/modules/e1000e.ko")
		r.g.upEth0(guestIP + "/24")
		r.ping(2, "")
		t.Logf("reload %d: ping ok", i+1)
	}
	r.tcpBothWays(4 << 20)
}

// TestVFUSystemReset: QMP system_reset reboots the guest; the NIC is reset
// and works after the new boot.
func TestVFUSystemReset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(2, "")
	if err := r.vm.QMP.Execute(ctx, "system_reset", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.vm.QMP.WaitEvent(ctx, "RESET"); err != nil {
		t.Fatal(err)
	}
	if err := r.vm.WaitAgent(ctx); err != nil {
		t.Fatal(err)
	}
	r.g.upEth0(guestIP + "/24")
	r.ping(2, "")
	r.tcpBothWays(4 << 20)
}

// TestVFULinkDownUp: the server's control socket takes the link down and up;
// the guest sees both changes (LSC) and traffic resumes.
func TestVFULinkDownUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(2, "")
	for i := range 2 {
		if _, err := r.srv.Ctl(ctx, map[string]any{"cmd": "set-link", "up": false}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.vm.Agent.Call(ctx, 20*time.Second, "wait-link", "eth0", "down"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.srv.Ctl(ctx, map[string]any{"cmd": "set-link", "up": true}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.vm.Agent.Call(ctx, 20*time.Second, "wait-link", "eth0", "up"); err != nil {
			t.Fatal(err)
		}
		r.ping(2, "")
		t.Logf("link cycle %d: down and up seen by the guest", i+1)
	}
	if down := r.g.dmesg("Link is Down"); len(down) < 2 {
		t.Errorf("dmesg shows %d link-down messages, want 2", len(down))
	}
}

// TestVFUQEMUKilled: QEMU is killed in the middle of a transfer; the server
// survives, cleans up, and serves the next QEMU.
func TestVFUQEMUKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	l, err := r.ns.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go harness.SinkOnce(l, 2*time.Minute)
	go r.vm.Agent.Call(ctx, 2*time.Minute, "send", l.Addr().String(), fmt.Sprint(1<<30), "1")
	time.Sleep(3 * time.Second) // let traffic flow
	r.vm.Kill()
	if !r.vm.Exited() {
		t.Fatal("QEMU did not exit after SIGKILL")
	}
	time.Sleep(time.Second)
	if r.srv.Exited() {
		t.Fatalf("the server exited when its client died: %v\n%s", r.srv.ExitErr(), r.srv.LogTail(4096))
	}
	vm2 := startVM(t, ctx, harness.VMConfig{NIC: harness.NIC{Kind: harness.VFIOUser, Socket: r.srv.Socket}})
	r.vm, r.g = vm2, guest{t: t, ctx: ctx, vm: vm2}
	r.g.upEth0(guestIP + "/24")
	r.ping(3, "")
	r.tcpBothWays(4 << 20)
}

// TestVFUServerKilled: the server is killed under a running guest; QEMU
// notices (it logs the lost connection or exits), and nothing hangs.
func TestVFUServerKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{})
	r.ping(1, "")
	r.srv.Kill()
	// The guest keeps touching the NIC; QEMU's next access finds the socket
	// gone.
	go r.vm.Agent.Call(ctx, 20*time.Second, "sh", "ping -c 10 -W 1 "+hostIP+"; ip link set eth0 down; ip link set eth0 up")
	deadline := time.Now().Add(60 * time.Second)
	var seen string
	for time.Now().Before(deadline) && seen == "" {
		if r.vm.Exited() {
			seen = "QEMU exited"
			break
		}
		if m := lostRe.FindString(r.vm.Dump()); m != "" {
			seen = "QEMU reported: " + m
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if seen == "" {
		t.Fatalf("60 s after the server died QEMU neither exited nor reported it:\n%s", r.vm.Dump())
	}
	t.Log(seen)
}

var lostRe = regexp.MustCompile(`(?i)vfio-user[^\n]*(disconnect|closed|lost|error|fail)[^\n]*|[^\n]*(Connection reset|Broken pipe|remote end hung up)[^\n]*`)

// driverWarnings returns the kernel's warning-or-worse lines about the NIC.
func driverWarnings(g guest) []string {
	var bad []string
	for _, l := range strings.Split(g.sh("dmesg -r"), "\n") {
		if len(l) < 3 || l[0] != '<' {
			continue
		}
		lvl := l[1] // <N> where N = facility*8 + level; kernel facility is 0
		if lvl > '4' || !strings.Contains(l, "e1000e") {
			continue
		}
		bad = append(bad, l)
	}
	return bad
}

// TestVFUPrivateRAM: guest RAM that QEMU cannot share (no memory backend
// with share=on, so no fd with DMA_MAP) reaches the server only through
// DMA_READ and DMA_WRITE messages, which QEMU answers on its main loop. The
// guest boots, the driver binds and traffic flows both ways; no message
// DMA waits for its 5 s timeout (the server logs none), which is what a
// server that held the NIC's lock while waiting for a reply did.
func TestVFUPrivateRAM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, harness.VFIOUser, rigOpts{privateRAM: true})
	r.ping(3, "")
	r.tcpBothWays(4 << 20)
	r.udp(200, 1000)
	log := r.srv.Log()
	for _, bad := range []string{"timed out", "timeout", "deadlock"} {
		if strings.Contains(strings.ToLower(log), bad) {
			t.Errorf("server log mentions %q:\n%s", bad, r.srv.LogTail(4096))
		}
	}
	if w := driverWarnings(r.g); len(w) > 0 {
		t.Errorf("driver warnings: %q", w)
	}
}
