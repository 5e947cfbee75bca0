package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"e1000e-vfu/device/model"
	"e1000e-vfu/device/netdev"
)

const libvirtXMLHead = `e1000e-vfu libvirt-xml --socket PATH [--control PATH] [--mac MAC]
                       [--version N] [--param name=value]... [--config SRC]
                       [--netdev SPEC] [--bridge NAME] [--id ID] [--bus BUS] [--addr SLOT]
                       [--socket-dir DIR] [--netdevs KINDS]
e1000e-vfu libvirt-xml --read-domain FILE [--socket-dir DIR] [--netdevs KINDS]

Prints the two blocks a libvirt domain needs for one NIC: the <metadata>
element the hook (contrib/libvirt) starts the server from, and the
<qemu:commandline> that attaches it to QEMU as a vfio-user-pci device with
a fixed PCI address and "enable-migration":"on" (a QEMU that cannot migrate
the device then refuses to start rather than lose its state). The NIC's
configuration is resolved here as serve would resolve it (--version,
--param, or a source's --config) and written as the source list with its
MAC, so that every host starts the server with exactly that list.

--read-domain reads a domain's XML (a file, or - for stdin) and prints one
line per NIC of its metadata, fields separated by tabs, "-" for an empty
one: the domain's UUID, the NIC's id, socket, control socket, netdev,
bridge, and its configuration as the JSON serve --config takes. A domain
without the metadata prints nothing. This is the hook's reader.

The metadata is trusted no further than the hook needs: the hook runs as
root and removes, creates and serves what it names. Both modes refuse a
socket or control path that is not clean (filepath.Clean) or not below
--socket-dir, a netdev whose kind --netdevs does not list (a stream or
dgram backend may name any socket or address of the host), a bridge
without a tap netdev, two NICs on one path, and more than 16 NICs.

Exit status: 0 printed; 2 bad usage or bad input (one line naming the flag
or value); 4 the output could not be written.
`

// libvirtNS is the namespace of the NICs' element in a domain's
// <metadata>: libvirt keeps one element per namespace there, and the hook
// finds its NICs by it.
const libvirtNS = "https://e1000e-vfu.dev/libvirt/1"

// qemuNS is libvirt's namespace for QEMU command-line passthrough.
const qemuNS = "http://libvirt.org/schemas/domain/qemu/1.0"

// maxNICs caps the NICs of one domain: the hook starts a server for each.
const maxNICs = 16

// nicPolicy is what the hook lets a domain's metadata name.
type nicPolicy struct {
	// SocketDir holds every socket, with a trailing slash.
	SocketDir string
	// Netdevs are the netdev kinds allowed.
	Netdevs []string
}

// maxDomainXML caps what --read-domain reads: a domain's XML is a few
// KiB, and the hook hands over whatever libvirt gives it.
const maxDomainXML = 4 << 20

var (
	// QEMU's ids start with a letter; the hook also names files and
	// systemd units after the id.
	nicIDRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)
	// A Linux interface name.
	bridgeRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	// A slot with an optional function: 0x10, 10, 0x10.0, 1f.7.
	addrRe = regexp.MustCompile(`^(0x)?[0-9a-fA-F]{1,2}(\.[0-7])?$`)
	// libvirt's domain UUID.
	uuidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)
)

// libvirtNIC is one NIC as the metadata holds it.
type libvirtNIC struct {
	ID      string
	Socket  string
	Control string
	Netdev  string
	Bridge  string
	Bus     string
	Addr    string
	Source  model.Source // with its MAC
}

