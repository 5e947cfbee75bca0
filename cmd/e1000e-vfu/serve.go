package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"e1000e-vfu/device/announce"
	"e1000e-vfu/device/model"
	"e1000e-vfu/device/netdev"
)

// Config is everything serve needs, checked: parseServe builds it from the
// command line before anything starts, and run takes it.
type Config struct {
	// Socket is the vfio-user socket QEMU connects to.
	Socket string
	// MAC is the NIC's permanent address (NVM words 0-2). MACFixed says it
	// was given (--mac, or a --config that carries one) rather than derived
	// from the socket path; only a fixed one goes into --validate-only
	// --json, because a derived one depends on where the list is used.
	MAC      net.HardwareAddr
	MACFixed bool
	// Netdev is the network backend, parsed by netdev.Parse; NetdevSpec is
	// the spec as given, for logs.
	Netdev     netdev.Config
	NetdevSpec string
	// PCAP, when not empty, is a file that receives every frame in and out.
	PCAP string
	// LogLevel is the lowest level logged; Log is where the log goes
	// (os.Stderr when nil), set by the caller rather than a flag.
	LogLevel slog.Level
	Log      io.Writer
	// Control, when not empty, is the control socket's path.
	Control string
	// MigrationV1 offers the legacy v1 migration region beside migration
	// v2 ("off", "on", or "mmap" to also offer its data area for mmap).
	MigrationV1 string
	// MigrationP2P offers the RUNNING_P2P and PRE_COPY_P2P states ("on",
	// the default, or "off" for a client that mishandles them).
	MigrationP2P string
	// Announce is the schedule of the announcement the NIC sends when it
	// first runs after an incoming migration; Rounds 0 is off.
	Announce announce.Schedule
	// DMAFD is what may back guest memory mapped with an fd: "memory"
	// (the default: memfd, tmpfs or hugetlbfs) or "any" (any file).
	DMAFD string
	// Device is the device model's effective configuration.
	Device model.Config

	// Takeover, when not empty, is a running server's control socket: this
	// server takes that one's place (live upgrade) instead of starting
	// afresh. Its vfio-user socket, control socket and, unless given, MAC
	// are the predecessor's.
	Takeover string

	// ValidateOnly asks for the configuration to be printed, not served;
	// JSON prints it as the source list the compatibility check reads.
	ValidateOnly bool
	JSON         bool
}

const serveHead = `e1000e-vfu serve --socket PATH [flags]
e1000e-vfu serve --takeover CONTROL_SOCKET [flags]
e1000e-vfu serve --validate-only [--json] [flags]

Serves one emulated 82574L on the vfio-user socket PATH until SIGINT or
SIGTERM. Everything is checked before anything starts: a bad flag or value
exits with status 2 and one line naming it. --validate-only does the checks
and prints the configuration, opening nothing, so it needs no --socket.
--takeover replaces the server behind CONTROL_SOCKET, its guest unaware
(live upgrade): start it with that server's flags; it exits 1 naming each
difference when its configuration is not compatible, and that server runs
on untouched.

The device model's configuration is a version (default: the latest) plus
--param overrides, later ones winning; or, with --config, exactly a source's
configuration as query-config or --validate-only --json print it: every
parameter it does not list takes its off value, and its "mac", when it has
one, is the NIC's address (a --mac that differs from it is refused).

Exit status: 0 stopped by SIGINT/SIGTERM, or --validate-only printed the
configuration; 2 bad usage or bad input (one line naming the flag or value);
4 the server could not start (a socket in use, a backend that cannot be
opened), failed while serving, or did not shut down in time.
`

// sunPathMax is the longest path a UNIX socket address holds on Linux.
const sunPathMax = 107

