package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// NetNS is a network namespace a test created and removes in Close.
type NetNS struct {
	Name string
}

// NewNetNS creates namespace name (removing a leftover of the same name from
// a killed run first) and brings its loopback up.
func NewNetNS(name string) (*NetNS, error) {
	_ = ipCmd("netns", "del", name) // a leftover of a killed run, if any
	if err := ipCmd("netns", "add", name); err != nil {
		return nil, err
	}
	ns := &NetNS{Name: name}
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// Close removes the namespace and every interface in it.
func (ns *NetNS) Close() error { return ipCmd("netns", "del", ns.Name) }

// IP runs `ip -n NS args...`.
func (ns *NetNS) IP(args ...string) error {
	return ipCmd(append([]string{"-n", ns.Name}, args...)...)
}

// AddTAP creates a persistent TAP device in the namespace, gives it cidr
// (e.g. "10.0.2.2/24") and sets it up; whoever opens it later (QEMU or our
// server, started inside the namespace) attaches to it.
func (ns *NetNS) AddTAP(name, cidr string, mtu int) error {
	if err := ns.IP("tuntap", "add", name, "mode", "tap"); err != nil {
		return err
	}
	if mtu > 0 {
		if err := ns.IP("link", "set", name, "mtu", fmt.Sprint(mtu)); err != nil {
			return err
		}
	}
	if err := ns.IP("addr", "add", cidr, "dev", name); err != nil {
		return err
	}
	return ns.IP("link", "set", name, "up")
}

// Command returns a command that runs argv inside the namespace.
func (ns *NetNS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
}

// Do runs fn on an OS thread that has entered the namespace; sockets fn
// creates belong to the namespace for their whole life. The thread goes back
// to the original namespace afterwards; if it cannot, it is discarded.
func (ns *NetNS) Do(fn func() error) error {
	target, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it ends with this goroutine.
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a listener inside the namespace.
func (ns *NetNS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (ns *NetNS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %v: %w: %s", args, err, out)
	}
	return nil
}
