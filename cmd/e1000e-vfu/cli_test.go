package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/describe.golden")

// binary is the command built once for the tests that run it as a process.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "e1000e-vfu-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "e1000e-vfu")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the command: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func runBinary(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errOut.String()}
}

// Every usage error exits 2 with exactly one line on stderr that names the
// bad flag or value, and nothing on stdout.
func TestUsageErrorsExit2WithOneLine(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	missing := filepath.Join(dir, "no", "such", "dir", "x")
	long := filepath.Join(dir, strings.Repeat("l", 120))
	notJSON := filepath.Join(dir, "not.json")
	os.WriteFile(notJSON, []byte("hello"), 0o600)
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"frobnicate"}, `e1000e-vfu frobnicate: unknown command "frobnicate"`},
		// serve
		{"", []string{"serve"}, "e1000e-vfu serve: --socket is required"},
		{"", []string{"serve", "--socket", sock, "--bogus"}, "flag provided but not defined: -bogus"},
		{"", []string{"serve", "--socket", sock, "extra"}, `unexpected argument "extra"`},
		{"", []string{"serve", "--socket"}, "flag needs an argument: -socket"},
		{"", []string{"serve", "--socket", sock, "--version", "4"}, "e1000e-vfu serve: --version: unsupported version 4 (supported: 1, 2, 3)"},
		{"", []string{"serve", "--socket", sock, "--version", "two"}, `--version: version "two": want a positive integer`},
		{"", []string{"serve", "--socket", sock, "--version", "0"}, `--version: version "0": want a positive integer`},
		{"", []string{"serve", "--socket", sock, "--param", "foo=1"}, "e1000e-vfu serve: --param unknown parameter foo"},
		{"", []string{"serve", "--socket", sock, "--param", "rx-filter-size=99"}, "e1000e-vfu serve: --param rx-filter-size=99 out of range 0..16"},
		{"", []string{"serve", "--socket", sock, "--version", "1", "--param", "rx-filter-size=-1"}, "--param rx-filter-size=-1 out of range 0..16"},
		{"", []string{"serve", "--socket", sock, "--param", "rx-filter-size=x"}, "--param rx-filter-size=x: not an integer"},
		{"", []string{"serve", "--socket", sock, "--param", "rx-filter-size"}, `--param "rx-filter-size": want name=value`},
		{"", []string{"serve", "--socket", sock, "--mac", "52:54:00:12:34"}, `--mac "52:54:00:12:34": not a 48-bit MAC address`},
		{"", []string{"serve", "--socket", sock, "--mac", "01:00:5e:00:00:01"}, "--mac 01:00:5e:00:00:01: a multicast address"},
		{"", []string{"serve", "--socket", sock, "--mac", "00:00:00:00:00:00"}, "the all-zero address"},
		{"", []string{"serve", "--socket", sock, "--netdev", "vde"}, `e1000e-vfu serve: --netdev: unknown type "vde"`},
		{"", []string{"serve", "--socket", sock, "--netdev", ""}, "e1000e-vfu serve: --netdev: empty spec"},
		{"", []string{"serve", "--socket", sock, "--netdev", "tap,ifname=a-very-long-interface"}, `--netdev tap: ifname="a-very-long-interface": longer than 15 bytes`},
		{"", []string{"serve", "--socket", sock, "--netdev", "tap,name=x"}, `--netdev tap: unknown key "name"`},
		{"", []string{"serve", "--socket", sock, "--netdev", "none,x=1"}, `--netdev none: unknown key "x"`},
		{"", []string{"serve", "--socket", sock, "--netdev", "stream"}, "--netdev stream: missing address"},
		{"", []string{"serve", "--socket", sock, "--netdev", "stream,host=h,port=70000"}, `--netdev stream: addr.port="70000"`},
		{"", []string{"serve", "--socket", sock, "--netdev", "tap,ifname=a,ifname=b"}, `--netdev tap: key "ifname" given twice`},
		{"", []string{"serve", "--socket", sock, "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{"", []string{"serve", "--socket", missing}, "does not exist"},
		{"", []string{"serve", "--socket", dir}, "is a directory"},
		{"", []string{"serve", "--socket", long}, "too long for a UNIX socket"},
		{"", []string{"serve", "--socket", sock, "--control", sock}, "the same path as --socket"},
		{"", []string{"serve", "--socket", sock, "--control", missing}, "--control " + missing},
		{"", []string{"serve", "--socket", sock, "--pcap", missing}, "--pcap " + missing},
		{"", []string{"serve", "--socket", sock, "--json"}, "--json needs --validate-only"},
		{"", []string{"serve", "--socket", sock, "--migration-p2p", "yes"}, `e1000e-vfu serve: --migration-p2p "yes": want on or off`},
		{"", []string{"serve", "--socket", sock, "--migration-p2p", ""}, `--migration-p2p "": want on or off`},
		{"", []string{"serve", "--socket", sock, "--migration-p2p"}, "flag needs an argument: -migration-p2p"},
		{"", []string{"serve", "--socket", sock, "--dma-fd", "all"}, `e1000e-vfu serve: --dma-fd "all": want memory or any`},
		{"", []string{"serve", "--socket", sock, "--announce", ""}, `--announce empty: want "off" or rounds=N,initial=D,max=D,step=D`},
		{"", []string{"serve", "--socket", sock, "--announce", "on"}, `--announce "on": want key=value`},
		{"", []string{"serve", "--socket", sock, "--announce", "rounds=101"}, "--announce rounds=101: want 0 (off) to 100"},
		{"", []string{"serve", "--socket", sock, "--announce", "rounds=-1"}, "--announce rounds=-1: want 0 (off) to 100"},
		{"", []string{"serve", "--socket", sock, "--announce", "initial=0s"}, "--announce initial=0s: want 1ms to 1m0s"},
		{"", []string{"serve", "--socket", sock, "--announce", "step=2m"}, "--announce step=2m0s: want 1ms to 1m0s"},
		{"", []string{"serve", "--socket", sock, "--announce", "initial=1s"}, "--announce initial=1s is longer than max=550ms"},
		{"", []string{"serve", "--socket", sock, "--announce", "max=soon"}, "--announce max=soon: not a duration"},
		{"", []string{"serve", "--socket", sock, "--announce", "rounds=2,rounds=3"}, "--announce rounds given twice"},
		{"", []string{"serve", "--socket", sock, "--announce", "delay=1s"}, `--announce unknown key "delay"`},
		{"", []string{"serve", "--socket", sock, "--config", "-", "--version", "1"}, "--config cannot be combined with --version or --param"},
		{"", []string{"serve", "--socket", sock, "--config", missing}, "--config open " + missing},
		{"", []string{"serve", "--socket", sock, "--config", notJSON}, "--config source configuration: not valid JSON at byte 1: invalid character"},
		{`{"model":"qemu.org/devices/e1000e","params":{}}`, []string{"serve", "--socket", sock, "--config", "-"}, "model qemu.org/devices/e1000e is not implemented here"},
		{`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"mac":"02:e1:0e:00:00:01"}`, []string{"serve", "--socket", sock, "--config", "-", "--mac", "02:e1:0e:00:00:02"},
			"e1000e-vfu serve: --mac 02:e1:0e:00:00:02 differs from the mac 02:e1:0e:00:00:01 in --config"},
		{`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"mac":"ff:ff:ff:ff:ff:ff"}`, []string{"serve", "--socket", sock, "--config", "-"}, "--config source configuration: mac ff:ff:ff:ff:ff:ff: a multicast address"},
		{`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":40,"foo":1}}`, []string{"serve", "--socket", sock, "--config", "-"}, "unknown parameter foo (known: caps-82574l, hide-msix, rx-filter-size); rx-filter-size=40 out of range 0..16"},
		// describe
		{"", []string{"describe", "now"}, `e1000e-vfu describe: unexpected argument "now"`},
		{"", []string{"describe", "--json"}, "flag provided but not defined: -json"},
		// check
		{"", []string{"check", "--source-version", "2"}, "e1000e-vfu check: --dest or --dest-config is required"},
		{"", []string{"check", "--dest", "x"}, "give either --source or --source-version/--source-param"},
		{"", []string{"check", "--dest", "x", "--source", "{}", "--source-version", "1"}, "give either --source or --source-version/--source-param"},
		{"", []string{"check", "--dest", "-", "--source", "-"}, "only one of --source, --dest and --dest-config may read stdin"},
		{"", []string{"check", "--dest-config", "-", "--source", "-"}, "only one of --source, --dest and --dest-config may read stdin"},
		{"", []string{"check", "--dest-config", "-", "--dest", "-", "--source-version", "1"}, "only one of --source, --dest and --dest-config may read stdin"},
		{"", []string{"check", "--dest-config", missing, "--source-version", "1"}, "--dest-config open " + missing},
		{"", []string{"check", "--dest-config", `{"model":"a.b/c","params":{},"mac":"x"}`, "--source-version", "1"}, `--dest-config source configuration: mac "x": not a 48-bit MAC address`},
		{"", []string{"check", "--dest", "-", "--source", `{"model":"a.b/c"}`}, "--source source configuration: no params"},
		{"", []string{"check", "--dest", "-", "--source", missing}, "--source open " + missing},
		{"", []string{"check", "--dest", "-", "--source-version", "9"}, "check: source: unsupported version 9 (supported: 1, 2, 3)"},
		{"", []string{"check", "--dest", "-", "--source-param", "foo=1"}, "source: unknown parameter foo"},
		{"", []string{"check", "--dest", "-", "--source-param", "foo"}, `--source-param "foo": want name=value`},
		{"", []string{"check", "--dest", missing, "--source-version", "1"}, "--dest open " + missing},
		{"{}", []string{"check", "--dest", "-", "--source-version", "1"}, "--dest description: no models"},
		{"nope", []string{"check", "--dest", "-", "--source-version", "1"}, "--dest description: not valid JSON at byte 2: invalid character"},
		// version
		{"", []string{"version", "x"}, `e1000e-vfu version: unexpected argument "x"`},
	} {
		name := strings.Join(tc.args, " ")
		r := runBinary(t, tc.stdin, tc.args...)
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2 (stderr %q)", name, r.code, r.stderr)
			continue
		}
		if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
			t.Errorf("%s: stderr is not one line: %q", name, r.stderr)
		}
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: stderr %q does not contain %q", name, r.stderr, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("%s: wrote to stdout: %q", name, r.stdout)
		}
	}
}