func parseServe(e env, args []string) (Config, error) {
	fs := newFlagSet(e, "serve", serveHead)
	var (
		cfg                             Config
		mac, netdevSpec, level, version string
		configFile, announceSpec        string
		params                          listFlag
	)
	fs.StringVar(&cfg.Socket, "socket", "", "vfio-user socket `PATH` to listen on (required, except with --validate-only)")
	fs.StringVar(&mac, "mac", "", "the NIC's `MAC` address (default: 02:e1:0e plus 3 bytes derived from the socket path)")
	fs.StringVar(&netdevSpec, "netdev", "none", "network backend `SPEC` in QEMU's -netdev syntax: none, tap[,ifname=NAME], stream,path=PATH[,server=on], stream,host=H,port=P[,server=on], dgram,local=H:P,remote=H:P, ... (see device/netdev/README.md)")
	fs.StringVar(&cfg.PCAP, "pcap", "", "write every frame to pcap `FILE`")
	fs.StringVar(&level, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&version, "version", "", "device model version `N` (default: the latest)")
	fs.Var(&params, "param", "device model parameter `name=value`; repeatable, later overrides earlier")
	fs.StringVar(&configFile, "config", "", "start with exactly the source configuration in `FILE` (- for stdin)")
	fs.BoolVar(&cfg.ValidateOnly, "validate-only", false, "check the configuration, print the effective parameters and exit")
	fs.BoolVar(&cfg.JSON, "json", false, "with --validate-only: print the configuration as the source list JSON")
	fs.StringVar(&cfg.Control, "control", "", "serve the control socket at `PATH`")
	fs.StringVar(&cfg.MigrationV1, "migration-v1", "off", "offer the legacy v1 migration region: off, on, or mmap (its data area mappable); migration v2 is always offered")
	fs.StringVar(&cfg.MigrationP2P, "migration-p2p", "on", "offer the migration states RUNNING_P2P and PRE_COPY_P2P, which QEMU needs from every device of a guest with several: on or off")
	fs.StringVar(&announceSpec, "announce", announce.Default().String(), "after an incoming migration, announce the guest's addresses with RARP broadcasts: off, or `SPEC` rounds=N,initial=D,max=D,step=D (any subset; Go durations)")
	fs.StringVar(&cfg.Takeover, "takeover", "", "take over from the server whose control socket is `PATH` (live upgrade): its client, guest memory, interrupts, backend and sockets pass to this process, which must be started with a compatible configuration")
	fs.StringVar(&cfg.DMAFD, "dma-fd", "memory", "what may back guest memory QEMU maps with an fd: memory (memfd, tmpfs or hugetlbfs) or any (any file; a page fault on a disk or network filesystem can then stall the device)")
	if err := parseFlags(fs, args); err != nil {
		return Config{}, err
	}
	given := setFlags(fs)

	// --validate-only opens no socket, so it needs none; one given is
	// still checked, as the server would.
	if cfg.Takeover != "" {
		if cfg.ValidateOnly {
			return Config{}, usagef("--takeover cannot be combined with --validate-only")
		}
		if len(cfg.Takeover) > sunPathMax {
			return Config{}, usagef("--takeover %s: longer than %d bytes, too long for a UNIX socket", cfg.Takeover, sunPathMax)
		}
		// The control socket is handed over with the rest.
		if cfg.Control != "" && !samePath(cfg.Control, cfg.Takeover) {
			return Config{}, usagef("--control %s: a successor serves its predecessor's control socket, %s", cfg.Control, cfg.Takeover)
		}
		cfg.Control = cfg.Takeover
		// A capture is the predecessor's to hand over, not to start anew.
		if cfg.PCAP != "" {
			return Config{}, usagef("--pcap %s: a successor goes on with its predecessor's capture, if any; leave --pcap out", cfg.PCAP)
		}
	}
	if cfg.Socket == "" && !cfg.ValidateOnly && cfg.Takeover == "" {
		return Config{}, usagef("--socket is required (see e1000e-vfu serve --help)")
	}
	if cfg.Socket != "" {
		if err := checkSocketPath(cfg.Socket); err != nil {
			return Config{}, usagef("--socket %s", err)
		}
	}
	if cfg.Control != "" && cfg.Takeover == "" {
		if err := checkSocketPath(cfg.Control); err != nil {
			return Config{}, usagef("--control %s", err)
		}
		if cfg.Socket != "" && samePath(cfg.Control, cfg.Socket) {
			return Config{}, usagef("--control %s: the same path as --socket", cfg.Control)
		}
	}
	if cfg.PCAP != "" {
		if err := checkParentDir(cfg.PCAP); err != nil {
			return Config{}, usagef("--pcap %s", err)
		}
	}
	switch cfg.MigrationV1 {
	case "off", "on", "mmap":
	default:
		return Config{}, usagef("--migration-v1 %q: want off, on or mmap", cfg.MigrationV1)
	}
	switch cfg.MigrationP2P {
	case "on", "off":
	default:
		return Config{}, usagef("--migration-p2p %q: want on or off", cfg.MigrationP2P)
	}
	switch cfg.DMAFD {
	case "memory", "any":
	default:
		return Config{}, usagef("--dma-fd %q: want memory or any", cfg.DMAFD)
	}
	if cfg.JSON && !cfg.ValidateOnly {
		return Config{}, usagef("--json needs --validate-only")
	}

	var err error
	if cfg.Announce, err = announce.ParseSchedule(announceSpec); err != nil {
		return Config{}, usagef("--announce %s", err)
	}

	// Without a socket (--validate-only) there is no path to derive an
	// address from, and a derived one is never printed anyway.
	switch {
	case mac != "":
		if cfg.MAC, err = model.ParseMAC(mac); err != nil {
			return Config{}, usagef("--mac %s", err)
		}
	case cfg.Socket != "":
		cfg.MAC = defaultMAC(cfg.Socket)
	}
	cfg.MACFixed = mac != ""
	cfg.NetdevSpec = netdevSpec
	if cfg.Netdev, err = netdev.Parse(netdevSpec); err != nil {
		// netdev's errors start with "netdev", which names the flag.
		msg := err.Error()
		if !strings.HasPrefix(msg, "netdev") {
			msg = "netdev " + msg
		}
		return Config{}, usagef("--%s", msg)
	}
	if cfg.LogLevel, err = parseLevel(level); err != nil {
		return Config{}, usagef("--log-level %s", err)
	}
	if given["config"] {
		if given["version"] || given["param"] {
			return Config{}, usagef("--config cannot be combined with --version or --param")
		}
		src, err := readSource(e, configFile)
		if err != nil {
			return Config{}, usagef("--config %s", err)
		}
		if cfg.Device, err = deviceFromSource(src); err != nil {
			return Config{}, usagef("--config %s: %s", configFile, err)
		}
		// The source's address comes with its list: the state carries it,
		// and a destination with another would refuse the state only once
		// the source has stopped.
		if src.MAC != nil {
			if cfg.MACFixed && !bytes.Equal(cfg.MAC, src.MAC) {
				return Config{}, usagef("--mac %s differs from the mac %s in --config: a destination runs the source's address", cfg.MAC, src.MAC)
			}
			cfg.MAC, cfg.MACFixed = src.MAC, true
		}
		return cfg, nil
	}
	n := 0
	if given["version"] {
		if n, err = model.ParseVersion(version); err != nil {
			return Config{}, usagef("--version: %s", err)
		}
	}
	settings := make([]model.Setting, 0, len(params))
	for _, p := range params {
		s, err := model.ParseSetting(p)
		if err != nil {
			return Config{}, usagef("--param %s", err)
		}
		settings = append(settings, s)
	}
	if cfg.Device, err = model.E1000E().Resolve(n, settings); err != nil {
		if strings.HasPrefix(err.Error(), "unsupported version") {
			return Config{}, usagef("--version: %s", err)
		}
		return Config{}, usagef("--param %s", err)
	}
	return cfg, nil
}

