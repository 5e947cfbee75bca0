package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// The addresses of the two-host network. The guest's address and its peer's
// are those of the single-namespace tests; each host has its own address on
// the LAN, which migrations between the hosts use.
const (
	PeerIP  = "10.0.2.2"
	GuestIP = "10.0.2.15"
)

// HostIP is host i's address on the LAN (10.0.2.11, 10.0.2.12).
func HostIP(i int) string { return fmt.Sprintf("10.0.2.%d", 11+i) }

// Hosts is the network a live migration meets: two hosts joined by a LAN,
// each host a network namespace with a Linux bridge (br0) to which its
// guests' TAP devices are added, and the LAN a third namespace holding a
// bridge (lan0) with a veth link to each host's bridge and the guest's peer
// at PeerIP. Every bridge is the kernel's learning bridge with its real MAC
// ageing (300 s): once a guest moves from one host to the other, frames for
// it keep going to the old host until a frame from its MAC arrives through
// the new one. That is what the device's self-announcement is for, and
// what a test of it needs.
type Hosts struct {
	LAN  *NetNS    // the switch between the hosts, and the peer
	Host [2]*NetNS // host 0 and host 1
}

// NewHosts creates the three namespaces, named prefix-lan, prefix-h0 and
// prefix-h1, and links them. Close removes them.
func NewHosts(prefix string) (_ *Hosts, err error) {
	h := &Hosts{}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if h.LAN, err = NewNetNS(prefix + "-lan"); err != nil {
		return nil, err
	}
	if err := h.LAN.ipv4Only(); err != nil {
		return nil, err
	}
	if err := h.LAN.bridge("lan0", "02:b0:00:00:00:01", PeerIP+"/24"); err != nil {
		return nil, err
	}
	for i := range h.Host {
		ns, err := NewNetNS(fmt.Sprintf("%s-h%d", prefix, i))
		if err != nil {
			return nil, err
		}
		h.Host[i] = ns
		if err := ns.ipv4Only(); err != nil {
			return nil, err
		}
		if err := ns.bridge("br0", fmt.Sprintf("02:b0:00:00:01:%02x", i), HostIP(i)+"/24"); err != nil {
			return nil, err
		}
		// The host's uplink: one end in the host on its bridge, the
		// other in the LAN on the switch.
		up, down := fmt.Sprintf("up%d", i), fmt.Sprintf("h%d", i)
		if err := ns.IP("link", "add", up, "type", "veth", "peer", "name", down, "netns", h.LAN.Name); err != nil {
			return nil, err
		}
		if err := ns.IP("link", "set", up, "master", "br0", "up"); err != nil {
			return nil, err
		}
		if err := h.LAN.IP("link", "set", down, "master", "lan0", "up"); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// ipv4Only turns IPv6 off in the namespace before any link exists: the
// bridges and veths would otherwise send router solicitations and
// multicast reports of their own, noise on every port of a network whose
// tests count frames.
func (ns *NetNS) ipv4Only() error {
	out, err := ns.Command(context.Background(), "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1").CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns %s: turning IPv6 off: %w: %s", ns.Name, err, out)
	}
	return nil
}

// bridge adds a bridge with MAC address mac and IP address cidr to the
// namespace. Spanning tree stays off (the default), so a new port forwards
// at once, as on a host whose bridge has a single uplink. The MAC is set
// because a bridge otherwise takes the lowest of its ports' addresses, and
// changes it as guests' TAPs come and go, leaving the other hosts' ARP
// entries for it pointing nowhere.
func (ns *NetNS) bridge(name, mac, cidr string) error {
	if err := ns.IP("link", "add", name, "address", mac, "type", "bridge", "stp_state", "0"); err != nil {
		return err
	}
	if err := ns.IP("addr", "add", cidr, "dev", name); err != nil {
		return err
	}
	return ns.IP("link", "set", name, "up")
}

// AddTAP creates a persistent TAP device on host i's bridge; a guest's
// network backend there (our server, or QEMU's own NIC) opens it by name
// from inside the host's namespace.
func (h *Hosts) AddTAP(i int, name string) error {
	ns := h.Host[i]
	if err := ns.IP("tuntap", "add", name, "mode", "tap"); err != nil {
		return err
	}
	return ns.IP("link", "set", name, "master", "br0", "up")
}

// FDB is the MAC table of host i's bridge (or of the LAN's switch when i
// is -1), as `bridge fdb show` prints it, for a failing test's log.
func (h *Hosts) FDB(i int) string {
	ns := h.LAN
	if i >= 0 {
		ns = h.Host[i]
	}
	out, err := ns.Command(context.Background(), "bridge", "fdb", "show", "dynamic").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("bridge fdb in %s: %v: %s", ns.Name, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Close removes the namespaces and everything in them.
func (h *Hosts) Close() error {
	var errs []error
	for _, ns := range append([]*NetNS{h.LAN}, h.Host[:]...) {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}
