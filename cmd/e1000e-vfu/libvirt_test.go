package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
)

// libvirtXMLRun runs libvirt-xml in process.
func libvirtXMLRun(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli(env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut}, append([]string{"libvirt-xml"}, args...))
	return result{code, out.String(), errOut.String()}
}

// wrapDomain puts blocks in a domain as a user would, with the root's
// qemu namespace libvirt needs.
func wrapDomain(blocks string) string {
	return "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n" +
		"<name>g</name><uuid>8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a</uuid>\n" + blocks + "</domain>\n"
}

// The blocks are XML libvirt can take, the -device argument is the JSON
// QEMU needs (fixed address, the socket, enable-migration on), and the
// metadata carries the resolved list and MAC: read back, it is exactly
// what serve --validate-only --json prints for the same flags.
func TestLibvirtXMLRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		serve []string
	}{
		{"latest", nil, nil},
		{"version 1", []string{"--version", "1"}, []string{"--version", "1"}},
		{"param", []string{"--version", "1", "--param", "rx-filter-size=4", "--param", "hide-msix=true"},
			[]string{"--version", "1", "--param", "rx-filter-size=4", "--param", "hide-msix=true"}},
		{"config", []string{"--config", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":8},"mac":"52:54:00:12:34:56"}`},
			[]string{"--config", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":8},"mac":"52:54:00:12:34:56"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--socket", "/run/e1000e-vfu/g-nic0.sock", "--mac", "52:54:00:12:34:56",
				"--netdev", "tap,ifname=evfu0", "--bridge", "br0", "--addr", "0x11"}, tc.args...)
			r := libvirtXMLRun(t, "", args...)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			dom := wrapDomain(r.stdout)
			if err := xml.Unmarshal([]byte(dom), new(struct{})); err != nil {
				t.Fatalf("not XML: %v\n%s", err, dom)
			}
			var d struct {
				Args []struct {
					Value string `xml:"value,attr"`
				} `xml:"http://libvirt.org/schemas/domain/qemu/1.0 commandline>arg"`
			}
			if err := xml.Unmarshal([]byte(dom), &d); err != nil {
				t.Fatal(err)
			}
			if len(d.Args) != 2 || d.Args[0].Value != "-device" {
				t.Fatalf("qemu:commandline args %+v, want -device and its JSON", d.Args)
			}
			var dev map[string]any
			if err := json.Unmarshal([]byte(d.Args[1].Value), &dev); err != nil {
				t.Fatalf("-device %s: %v", d.Args[1].Value, err)
			}
			sock, _ := dev["socket"].(map[string]any)
			if dev["driver"] != "vfio-user-pci" || dev["id"] != "nic0" || dev["bus"] != "pcie.0" || dev["addr"] != "0x11" ||
				dev["enable-migration"] != "on" || sock["type"] != "unix" || sock["path"] != "/run/e1000e-vfu/g-nic0.sock" {
				t.Errorf("-device %s", d.Args[1].Value)
			}

			back := libvirtXMLRun(t, dom, "--read-domain", "-")
			if back.code != exitOK {
				t.Fatalf("--read-domain: exit %d: %s", back.code, back.stderr)
			}
			f := strings.Split(strings.TrimSuffix(back.stdout, "\n"), "\t")
			want := []string{"8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a", "nic0", "/run/e1000e-vfu/g-nic0.sock",
				"/run/e1000e-vfu/g-nic0.ctl", "tap,ifname=evfu0", "br0"}
			if len(f) != 7 || strings.Join(f[:6], "|") != strings.Join(want, "|") {
				t.Fatalf("--read-domain printed %q, want fields %q and the config", back.stdout, want)
			}
			v := libvirtServe(t, append([]string{"serve", "--validate-only", "--json", "--mac", "52:54:00:12:34:56"}, tc.serve...)...)
			if f[6] != v {
				t.Errorf("config read back %s, serve --validate-only --json prints %s", f[6], v)
			}
			// serve takes it as its --config.
			libvirtServe(t, "serve", "--validate-only", "--config", f[6])
		})
	}
}

// Without --mac, the MAC is a source's --config's (query-config output
// carries one), else derived from the socket path as serve derives it;
// either way the metadata holds it.
func TestLibvirtXMLMACWithoutFlag(t *testing.T) {
	src := `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":8},"mac":"52:54:00:12:34:57"}`
	for _, tc := range []struct {
		name string
		args []string
		mac  string
	}{
		{"config", []string{"--config", src}, "52:54:00:12:34:57"},
		{"config and the same mac", []string{"--config", src, "--mac", "52:54:00:12:34:57"}, "52:54:00:12:34:57"},
		{"derived", []string{"--version", "1"}, defaultMAC("/run/e1000e-vfu/g-nic0.sock").String()},
		{"config without mac", []string{"--config", `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{}}`},
			defaultMAC("/run/e1000e-vfu/g-nic0.sock").String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := libvirtXMLRun(t, "", append([]string{"--socket", "/run/e1000e-vfu/g-nic0.sock"}, tc.args...)...)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "mac='"+tc.mac+"'") {
				t.Errorf("want mac %s in\n%s", tc.mac, r.stdout)
			}
		})
	}
	r := libvirtXMLRun(t, "", "--socket", "/run/e1000e-vfu/g-nic0.sock", "--config", src, "--mac", "52:54:00:12:34:56")
	if r.code != exitUsage || !strings.Contains(r.stderr, "differs from the mac") {
		t.Errorf("--mac against --config's: exit %d, %q", r.code, r.stderr)
	}
}