func TestNoArgumentsPrintsUsageAndExits2(t *testing.T) {
	r := runBinary(t, "")
	if r.code != 2 || !strings.Contains(r.stderr, "Usage:") || !strings.Contains(r.stderr, "e1000e-vfu check") {
		t.Errorf("got %+v", r)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		r := runBinary(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "e1000e-vfu serve --socket PATH") ||
			!strings.Contains(r.stdout, "e1000e-vfu describe") || r.stderr != "" {
			t.Errorf("%v: %+v", args, r)
		}
	}
	for _, cmd := range []string{"serve", "check", "describe"} {
		r := runBinary(t, "", cmd, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "e1000e-vfu "+cmd) || !strings.Contains(r.stdout, "Flags:") {
			t.Errorf("%s --help: %+v", cmd, r)
		}
	}
	r := runBinary(t, "", "serve", "--help")
	for _, f := range []string{"-socket", "-mac", "-netdev", "-pcap", "-log-level", "-version", "-param", "-validate-only", "-control", "-config", "-json", "-announce", "-dma-fd"} {
		if !strings.Contains(r.stdout, f) {
			t.Errorf("serve --help does not mention %s", f)
		}
	}
}

func TestVersion(t *testing.T) {
	r := runBinary(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "e1000e-vfu ") ||
		!strings.Contains(r.stdout, "model e1000e-vfu.dev/devices/e1000e-82574l versions 1, 2, 3 (latest 3)") {
		t.Errorf("got %+v", r)
	}
}