// deviceFromSource starts the device with a source's list (rule 8): the
// model must be ours, and every parameter not listed takes its off value.
func deviceFromSource(src model.Source) (model.Config, error) {
	m := model.Lookup(src.Model)
	if m == nil {
		return model.Config{}, fmt.Errorf("model %s is not implemented here (this program implements %s)",
			src.Model, model.E1000EName)
	}
	return m.ResolveList(src.Params)
}

// readSource reads a source configuration from a file, stdin ("-") or the
// argument itself when it is a JSON object.
func readSource(e env, arg string) (model.Source, error) {
	var r io.Reader
	switch {
	case arg == "-":
		r = e.stdin
	case strings.HasPrefix(strings.TrimSpace(arg), "{"):
		r = strings.NewReader(arg)
	case arg == "":
		return model.Source{}, fmt.Errorf("empty file name")
	default:
		f, err := os.Open(arg)
		if err != nil {
			return model.Source{}, err
		}
		defer f.Close()
		r = f
	}
	return model.DecodeSource(r)
}

func checkSocketPath(p string) error {
	if len(p) > sunPathMax {
		return fmt.Errorf("%s: longer than %d bytes, too long for a UNIX socket", p, sunPathMax)
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return fmt.Errorf("%s: is a directory", p)
	}
	return checkParentDir(p)
}

func checkParentDir(p string) error {
	dir := filepath.Dir(p)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: directory %s does not exist", p, dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %s is not a directory", p, dir)
	}
	return nil
}

func samePath(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// defaultMAC derives a locally administered unicast address from the
// socket's absolute path, so that two servers on one host differ without
// configuration and one server keeps its address across restarts.
func defaultMAC(socket string) net.HardwareAddr {
	p, err := filepath.Abs(socket)
	if err != nil {
		p = socket
	}
	h := fnv.New32a()
	h.Write([]byte(p))
	s := h.Sum32()
	return net.HardwareAddr{0x02, 0xe1, 0x0e, byte(s >> 16), byte(s >> 8), byte(s)}
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
}

// printValidated prints the effective configuration: the model and version,
// then every parameter as name=value; or, with --json, the source list,
// with the MAC when it was given rather than derived.
func printValidated(w io.Writer, cfg Config) error {
	if cfg.JSON {
		src := cfg.Device.Source()
		if cfg.MACFixed {
			src.MAC = cfg.MAC
		}
		b, err := json.Marshal(src)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	if cfg.Device.Version == 0 {
		fmt.Fprintf(w, "%s (matches no version)\n", cfg.Device.Model.Name)
	} else {
		fmt.Fprintf(w, "%s version %d\n", cfg.Device.Model.Name, cfg.Device.Version)
	}
	for _, a := range cfg.Device.Effective() {
		fmt.Fprintln(w, a)
	}
	return nil
}
