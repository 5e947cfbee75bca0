package netdev

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is a parsed --netdev spec: a backend type and its settings.
type Config struct {
	// Type is "none", "tap", "stream" or "dgram"; only the matching
	// settings below are used.
	Type   string
	TAP    TAPConfig
	Stream StreamConfig
	Dgram  DgramConfig
}

// maxReconnect bounds reconnect-ms so a typo cannot mean "never".
const maxReconnect = time.Hour

// Parse reads a --netdev spec in QEMU's -netdev syntax: a type, then
// comma-separated key=value options (",," is a literal comma in a value).
// The accepted forms are listed in the package README. Errors name the bad
// key or value on one line.
func Parse(spec string) (Config, error) {
	fields := splitSpec(spec)
	typ := fields[0]
	opts := make(map[string]string, len(fields)-1)
	var order []string
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return Config{}, fmt.Errorf("netdev %s: option %q is not key=value", typ, f)
		}
		if _, dup := opts[k]; dup {
			return Config{}, fmt.Errorf("netdev %s: key %q given twice", typ, k)
		}
		opts[k] = v
		order = append(order, k)
	}
	o := options{typ: typ, m: opts, order: order}
	switch typ {
	case "none":
		if err := o.allow("id"); err != nil {
			return Config{}, err
		}
		return Config{Type: "none"}, nil
	case "tap":
		return parseTAP(o)
	case "stream":
		return parseStream(o)
	case "dgram":
		return parseDgram(o)
	case "":
		return Config{}, errors.New("netdev: empty spec (want none, tap, stream or dgram)")
	}
	return Config{}, fmt.Errorf("netdev: unknown type %q (want none, tap, stream or dgram)", typ)
}