func TestValidateOnly(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", nil, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=true\nhide-msix=false\nrx-filter-size=16\n"},
		{"", []string{"--version", "1"}, "e1000e-vfu.dev/devices/e1000e-82574l version 1\ncaps-82574l=false\nhide-msix=false\nrx-filter-size=0\n"},
		{"", []string{"--param", "rx-filter-size=4", "--param", "rx-filter-size=8"}, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=true\nhide-msix=false\nrx-filter-size=8\n"},
		{"", []string{"--param", "hide-msix=true"}, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=true\nhide-msix=true\nrx-filter-size=16\n"},
		{"", []string{"--param", "hide-msix=true", "--json"}, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"hide-msix":true,"rx-filter-size":16},"version":3}` + "\n"},
		{"", []string{"--version", "1", "--json"}, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1}` + "\n"},
		{"", []string{"--json"}, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"rx-filter-size":16},"version":3}` + "\n"},
		// Version 2 is the first capability layout: caps-82574l at its off value, so not listed.
		{"", []string{"--version", "2"}, "e1000e-vfu.dev/devices/e1000e-82574l version 2\ncaps-82574l=false\nhide-msix=false\nrx-filter-size=16\n"},
		{"", []string{"--version", "2", "--json"}, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2}` + "\n"},
		{"", []string{"--param", "caps-82574l=false"}, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=false\nhide-msix=false\nrx-filter-size=16\n"},
		{"", []string{"--config", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"rx-filter-size":16}}`}, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=true\nhide-msix=false\nrx-filter-size=16\n"},
		// A given address is part of the list; a derived one is not.
		{"", []string{"--json", "--mac", "52:54:00:12:34:56"}, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"rx-filter-size":16},"version":3,"mac":"52:54:00:12:34:56"}` + "\n"},
		{`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"mac":"02:e1:0e:00:00:01"}`, []string{"--json", "--config", "-", "--mac", "02:e1:0e:00:00:01"},
			`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1,"mac":"02:e1:0e:00:00:01"}` + "\n"},
		// Started with a source's list: unlisted parameters take their off value.
		{`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{}}`, []string{"--config", "-"}, "e1000e-vfu.dev/devices/e1000e-82574l version 1\ncaps-82574l=false\nhide-msix=false\nrx-filter-size=0\n"},
		{"", []string{"--config", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":5}}`}, "e1000e-vfu.dev/devices/e1000e-82574l (matches no version)\ncaps-82574l=false\nhide-msix=false\nrx-filter-size=5\n"},
		{"", []string{"--mac", "52:54:00:12:34:56", "--netdev", "tap,ifname=tap0", "--log-level", "debug",
			"--pcap", filepath.Join(t.TempDir(), "f.pcap"), "--control", sock + ".ctl"}, "rx-filter-size=16\n"},
		{"", []string{"--netdev", "stream,path=q.sock,server=on"}, "rx-filter-size=16\n"},
		{"", []string{"--announce", "off"}, "rx-filter-size=16\n"},
		{"", []string{"--announce", "rounds=10,step=1s,max=5s"}, "rx-filter-size=16\n"},
		{"", []string{"--netdev", "dgram,local=127.0.0.1:5001,remote=127.0.0.1:5000"}, "rx-filter-size=16\n"},
	} {
		args := append([]string{"serve", "--socket", sock, "--validate-only"}, tc.args...)
		r := runBinary(t, tc.stdin, args...)
		if r.code != 0 || !strings.HasSuffix(r.stdout, tc.want) || r.stderr != "" {
			t.Errorf("%v: %+v, want stdout ending %q", tc.args, r, tc.want)
		}
	}
}