func libvirtXMLCmd(e env, args []string) error {
	fs := newFlagSet(e, "libvirt-xml", libvirtXMLHead)
	var (
		nic                               libvirtNIC
		mac, version, configSrc, readFrom string
		netdevSpec, socketDir, netdevs    string
		params                            listFlag
	)
	fs.StringVar(&nic.Socket, "socket", "", "the server's vfio-user socket `PATH`, absolute (required)")
	fs.StringVar(&nic.Control, "control", "", "the server's control socket `PATH` (default: the socket's path with .ctl for .sock)")
	fs.StringVar(&mac, "mac", "", "the NIC's `MAC` address (default: --config's, else derived from the socket path as serve does; written out)")
	fs.StringVar(&version, "version", "", "device model version `N` (default: the latest)")
	fs.Var(&params, "param", "device model parameter `name=value`; repeatable, later overrides earlier")
	fs.StringVar(&configSrc, "config", "", "exactly a source's configuration `SRC` (query-config output: a file, - for stdin, or the JSON)")
	fs.StringVar(&netdevSpec, "netdev", "none", "the server's network backend `SPEC`, as serve's --netdev")
	fs.StringVar(&nic.Bridge, "bridge", "", "a bridge `NAME` the hook adds the TAP of --netdev tap,ifname=... to")
	fs.StringVar(&nic.ID, "id", "nic0", "the QEMU device `ID`, also the NIC's name in the metadata")
	fs.StringVar(&nic.Bus, "bus", "pcie.0", "the PCI `BUS` QEMU puts the device on")
	fs.StringVar(&nic.Addr, "addr", "0x10", "the device's fixed PCI `SLOT`[.FN] on the bus (the migration stream names the device by it)")
	fs.StringVar(&readFrom, "read-domain", "", "read a domain's XML `FILE` (- for stdin) and print its NICs for the hook")
	fs.StringVar(&socketDir, "socket-dir", "/run/e1000e-vfu", "the `DIR` every socket must be below")
	fs.StringVar(&netdevs, "netdevs", "tap,none", "the netdev `KINDS` allowed, comma-separated (of none, tap, stream, dgram)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	given := setFlags(fs)
	if !filepath.IsAbs(socketDir) || filepath.Clean(socketDir) == "/" {
		return usagef("--socket-dir %q: want an absolute directory other than /", socketDir)
	}
	pol := nicPolicy{SocketDir: filepath.Clean(socketDir) + "/", Netdevs: strings.Split(netdevs, ",")}
	if given["read-domain"] {
		for _, f := range []string{"socket", "control", "mac", "version", "param", "config", "netdev", "bridge", "id", "bus", "addr"} {
			if given[f] {
				return usagef("--read-domain cannot be combined with --%s", f)
			}
		}
		return readDomainNICs(e, readFrom, pol)
	}

	if nic.Socket == "" {
		return usagef("--socket is required (see e1000e-vfu libvirt-xml --help)")
	}
	if nic.Control == "" {
		nic.Control = strings.TrimSuffix(nic.Socket, ".sock") + ".ctl"
	}
	nic.Netdev = netdevSpec
	// The configuration is resolved as serve resolves it, so a bad
	// version, parameter, MAC or netdev is refused here with serve's
	// words, long before a host tries to start the server.
	// --mac goes to serve only when given: a source's --config carries
	// its own, which a derived one would contradict.
	serveArgs := []string{"--validate-only", "--json", "--netdev", netdevSpec}
	if given["mac"] {
		serveArgs = append(serveArgs, "--mac", mac)
	}
	if given["version"] {
		serveArgs = append(serveArgs, "--version", version)
	}
	for _, p := range params {
		serveArgs = append(serveArgs, "--param", p)
	}
	if given["config"] {
		serveArgs = append(serveArgs, "--config", configSrc)
	}
	cfg, err := parseServe(e, serveArgs)
	if err != nil {
		return err
	}
	nic.Source = cfg.Device.Source()
	nic.Source.MAC = cfg.MAC
	if !cfg.MACFixed {
		// Neither --mac nor --config named one: serve would derive it
		// from its socket, as here, but the metadata must carry it.
		nic.Source.MAC = defaultMAC(nic.Socket)
	}
	if err := nic.validate(pol); err != nil {
		return usagef("--%s", err)
	}
	if !addrRe.MatchString(nic.Addr) {
		return usagef("--addr %q: want a slot with an optional function, e.g. 0x10 or 0x10.0", nic.Addr)
	}
	if !bridgeRe.MatchString(nic.Bus) {
		return usagef("--bus %q: not a bus name", nic.Bus)
	}
	// libvirt reads <qemu:commandline> only when the domain's root
	// element declares the namespace; without it the block is dropped in
	// silence and the guest starts without the NIC.
	head := fmt.Sprintf("<!-- e1000e-vfu NIC %s: both blocks go in <domain>, which must declare xmlns:qemu=%s -->\n", nic.ID, attr(qemuNS))
	out := head + nic.metadataXML() + nic.commandlineXML()
	if err := xmlChars(out); err != nil {
		return usagef("%s", err)
	}
	_, err = io.WriteString(e.stdout, out)
	return err
}

// xmlChars refuses what XML 1.0 cannot carry: libvirt would reject the
// domain, or (for invalid UTF-8, which encoding/json turns into U+FFFD in
// the -device argument but attr keeps) the two blocks would name
// different sockets.
func xmlChars(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("a value is not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r < 0x20, r == 0xFFFE, r == 0xFFFF:
			return fmt.Errorf("a value holds %U, which XML cannot carry", r)
		}
	}
	return nil
}