// splitSpec splits at commas, reading ",," as a comma inside a field.
func splitSpec(spec string) []string {
	var fields []string
	var cur strings.Builder
	for i := 0; i < len(spec); i++ {
		c := spec[i]
		if c != ',' {
			cur.WriteByte(c)
			continue
		}
		if i+1 < len(spec) && spec[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		fields = append(fields, cur.String())
		cur.Reset()
	}
	return append(fields, cur.String())
}

// options are the key=value pairs of one spec.
type options struct {
	typ   string
	m     map[string]string
	order []string
}

// allow fails on the first key, in spec order, that is not in keys. The
// key "id" is QEMU's netdev name; it is accepted and ignored everywhere so
// specs can be copied from a QEMU command line.
func (o options) allow(keys ...string) error {
	for _, k := range o.order {
		if k != "id" && !slices.Contains(keys, k) {
			return fmt.Errorf("netdev %s: unknown key %q", o.typ, k)
		}
	}
	return nil
}

func (o options) has(k string) bool { _, ok := o.m[k]; return ok }

func (o options) errf(k, format string, args ...any) error {
	return fmt.Errorf("netdev %s: %s=%q: %s", o.typ, k, o.m[k], fmt.Sprintf(format, args...))
}

// boolean reads on/off (also yes/no, true/false); def when absent.
func (o options) boolean(k string, def bool) (bool, error) {
	v, ok := o.m[k]
	if !ok {
		return def, nil
	}
	switch v {
	case "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, o.errf(k, "want on or off")
}

// port reads a TCP/UDP port number.
func (o options) port(k string) (string, error) {
	v := o.m[k]
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return "", o.errf(k, "want a port number 0..65535")
	}
	return strconv.FormatUint(n, 10), nil
}

// nonEmpty reads a key that must be present with a value.
func (o options) nonEmpty(k string) (string, error) {
	v, ok := o.m[k]
	if !ok {
		return "", fmt.Errorf("netdev %s: missing key %q", o.typ, k)
	}
	if v == "" {
		return "", o.errf(k, "empty value")
	}
	return v, nil
}

func parseTAP(o options) (Config, error) {
	if err := o.allow("ifname", "up", "script", "downscript"); err != nil {
		return Config{}, err
	}
	// script=no and downscript=no are what QEMU users write; we never run
	// scripts, so any other value would be silently ignored: refuse it.
	for _, k := range []string{"script", "downscript"} {
		if o.has(k) && o.m[k] != "no" && o.m[k] != "" {
			return Config{}, o.errf(k, "scripts are not supported; configure the interface beforehand")
		}
	}
	name := o.m["ifname"]
	if len(name) > 15 {
		return Config{}, o.errf("ifname", "longer than 15 bytes")
	}
	if strings.ContainsAny(name, "/ \t\n") {
		return Config{}, o.errf("ifname", "not a valid interface name")
	}
	up, err := o.boolean("up", true)
	if err != nil {
		return Config{}, err
	}
	return Config{Type: "tap", TAP: TAPConfig{Name: name, Up: up}}, nil
}

// aliasKey reads key k, or QEMU's long form alt; giving both is an error.
func (o options) aliasKey(k, alt string) (string, bool, error) {
	v1, ok1 := o.m[k]
	v2, ok2 := o.m[alt]
	if ok1 && ok2 {
		return "", false, fmt.Errorf("netdev %s: %q and %q both given", o.typ, k, alt)
	}
	if ok2 {
		return v2, true, nil
	}
	return v1, ok1, nil
}

// inetOrUnix resolves a socket address from prefix.type/.host/.port/.path
// keys (prefix "addr" for stream, "local"/"remote" for dgram) with their
// short aliases; it returns "unix" with a path or "inet" with host:port.
func (o options) inetOrUnix(typeKey, hostKey, portKey, pathKey string) (kind, addr string, err error) {
	typ := o.m[typeKey]
	switch typ {
	case "", "inet", "unix":
	default:
		return "", "", o.errf(typeKey, "want inet or unix")
	}
	hasInet := o.has(hostKey) || o.has(portKey)
	hasPath := o.has(pathKey)
	switch {
	case hasInet && hasPath:
		return "", "", fmt.Errorf("netdev %s: %q conflicts with %q/%q", o.typ, pathKey, hostKey, portKey)
	case hasPath || typ == "unix":
		if typ == "inet" {
			return "", "", fmt.Errorf("netdev %s: %s=inet but %q given", o.typ, typeKey, pathKey)
		}
		p, err := o.nonEmpty(pathKey)
		return "unix", p, err
	case hasInet || typ == "inet":
		host, err := o.nonEmpty(hostKey)
		if err != nil {
			return "", "", err
		}
		if _, err := o.nonEmpty(portKey); err != nil {
			return "", "", err
		}
		port, err := o.port(portKey)
		if err != nil {
			return "", "", err
		}
		return "inet", net.JoinHostPort(strings.Trim(host, "[]"), port), nil
	}
	return "", "", fmt.Errorf("netdev %s: missing address (%s, or %s and %s)", o.typ, pathKey, hostKey, portKey)
}

func parseStream(o options) (Config, error) {
	if err := o.allow("server", "path", "host", "port",
		"addr.type", "addr.path", "addr.host", "addr.port", "reconnect-ms"); err != nil {
		return Config{}, err
	}
	// The short keys are our own; addr.* is QEMU's spelling. Map the short
	// ones onto QEMU's, refusing a mixture of both for the same field.
	for _, f := range []string{"path", "host", "port"} {
		v, ok, err := o.aliasKey(f, "addr."+f)
		if err != nil {
			return Config{}, err
		}
		if ok {
			delete(o.m, f)
			o.m["addr."+f] = v
		}
	}
	kind, addr, err := o.inetOrUnix("addr.type", "addr.host", "addr.port", "addr.path")
	if err != nil {
		return Config{}, err
	}
	server, err := o.boolean("server", false)
	if err != nil {
		return Config{}, err
	}
	cfg := StreamConfig{Network: "unix", Address: addr, Server: server}
	if kind == "inet" {
		cfg.Network = "tcp"
		if !server && o.m["addr.port"] == "0" {
			return Config{}, errors.New("netdev stream: port 0: a client needs the peer's port")
		}
	}
	if o.has("reconnect-ms") {
		if server {
			return Config{}, o.errf("reconnect-ms", "only a client reconnects")
		}
		ms, err := strconv.ParseUint(o.m["reconnect-ms"], 10, 32)
		if err != nil || time.Duration(ms)*time.Millisecond > maxReconnect {
			return Config{}, o.errf("reconnect-ms", "want milliseconds up to %d", maxReconnect.Milliseconds())
		}
		cfg.Reconnect = time.Duration(ms) * time.Millisecond
	}
	return Config{Type: "stream", Stream: cfg}, nil
}

func parseDgram(o options) (Config, error) {
	var keys []string
	for _, side := range []string{"local", "remote"} {
		keys = append(keys, side, side+".type", side+".host", side+".port", side+".path")
	}
	if err := o.allow(keys...); err != nil {
		return Config{}, err
	}
	var kinds, addrs [2]string
	for i, side := range []string{"local", "remote"} {
		if o.has(side) {
			// Short form: local=HOST:PORT, an inet address.
			for _, k := range []string{".type", ".host", ".port", ".path"} {
				if o.has(side + k) {
					return Config{}, fmt.Errorf("netdev dgram: %q conflicts with %q", side, side+k)
				}
			}
			host, port, err := net.SplitHostPort(o.m[side])
			if err != nil || host == "" {
				return Config{}, o.errf(side, "want HOST:PORT")
			}
			o.m[side+".host"], o.m[side+".port"] = host, port
			if _, err := o.port(side + ".port"); err != nil {
				return Config{}, o.errf(side, "want HOST:PORT with a port number 0..65535")
			}
		}
		kind, addr, err := o.inetOrUnix(side+".type", side+".host", side+".port", side+".path")
		if err != nil {
			return Config{}, err
		}
		kinds[i], addrs[i] = kind, addr
	}
	if kinds[1] == "inet" {
		if p, _ := o.port("remote.port"); p == "0" {
			return Config{}, o.errf("remote.port", "the remote needs a port, not 0")
		}
	}
	if kinds[0] != kinds[1] {
		return Config{}, fmt.Errorf("netdev dgram: local is %s but remote is %s", kinds[0], kinds[1])
	}
	cfg := DgramConfig{Network: "udp", Local: addrs[0], Remote: addrs[1]}
	if kinds[0] == "unix" {
		cfg.Network = "unixgram"
	}
	return Config{Type: "dgram", Dgram: cfg}, nil
}

// Open opens the backend cfg describes.
func Open(cfg Config, log *slog.Logger) (Backend, error) {
	switch cfg.Type {
	case "none", "":
		return None{}, nil
	case "tap":
		// Each case checks err itself so that a failed Open returns a nil
		// interface, not one holding a nil pointer.
		t, err := OpenTAP(cfg.TAP, log)
		if err != nil {
			return nil, err
		}
		return t, nil
	case "stream":
		s, err := OpenStream(cfg.Stream, log)
		if err != nil {
			return nil, err
		}
		return s, nil
	case "dgram":
		d, err := OpenDgram(cfg.Dgram, log)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("netdev: unknown type %q", cfg.Type)
}