// --validate-only opens no socket, so it needs no --socket; serving still
// does.
func TestValidateOnlyNeedsNoSocket(t *testing.T) {
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", nil, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=true\nhide-msix=false\nrx-filter-size=16\n"},
		{"", []string{"--json"}, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"rx-filter-size":16},"version":3}` + "\n"},
		{"", []string{"--json", "--mac", "52:54:00:12:34:56"},
			`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"rx-filter-size":16},"version":3,"mac":"52:54:00:12:34:56"}` + "\n"},
		{`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"mac":"02:e1:0e:00:00:01"}`, []string{"--json", "--config", "-"},
			`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1,"mac":"02:e1:0e:00:00:01"}` + "\n"},
		{"", []string{"--control", filepath.Join(t.TempDir(), "c.sock")}, "e1000e-vfu.dev/devices/e1000e-82574l version 3\ncaps-82574l=true\nhide-msix=false\nrx-filter-size=16\n"},
	} {
		r := runBinary(t, tc.stdin, append([]string{"serve", "--validate-only"}, tc.args...)...)
		if r.code != 0 || r.stdout != tc.want || r.stderr != "" {
			t.Errorf("%v: %+v, want exit 0 and %q", tc.args, r, tc.want)
		}
	}
	// What would fail when serving still fails without a socket.
	r := runBinary(t, "", "serve", "--validate-only", "--param", "rx-filter-size=99")
	if r.code != 2 || r.stderr != "e1000e-vfu serve: --param rx-filter-size=99 out of range 0..16\n" {
		t.Errorf("bad parameter without a socket: %+v", r)
	}
	for _, args := range [][]string{{"serve"}, {"serve", "--json"}, {"serve", "--mac", "52:54:00:12:34:56"}} {
		r := runBinary(t, "", args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "e1000e-vfu serve: --socket is required") {
			t.Errorf("%v: %+v, want exit 2 and --socket is required", args, r)
		}
	}
}

func TestDescribeGolden(t *testing.T) {
	r := runBinary(t, "", "describe")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("describe: %+v", r)
	}
	golden := filepath.Join("testdata", "describe.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(want) {
		t.Errorf("describe output differs from %s (run with -update after checking the change):\n%s", golden, r.stdout)
	}
}

// The rules of the compatibility check, through the command line.
func TestCheck(t *testing.T) {
	own := filepath.Join("testdata", "describe.golden")
	v1only := filepath.Join("testdata", "v1-only.json")
	other := filepath.Join("testdata", "other-model.json")
	v2only := filepath.Join("..", "..", "device", "model", "testdata", "v2-only.json")
	srcV2 := `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2}`
	srcV3 := `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"caps-82574l":true,"rx-filter-size":16},"version":3}`
	// Against a destination server's configuration: model, parameters and
	// MAC, each named; a side without a MAC is not compared by address.
	srcMAC := `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2,"mac":"02:e1:0e:00:00:01"}`
	dstOtherMAC := strings.Replace(srcMAC, "00:00:01", "00:00:02", 1)
	dstV1 := `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1,"mac":"02:e1:0e:00:00:02"}`
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"model mismatch", "", []string{"--source", srcV2, "--dest", other}, 1,
			"model mismatch: source is e1000e-vfu.dev/devices/e1000e-82574l, destination offers qemu.org/devices/e1000e\n"},
		{"v1 source into v2-capable destination", "", []string{"--source-version", "1", "--dest", own}, 0, "compatible\n"},
		{"v2 source against v1-only", "", []string{"--source", srcV2, "--dest", v1only}, 1,
			"destination: unknown parameter rx-filter-size (known: none)\n"},
		{"v2-capable started as version 1 against v1-only", "", []string{"--source-version", "1", "--dest", v1only}, 0, "compatible\n"},
		{"override back to the old value", "", []string{"--source-version", "2", "--source-param", "rx-filter-size=0", "--dest", v1only}, 0, "compatible\n"},
		{"in range", "", []string{"--source", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":8}}`, "--dest", own}, 0, "compatible\n"},
		{"out of range, with every failure", "", []string{"--source",
			`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":99,"foo":true}}`, "--dest", own}, 1,
			"destination: unknown parameter foo (known: caps-82574l, hide-msix, rx-filter-size)\ndestination: rx-filter-size=99 out of range 0..16\n"},
		{"destination parameter without off value", "", []string{"--source-version", "2", "--dest",
			filepath.Join("..", "..", "device", "model", "testdata", "no-off-value.json")}, 1,
			"destination: parameter queues: not in the source's list, and it has no off value to take instead\n"},
		// A source list is JSON, where an enum value is a string: the check
		// reads it as the destination's enum, as a destination started with
		// the list would.
		{"enum value", "", []string{"--source", `{"model":"example.org/devices/every-type","params":{"enum":"slow"}}`, "--dest",
			filepath.Join("..", "..", "device", "model", "testdata", "every-type.json")}, 0, "compatible\n"},
		{"string where an integer is expected", "", []string{"--source", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":"16"}}`, "--dest", own}, 1,
			"destination: rx-filter-size=\"16\": a string, but rx-filter-size takes an integer in 0..16\n"},
		{"same configuration", "", []string{"--source", srcMAC, "--dest-config", srcMAC}, 0, "compatible\n"},
		{"destination without mac", "", []string{"--source", srcMAC, "--dest-config", srcV2}, 0, "compatible\n"},
		{"source without mac", "", []string{"--source-version", "2", "--dest-config", dstOtherMAC}, 0, "compatible\n"},
		{"other mac", "", []string{"--source", srcMAC, "--dest-config", dstOtherMAC}, 1,
			"mac: source runs 02:e1:0e:00:00:01, destination 02:e1:0e:00:00:02 (the state carries the address; start the destination with the source's)\n"},
		{"other mac and list, from stdin", dstV1, []string{"--source", srcMAC, "--dest-config", "-"}, 1,
			"mac: source runs 02:e1:0e:00:00:01, destination 02:e1:0e:00:00:02 (the state carries the address; start the destination with the source's)\n" +
				"source runs rx-filter-size=16, destination rx-filter-size=0\n"},
		{"description and configuration together", "", []string{"--source", srcMAC, "--dest", v1only, "--dest-config", dstOtherMAC}, 1,
			"destination: unknown parameter rx-filter-size (known: none)\n" +
				"mac: source runs 02:e1:0e:00:00:01, destination 02:e1:0e:00:00:02 (the state carries the address; start the destination with the source's)\n"},
		// The capability layout: a version-3 source needs a host that
		// knows caps-82574l; a running destination must have the source's
		// layout, whichever way round they differ.
		{"v3 source against v2-only", "", []string{"--source-version", "3", "--dest", v2only}, 1,
			"destination: unknown parameter caps-82574l (known: hide-msix, rx-filter-size)\n"},
		{"v3-capable started as version 2 against v2-only", "", []string{"--source-version", "2", "--dest", v2only}, 0, "compatible\n"},
		{"v2 source into v3-capable destination", "", []string{"--source", srcV2, "--dest", own}, 0, "compatible\n"},
		{"old layout against a running new layout", "", []string{"--source", srcV2, "--dest-config", srcV3}, 1,
			"source runs caps-82574l=false, destination caps-82574l=true\n"},
		{"new layout against a running old layout", "", []string{"--source", srcV3, "--dest-config", srcV2}, 1,
			"source runs caps-82574l=true, destination caps-82574l=false\n"},
		{"new layout against a running new layout", "", []string{"--source-version", "3", "--dest-config", srcV3}, 0, "compatible\n"},
		{"other model", "", []string{"--source", srcMAC, "--dest-config", `{"model":"qemu.org/devices/e1000e","params":{}}`}, 1,
			"model mismatch: source runs e1000e-vfu.dev/devices/e1000e-82574l, destination qemu.org/devices/e1000e\n"},
	} {
		r := runBinary(t, tc.stdin, append([]string{"check"}, tc.args...)...)
		if r.code != tc.code || r.stdout != tc.want || r.stderr != "" {
			t.Errorf("%s: %+v, want exit %d and %q", tc.name, r, tc.code, tc.want)
		}
	}

	// The orchestrator's pipeline: describe on the destination into check.
	desc := runBinary(t, "", "describe")
	src := runBinary(t, "", "serve", "--socket", filepath.Join(t.TempDir(), "s"), "--validate-only", "--json")
	r := runBinary(t, desc.stdout, "check", "--source", strings.TrimSpace(src.stdout), "--dest", "-")
	if r.code != 0 || r.stdout != "compatible\n" {
		t.Errorf("pipeline: %+v", r)
	}
}