func libvirtServe(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := cli(env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}, args); code != exitOK {
		t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// libvirt writes the domain back in its own style (double quotes,
// entities, its own prefix): the reader goes by namespace, not by text.
func TestLibvirtXMLReadsLibvirtsStyle(t *testing.T) {
	dom := `<domain type="qemu" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
  <name>g</name>
  <uuid>8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a</uuid>
  <metadata>
    <other:thing xmlns:other="https://example.org/x"><nic id="not-ours"/></other:thing>
    <n:nics xmlns:n="https://e1000e-vfu.dev/libvirt/1">
      <n:nic id="a" socket="/run/e1000e-vfu/a&amp;b.sock" control="/run/e1000e-vfu/a.ctl" mac="52:54:00:00:00:01" model="e1000e-vfu.dev/devices/e1000e-82574l" version="2">
        <n:param name="rx-filter-size" value="16"/>
      </n:nic>
      <n:nic id="b" socket="/run/e1000e-vfu/b.sock" control="/run/e1000e-vfu/b.ctl" mac="52:54:00:00:00:02" model="e1000e-vfu.dev/devices/e1000e-82574l" version="1"/>
    </n:nics>
  </metadata>
</domain>`
	r := libvirtXMLRun(t, dom, "--read-domain", "-")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := "8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a\ta\t/run/e1000e-vfu/a&b.sock\t/run/e1000e-vfu/a.ctl\tnone\t-\t" +
		`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2,"mac":"52:54:00:00:00:01"}` + "\n" +
		"8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a\tb\t/run/e1000e-vfu/b.sock\t/run/e1000e-vfu/b.ctl\tnone\t-\t" +
		`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1,"mac":"52:54:00:00:00:02"}` + "\n"
	if r.stdout != want {
		t.Errorf("got\n%s\nwant\n%s", r.stdout, want)
	}

	// A domain of someone else's: nothing to do.
	r = libvirtXMLRun(t, "<domain><name>x</name><metadata/></domain>", "--read-domain", "-")
	if r.code != exitOK || r.stdout != "" {
		t.Errorf("a domain without our metadata: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// Bad flags and bad metadata exit 2 with one line naming what is wrong;
// the hook shows that line in libvirt's error.
func TestLibvirtXMLErrors(t *testing.T) {
	nic := func(attrs, body string) string {
		return wrapDomain(`<metadata><e:nics xmlns:e="https://e1000e-vfu.dev/libvirt/1"><e:nic ` + attrs + `>` + body + `</e:nic></e:nics></metadata>`)
	}
	ok := `id="nic0" socket="/run/e1000e-vfu/x.sock" control="/run/e1000e-vfu/x.ctl" mac="52:54:00:00:00:01" model="e1000e-vfu.dev/devices/e1000e-82574l"`
	var many string
	for i := 1; i <= maxNICs; i++ {
		many += fmt.Sprintf(`<e:nic id="n%d" socket="/run/e1000e-vfu/%d.sock" control="/run/e1000e-vfu/%d.ctl" mac="52:54:00:00:00:01" model="e1000e-vfu.dev/devices/e1000e-82574l"/>`, i, i, i)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", nil, "--socket is required"},
		{"", []string{"--socket", "x.sock"}, "--socket x.sock: not an absolute path"},
		{"", []string{"--socket", "/run/a b.sock"}, "white space"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--control", "/run/e1000e-vfu/x.sock"}, "the same path as --socket"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--id", "0nic"}, `--id "0nic"`},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--addr", "slot5"}, `--addr "slot5"`},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--bridge", "br0"}, "--bridge br0 needs a --netdev tap,ifname=NAME"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--version", "9"}, "--version: unsupported version 9"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--param", "nope=1"}, "--param unknown parameter nope"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--mac", "01:00:5e:00:00:01"}, "multicast"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--netdev", "vde"}, "--netdev"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--config", "{}", "--version", "1"}, "--config cannot be combined"},
		{"", []string{"--read-domain", "-", "--socket", "/run/e1000e-vfu/x.sock"}, "--read-domain cannot be combined with --socket"},
		{"<domain", []string{"--read-domain", "-"}, "--read-domain -: XML syntax error"},
		{nic(strings.Replace(ok, `mac="52:54:00:00:00:01"`, "", 1), ""), []string{"--read-domain", "-"}, `nic "nic0": no mac`},
		{nic(ok, `<e:param name="rx-filter-size" value="sixteen"/>`), []string{"--read-domain", "-"}, "not a JSON value"},
		{nic(ok, `<e:param name="rx-filter-size" value="1"/><e:param name="rx-filter-size" value="2"/>`), []string{"--read-domain", "-"}, "given twice"},
		{nic(ok+` version="x"`, ""), []string{"--read-domain", "-"}, `nic "nic0": version`},
		{nic(strings.Replace(ok, `/run/e1000e-vfu/x.sock`, `x.sock`, 1), ""), []string{"--read-domain", "-"}, "socket x.sock: not an absolute path"},
		{nic(strings.Replace(ok, `id="nic0"`, `id="a;b"`, 1), ""), []string{"--read-domain", "-"}, `id "a;b"`},
		{nic(ok+` netdev="tap,ifname=a b"`, ""), []string{"--read-domain", "-"}, "white space"},
		{strings.Replace(nic(ok, ""), "</e:nics>", `<e:nic `+strings.NewReplacer("/run/e1000e-vfu/x.ctl", "/run/e1000e-vfu/y.ctl", `id="nic0"`, `id="nic1"`).Replace(ok)+`/></e:nics>`, 1),
			[]string{"--read-domain", "-"}, `nic "nic1": socket /run/e1000e-vfu/x.sock is also nic "nic0"'s`},
		// The hook removes, creates and serves what the metadata names,
		// as root: only clean paths below the socket directory, and only
		// the netdev kinds allowed.
		{nic(strings.Replace(ok, `/run/e1000e-vfu/x.sock`, `/run/e1000e-vfu/../../etc/x.sock`, 1), ""), []string{"--read-domain", "-"}, "not a clean path"},
		{nic(strings.Replace(ok, `/run/e1000e-vfu/x.ctl`, `/etc/shadow`, 1), ""), []string{"--read-domain", "-"}, "control /etc/shadow: not below /run/e1000e-vfu/"},
		{nic(strings.Replace(ok, `/run/e1000e-vfu/x.sock`, `/run/e1000e-vfux.sock`, 1), ""), []string{"--read-domain", "-"}, "not below /run/e1000e-vfu/"},
		{nic(ok, ""), []string{"--read-domain", "-", "--socket-dir", "/srv/vfu"}, "not below /srv/vfu/"},
		{nic(ok+` netdev="stream,path=/var/run/docker.sock"`, ""), []string{"--read-domain", "-"}, "kind stream not allowed"},
		{nic(ok+` netdev="dgram,local.path=/tmp/a,remote.path=/tmp/b"`, ""), []string{"--read-domain", "-", "--netdevs", "tap,stream"}, "kind dgram not allowed"},
		{nic(ok+` netdev="tap,ifname=t0,bogus=1"`, ""), []string{"--read-domain", "-"}, "bogus"},
		{nic(ok+` bridge="br0"`, ""), []string{"--read-domain", "-"}, "bridge br0 needs a --netdev tap,ifname=NAME"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--netdev", "stream,path=/var/run/docker.sock"}, "kind stream not allowed"},
		{"", []string{"--socket", "/run/e1000e-vfu/x\xff.sock"}, "not valid UTF-8"},
		{"", []string{"--socket", "/run/e1000e-vfu/x\uffff.sock"}, "U+FFFF"},
		{"", []string{"--socket", "/run/e1000e-vfu/x\ufffe.sock"}, "U+FFFE"},
		{"", []string{"--socket", "/tmp/x.sock"}, "--socket /tmp/x.sock: not below /run/e1000e-vfu/"},
		{"", []string{"--socket", "/run/e1000e-vfu/x.sock", "--socket-dir", "run"}, "--socket-dir"},
		{strings.Replace(nic(ok, ""), "</e:nics>", many+"</e:nics>", 1), []string{"--read-domain", "-"}, "more than 16 NICs"},
		{strings.Replace(nic(ok, ""), "8c3a4a8e-6c3e-4b7e-9b1a-2f1d3e4c5b6a", "../x", 1), []string{"--read-domain", "-"}, `uuid "../x" is not a UUID`},
	} {
		r := libvirtXMLRun(t, tc.stdin, tc.args...)
		if r.code != exitUsage || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

func TestLibvirtXMLHelp(t *testing.T) {
	r := libvirtXMLRun(t, "", "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "Exit status:") || !strings.Contains(r.stdout, "--read-domain") {
		t.Errorf("--help: exit %d, %q", r.code, r.stdout)
	}
	var out bytes.Buffer
	cli(env{stdin: strings.NewReader(""), stdout: &out, stderr: &out}, []string{"help"})
	if !strings.Contains(out.String(), "libvirt-xml") {
		t.Errorf("the usage does not list libvirt-xml:\n%s", out.String())
	}
}