// validate checks what the hook will put on a command line and in file
// names: clean absolute socket paths below the policy's directory, short
// enough for a UNIX socket, an allowed netdev, and words without white
// space (the hook's lines are tab-separated).
func (n *libvirtNIC) validate(pol nicPolicy) error {
	if !nicIDRe.MatchString(n.ID) {
		return fmt.Errorf("id %q: a letter, then up to 31 letters, digits, '-' or '_'", n.ID)
	}
	for _, p := range []struct{ flag, path string }{{"socket", n.Socket}, {"control", n.Control}} {
		switch {
		case !filepath.IsAbs(p.path):
			return fmt.Errorf("%s %s: not an absolute path (the hook and QEMU run elsewhere)", p.flag, p.path)
		case len(p.path) > sunPathMax:
			return fmt.Errorf("%s %s: longer than %d bytes, too long for a UNIX socket", p.flag, p.path, sunPathMax)
		case hasSpaceOrControl(p.path):
			return fmt.Errorf("%s %q: white space or control characters", p.flag, p.path)
		case filepath.Clean(p.path) != p.path:
			return fmt.Errorf("%s %s: not a clean path (want %s)", p.flag, p.path, filepath.Clean(p.path))
		case !strings.HasPrefix(p.path, pol.SocketDir):
			return fmt.Errorf("%s %s: not below %s", p.flag, p.path, pol.SocketDir)
		}
	}
	if n.Socket == n.Control {
		return fmt.Errorf("control %s: the same path as --socket", n.Control)
	}
	if n.Netdev == "" || hasSpaceOrControl(n.Netdev) {
		return fmt.Errorf("netdev %q: empty, or white space or control characters", n.Netdev)
	}
	nd, err := netdev.Parse(n.Netdev)
	if err != nil {
		return err
	}
	if !slices.Contains(pol.Netdevs, nd.Type) {
		return fmt.Errorf("netdev %s: kind %s not allowed here (allowed: %s)", n.Netdev, nd.Type, strings.Join(pol.Netdevs, ", "))
	}
	if n.Bridge != "" {
		if !bridgeRe.MatchString(n.Bridge) {
			return fmt.Errorf("bridge %q: not an interface name", n.Bridge)
		}
		if nd.Type != "tap" || nd.TAP.Name == "" || tapName(n.Netdev) != nd.TAP.Name {
			return fmt.Errorf("bridge %s needs a --netdev tap,ifname=NAME whose TAP goes on it", n.Bridge)
		}
	}
	return nil
}

func hasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

// tapName is the TAP device a tap netdev names, or "".
func tapName(spec string) string {
	kind, opts, _ := strings.Cut(spec, ",")
	if kind != "tap" {
		return ""
	}
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(o, "ifname="); ok {
			return v
		}
	}
	return ""
}

// attr quotes an attribute value in single quotes, so that the JSON of a
// -device argument stays readable rather than a run of &quot;.
func attr(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "'", "&apos;")
	return "'" + r.Replace(s) + "'"
}

func (n *libvirtNIC) metadataXML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "<metadata>\n  <evfu:nics xmlns:evfu=%s>\n", attr(libvirtNS))
	fmt.Fprintf(&b, "    <evfu:nic id=%s socket=%s control=%s mac=%s netdev=%s", attr(n.ID), attr(n.Socket),
		attr(n.Control), attr(n.Source.MAC.String()), attr(n.Netdev))
	if n.Bridge != "" {
		fmt.Fprintf(&b, " bridge=%s", attr(n.Bridge))
	}
	fmt.Fprintf(&b, " model=%s", attr(n.Source.Model))
	if n.Source.Version != 0 {
		fmt.Fprintf(&b, " version='%d'", n.Source.Version)
	}
	if len(n.Source.Params) == 0 {
		b.WriteString("/>\n")
	} else {
		b.WriteString(">\n")
		for _, a := range n.Source.Params {
			v, _ := json.Marshal(a.Value) // a resolved value always marshals
			fmt.Fprintf(&b, "      <evfu:param name=%s value=%s/>\n", attr(a.Name), attr(string(v)))
		}
		b.WriteString("    </evfu:nic>\n")
	}
	b.WriteString("  </evfu:nics>\n</metadata>\n")
	return b.String()
}

func (n *libvirtNIC) commandlineXML() string {
	dev := struct {
		Driver    string            `json:"driver"`
		ID        string            `json:"id"`
		Bus       string            `json:"bus"`
		Addr      string            `json:"addr"`
		Socket    map[string]string `json:"socket"`
		Migration string            `json:"enable-migration"`
	}{"vfio-user-pci", n.ID, n.Bus, n.Addr, map[string]string{"type": "unix", "path": n.Socket}, "on"}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(dev) // strings and a map of strings always encode
	return fmt.Sprintf("<qemu:commandline xmlns:qemu=%s>\n  <qemu:arg value='-device'/>\n  <qemu:arg value=%s/>\n</qemu:commandline>\n",
		attr(qemuNS), attr(strings.TrimSpace(buf.String())))
}

// The parts of a domain's XML the hook reads. encoding/xml matches the
// metadata's elements by namespace URI, whatever prefix libvirt gave them.
type domainXML struct {
	UUID     string `xml:"uuid"`
	Metadata struct {
		NICs []struct {
			NIC []nicXML `xml:"https://e1000e-vfu.dev/libvirt/1 nic"`
		} `xml:"https://e1000e-vfu.dev/libvirt/1 nics"`
	} `xml:"metadata"`
}

