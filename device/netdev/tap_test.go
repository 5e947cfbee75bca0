package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/leakcheck"
)

// The TAP tests need root (CAP_NET_ADMIN): each makes its own network
// namespace with ip(8), puts the TAP there and removes it all afterwards,
// so nothing touches the host's interfaces.

var netnsSeq atomic.Int32

// requireRoot skips only when not root; as root (CI) the tests always run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and TAP devices")
	}
}

// newNetns creates a network namespace removed at cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("netdevtest-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	// No IPv6 on its interfaces: the kernel would send an MLD report (and
	// router solicitations) on each as it comes up, frames a test that
	// expects none, or only its own, would see at random.
	if out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-q", "-w",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1").CombinedOutput(); err != nil {
		t.Fatalf("disable IPv6 in %s: %v: %s", name, err, out)
	}
	return name
}

// ipNetns runs ip(8) inside the namespace.
func ipNetns(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %v: %v: %s", ns, args, err, out)
	}
}

// inNetns runs fn on an OS thread switched into namespace ns. Sockets and
// TAPs made there stay in ns after the thread switches back.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return // the thread stays locked and is discarded
		}
		defer unix.Close(orig)
		target, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back: %w", err))
			return // a thread left in ns must not be reused
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket is a raw AF_PACKET socket bound to one interface.
type packetSocket struct {
	fd      int
	ifindex int
}

func openPacketSocket(ifname string) (*packetSocket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &packetSocket{fd: fd, ifindex: ifi.Index}, nil
}

func (p *packetSocket) send(frame []byte) error {
	return unix.Sendto(p.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: p.ifindex})
}

// waitFor reads until want arrives; the interface's own traffic (IPv6
// router solicitations and the like) is skipped.
func (p *packetSocket) waitFor(t *testing.T, want []byte) {
	t.Helper()
	buf := make([]byte, MaxFrameSize)
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			continue // the receive timeout; try again until the deadline
		}
		if bytes.Equal(buf[:n], want) {
			return
		}
	}
	t.Fatal("frame did not reach the packet socket")
}

// nextMatching skips the interface's own traffic in a collector.
func nextMatching(t *testing.T, c *collector, want []byte) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case f := <-c.frames:
			if bytes.Equal(f, want) {
				return
			}
		case <-deadline:
			t.Fatal("frame did not reach the TAP backend")
		}
	}
}

// TestTAPRootCreatedInNetns creates a TAP with a kernel-chosen name inside a
// fresh namespace and exchanges frames with a packet socket bound to it.
func TestTAPRootCreatedInNetns(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	leakcheck.Check(t)
	var tap *TAP
	var ps *packetSocket
	inNetns(t, ns, func() error {
		var err error
		if tap, err = OpenTAP(TAPConfig{Up: true}, quietLog()); err != nil {
			return err
		}
		if ps, err = openPacketSocket(tap.Name()); err != nil {
			tap.Close()
		}
		return err
	})
	defer unix.Close(ps.fd)
	defer tap.Close()
	if tap.Name() == "" {
		t.Fatal("kernel-chosen name not reported")
	}
	rx := newCollector()
	if err := tap.Start(rx); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{60, 1514} {
		out := testFrame(n, byte(i))
		if err := tap.Send(out); err != nil {
			t.Fatal(err)
		}
		ps.waitFor(t, out)
		in := testFrame(n, byte(i+100))
		if err := ps.send(in); err != nil {
			t.Fatal(err)
		}
		nextMatching(t, rx, in)
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	rx.closed.Store(true)
	// A TAP this backend created goes away with it.
	var ifErr error
	inNetns(t, ns, func() error {
		_, ifErr = net.InterfaceByName(tap.Name())
		return nil
	})
	if ifErr == nil {
		t.Fatalf("%s still exists after Close", tap.Name())
	}
	if err := tap.Send(testFrame(60, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if rx.lateCalls.Load() != 0 {
		t.Fatal("Receive after Close")
	}
}

// TestTAPRootAttachExisting attaches to a persistent TAP made by ip(8),
// checks traffic flows and that Close leaves the interface in place.
func TestTAPRootAttachExisting(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	ipNetns(t, ns, "tuntap", "add", "dev", "ndtap0", "mode", "tap")
	ipNetns(t, ns, "link", "set", "ndtap0", "up")
	leakcheck.Check(t)
	var tap *TAP
	var ps *packetSocket
	inNetns(t, ns, func() error {
		var err error
		if tap, err = OpenTAP(TAPConfig{Name: "ndtap0"}, quietLog()); err != nil {
			return err
		}
		if ps, err = openPacketSocket("ndtap0"); err != nil {
			tap.Close()
		}
		return err
	})
	defer unix.Close(ps.fd)
	rx := newCollector()
	if err := tap.Start(rx); err != nil {
		t.Fatal(err)
	}
	in := testFrame(200, 1)
	if err := ps.send(in); err != nil {
		t.Fatal(err)
	}
	nextMatching(t, rx, in)
	out := testFrame(300, 2)
	if err := tap.Send(out); err != nil {
		t.Fatal(err)
	}
	ps.waitFor(t, out)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	var ifErr error
	inNetns(t, ns, func() error {
		_, ifErr = net.InterfaceByName("ndtap0")
		return nil
	})
	if ifErr != nil {
		t.Fatalf("persistent TAP gone after Close: %v", ifErr)
	}
}

// TestTAPRootCloseWhileBusy closes the TAP while frames keep arriving and
// checks no Receive follows Close.
func TestTAPRootCloseWhileBusy(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	leakcheck.Check(t)
	var tap *TAP
	var ps *packetSocket
	inNetns(t, ns, func() error {
		cfg, err := Parse("tap,ifname=ndbusy0")
		if err != nil {
			return err
		}
		b, err := Open(cfg, quietLog())
		if err != nil {
			return err
		}
		tap = b.(*TAP)
		if ps, err = openPacketSocket("ndbusy0"); err != nil {
			tap.Close()
		}
		return err
	})
	defer unix.Close(ps.fd)
	rx := newCollector()
	if err := tap.Start(rx); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		f := testFrame(60, 3)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if ps.send(f) != nil {
				return // the interface went with the TAP
			}
		}
	}()
	nextMatching(t, rx, testFrame(60, 3))
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	rx.closed.Store(true)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-done
	if n := rx.lateCalls.Load(); n != 0 {
		t.Fatalf("%d Receive calls after Close returned", n)
	}
}

func TestTAPNameTooLong(t *testing.T) {
	if _, err := OpenTAP(TAPConfig{Name: "abcdefghijklmnopq"}, quietLog()); err == nil {
		t.Fatal("opened a TAP with a 17-byte name")
	}
}