func TestDefaultMACDiffersPerSocketAndIsLocal(t *testing.T) {
	a, b := defaultMAC("/run/a.sock"), defaultMAC("/run/b.sock")
	if a.String() == b.String() {
		t.Errorf("two sockets share %s", a)
	}
	if a.String() != defaultMAC("/run/a.sock").String() {
		t.Error("default MAC not stable")
	}
	for _, m := range [][]byte{a, b} {
		if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
			t.Errorf("%x is not a locally administered unicast address", m)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left") }

// One exit-status rule for every command: the mapping, and a command of
// each kind through it.
func TestExitStatusRule(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errHelp, exitOK},
		{usagef("--x bad"), exitUsage},
		{fmt.Errorf("wrapped: %w", usagef("--x bad")), exitUsage},
		{&statusError{exitIncompatible, errors.New("no")}, exitIncompatible},
		{&statusError{exitMigrationFailed, errors.New("failed")}, exitMigrationFailed},
		{errors.New("server unreachable"), exitFailure},
	} {
		if got := exitStatus(tc.err); got != tc.want {
			t.Errorf("exitStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if exitOK != 0 || exitIncompatible != 1 || exitUsage != 2 || exitMigrationFailed != 3 || exitFailure != 4 {
		t.Error("the documented exit statuses changed")
	}
	// describe whose output cannot be written fails at run time.
	var stderr strings.Builder
	e := env{stdin: strings.NewReader(""), stdout: failingWriter{}, stderr: &stderr}
	if code := cli(e, []string{"describe"}); code != exitFailure || !strings.Contains(stderr.String(), "no space left") {
		t.Errorf("describe to a full disk: exit %d, stderr %q", code, stderr.String())
	}
	// Every command's help states the rule.
	for _, cmd := range []string{"serve", "describe", "check", "control", "migrate"} {
		r := runBinary(t, "", cmd, "--help")
		if r.code != exitOK || !strings.Contains(r.stdout, "Exit status:") {
			t.Errorf("%s --help: exit %d, no exit statuses:\n%s", cmd, r.code, r.stdout)
		}
	}
	if r := runBinary(t, "", "help"); !strings.Contains(r.stdout, "3  a migration failed after it started") {
		t.Errorf("help lacks the exit statuses:\n%s", r.stdout)
	}
}