type nicXML struct {
	ID      string `xml:"id,attr"`
	Socket  string `xml:"socket,attr"`
	Control string `xml:"control,attr"`
	MAC     string `xml:"mac,attr"`
	Netdev  string `xml:"netdev,attr"`
	Bridge  string `xml:"bridge,attr"`
	Model   string `xml:"model,attr"`
	Version string `xml:"version,attr"`
	Params  []struct {
		Name  string `xml:"name,attr"`
		Value string `xml:"value,attr"`
	} `xml:"https://e1000e-vfu.dev/libvirt/1 param"`
}

// readDomainNICs prints the NICs of a domain's metadata, one line each.
func readDomainNICs(e env, file string, pol nicPolicy) error {
	var r io.Reader
	if file == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return usagef("--read-domain %s", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxDomainXML+1))
	if err != nil {
		return usagef("--read-domain %s: %s", file, err)
	}
	if len(data) > maxDomainXML {
		return usagef("--read-domain %s: longer than %d bytes", file, maxDomainXML)
	}
	var d domainXML
	if err := xml.Unmarshal(data, &d); err != nil {
		return usagef("--read-domain %s: %s", file, err)
	}
	nics, err := d.nics(pol)
	if err != nil {
		return usagef("--read-domain %s: %s", file, err)
	}
	// A template has no UUID yet (libvirt gives one at define, and every
	// XML it hands a hook has one): "-", which the hook refuses.
	if len(nics) > 0 && d.UUID != "" && !uuidRe.MatchString(d.UUID) {
		return usagef("--read-domain %s: the domain's uuid %q is not a UUID", file, d.UUID)
	}
	var b strings.Builder
	for _, n := range nics {
		cfg, _ := json.Marshal(n.Source) // a decoded source always marshals
		fields := []string{d.UUID, n.ID, n.Socket, n.Control, n.Netdev, n.Bridge, string(cfg)}
		for i, f := range fields {
			if f == "" {
				fields[i] = "-"
			}
		}
		b.WriteString(strings.Join(fields, "\t") + "\n")
	}
	_, err = io.WriteString(e.stdout, b.String())
	return err
}

// nics checks every NIC of the metadata as the generator would have
// written it: the hook starts servers from what it reads, and the XML may
// have been edited by hand since.
func (d *domainXML) nics(pol nicPolicy) ([]libvirtNIC, error) {
	var out []libvirtNIC
	seen := make(map[string]string)
	for _, group := range d.Metadata.NICs {
		for _, x := range group.NIC {
			if len(out) == maxNICs {
				return nil, fmt.Errorf("more than %d NICs", maxNICs)
			}
			n, err := x.nic(pol)
			if err != nil {
				return nil, fmt.Errorf("nic %q: %w", x.ID, err)
			}
			for _, k := range []string{"id " + n.ID, "socket " + n.Socket, "socket " + n.Control} {
				if prev, dup := seen[k]; dup {
					return nil, fmt.Errorf("nic %q: %s is also nic %q's", n.ID, k, prev)
				}
				seen[k] = n.ID
			}
			out = append(out, n)
		}
	}
	return out, nil
}

func (x *nicXML) nic(pol nicPolicy) (libvirtNIC, error) {
	n := libvirtNIC{ID: x.ID, Socket: x.Socket, Control: x.Control, Netdev: x.Netdev, Bridge: x.Bridge}
	if n.Netdev == "" {
		n.Netdev = "none"
	}
	if x.MAC == "" {
		// The address must travel with the domain: a destination with
		// another one would refuse the state inside the downtime.
		return n, fmt.Errorf("no mac")
	}
	// The configuration goes through the same decoder as serve --config,
	// so that a value the hook passes on is one serve reads.
	params := make(map[string]json.RawMessage, len(x.Params))
	for _, p := range x.Params {
		if _, dup := params[p.Name]; dup {
			return n, fmt.Errorf("parameter %q given twice", p.Name)
		}
		params[p.Name] = json.RawMessage(p.Value)
	}
	src := map[string]any{"model": x.Model, "params": params, "mac": x.MAC}
	if x.Version != "" {
		v, err := model.ParseVersion(x.Version)
		if err != nil {
			return n, fmt.Errorf("version: %w", err)
		}
		src["version"] = v
	}
	raw, err := json.Marshal(src)
	if err != nil {
		// Only a parameter value that is not JSON fails here.
		return n, fmt.Errorf("a parameter value is not a JSON value (16, true, \"text\"): %w", err)
	}
	if n.Source, err = model.DecodeSource(bytes.NewReader(raw)); err != nil {
		return n, err
	}
	return n, n.validate(pol)
}
