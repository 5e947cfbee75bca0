package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// NetdevSpec is a parsed --netdev value. The syntax follows QEMU's -netdev
// (a kind, then key=value options) so that users recognise it:
//
//	none
//	tap,ifname=NAME
//	stream,connect=ADDR | stream,listen=ADDR   (QEMU's -netdev stream)
//	dgram,remote=ADDR[,local=ADDR]             (QEMU's -netdev dgram)
//
// where ADDR is HOST:PORT or unix:PATH.
type NetdevSpec struct {
	// Kind is "none", "tap", "stream" or "dgram".
	Kind string
	// Ifname is the TAP interface's name.
	Ifname string
	// Listen says whether a stream backend listens rather than connects;
	// Addr is its address.
	Listen bool
	Addr   NetAddr
	// Local and Remote are a dgram backend's addresses; Local may be zero.
	Local, Remote NetAddr
}

// NetAddr is a socket address: Network is "unix" or "inet", Address the
// path or HOST:PORT.
type NetAddr struct {
	Network, Address string
}

func (a NetAddr) String() string {
	if a.Network == "unix" {
		return "unix:" + a.Address
	}
	return a.Address
}

// ifnameMax is IFNAMSIZ minus the terminating NUL.
const ifnameMax = 15

func parseNetdev(s string) (NetdevSpec, error) {
	parts := strings.Split(s, ",")
	kind := parts[0]
	opts := make(map[string]string, len(parts)-1)
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return NetdevSpec{}, fmt.Errorf("%q: option %q is not key=value", s, p)
		}
		if _, dup := opts[k]; dup {
			return NetdevSpec{}, fmt.Errorf("%q: option %s given twice", s, k)
		}
		opts[k] = v
	}
	allow := func(keys ...string) error {
		for k := range opts {
			found := false
			for _, a := range keys {
				found = found || a == k
			}
			if !found {
				return fmt.Errorf("%q: %s backend has no option %s", s, kind, k)
			}
		}
		return nil
	}
	spec := NetdevSpec{Kind: kind}
	var err error
	switch kind {
	case "none":
		err = allow()
	case "tap":
		if err = allow("ifname"); err != nil {
			break
		}
		spec.Ifname = opts["ifname"]
		if spec.Ifname == "" || len(spec.Ifname) > ifnameMax ||
			strings.ContainsAny(spec.Ifname, "/ \t\n:") {
			err = fmt.Errorf("%q: tap needs ifname=NAME, 1 to %d characters without '/', ':' or spaces", s, ifnameMax)
		}
	case "stream":
		if err = allow("connect", "listen"); err != nil {
			break
		}
		c, hasC := opts["connect"]
		l, hasL := opts["listen"]
		switch {
		case hasC == hasL:
			err = fmt.Errorf("%q: stream needs exactly one of connect=ADDR and listen=ADDR", s)
		case hasC:
			spec.Addr, err = parseNetAddr(c)
		default:
			spec.Listen = true
			spec.Addr, err = parseNetAddr(l)
		}
		if err != nil {
			err = fmt.Errorf("%q: %w", s, err)
		}
	case "dgram":
		if err = allow("remote", "local"); err != nil {
			break
		}
		r, ok := opts["remote"]
		if !ok {
			err = fmt.Errorf("%q: dgram needs remote=ADDR", s)
			break
		}
		if spec.Remote, err = parseNetAddr(r); err != nil {
			err = fmt.Errorf("%q: %w", s, err)
			break
		}
		if l, ok := opts["local"]; ok {
			if spec.Local, err = parseNetAddr(l); err != nil {
				err = fmt.Errorf("%q: %w", s, err)
			} else if spec.Local.Network != spec.Remote.Network {
				err = fmt.Errorf("%q: local and remote must both be unix: or both HOST:PORT", s)
			}
		}
	default:
		err = fmt.Errorf("%q: unknown backend %q (backends: none, tap, stream, dgram)", s, kind)
	}
	if err != nil {
		return NetdevSpec{}, err
	}
	return spec, nil
}

func parseNetAddr(s string) (NetAddr, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" || len(path) > sunPathMax {
			return NetAddr{}, fmt.Errorf("address %q: a UNIX path of 1 to %d bytes", s, sunPathMax)
		}
		return NetAddr{Network: "unix", Address: path}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return NetAddr{}, fmt.Errorf("address %q: want HOST:PORT or unix:PATH", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return NetAddr{}, fmt.Errorf("address %q: port must be 1 to 65535", s)
	}
	if host == "" {
		return NetAddr{}, fmt.Errorf("address %q: no host", s)
	}
	return NetAddr{Network: "inet", Address: s}, nil
}
