package netdev

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	cases := []struct {
		spec string
		want Config
	}{
		{"none", Config{Type: "none"}},
		{"none,id=n0", Config{Type: "none"}},
		{"tap", Config{Type: "tap", TAP: TAPConfig{Up: true}}},
		{"tap,ifname=tap7", Config{Type: "tap", TAP: TAPConfig{Name: "tap7", Up: true}}},
		{"tap,id=n0,ifname=tap7,script=no,downscript=no,up=off", Config{Type: "tap", TAP: TAPConfig{Name: "tap7"}}},
		{"stream,path=/run/n.sock", Config{Type: "stream", Stream: StreamConfig{Network: "unix", Address: "/run/n.sock"}}},
		{"stream,path=/run/a,,b,server=on", Config{Type: "stream", Stream: StreamConfig{Network: "unix", Address: "/run/a,b", Server: true}}},
		{"stream,addr.type=unix,addr.path=/run/n.sock,server=yes", Config{Type: "stream", Stream: StreamConfig{Network: "unix", Address: "/run/n.sock", Server: true}}},
		{"stream,host=127.0.0.1,port=5555", Config{Type: "stream", Stream: StreamConfig{Network: "tcp", Address: "127.0.0.1:5555"}}},
		{"stream,host=::1,port=5555,reconnect-ms=250", Config{Type: "stream", Stream: StreamConfig{Network: "tcp", Address: "[::1]:5555", Reconnect: 250 * time.Millisecond}}},
		{"stream,server=on,addr.type=inet,addr.host=0.0.0.0,addr.port=0", Config{Type: "stream", Stream: StreamConfig{Network: "tcp", Address: "0.0.0.0:0", Server: true}}},
		{"dgram,local=127.0.0.1:5000,remote=127.0.0.1:5001", Config{Type: "dgram", Dgram: DgramConfig{Network: "udp", Local: "127.0.0.1:5000", Remote: "127.0.0.1:5001"}}},
		{"dgram,local=[::1]:5000,remote=[::1]:5001", Config{Type: "dgram", Dgram: DgramConfig{Network: "udp", Local: "[::1]:5000", Remote: "[::1]:5001"}}},
		{"dgram,local.type=inet,local.host=127.0.0.1,local.port=5000,remote.type=inet,remote.host=10.0.0.2,remote.port=5001",
			Config{Type: "dgram", Dgram: DgramConfig{Network: "udp", Local: "127.0.0.1:5000", Remote: "10.0.0.2:5001"}}},
		{"dgram,local.path=/tmp/a,remote.path=/tmp/b", Config{Type: "dgram", Dgram: DgramConfig{Network: "unixgram", Local: "/tmp/a", Remote: "/tmp/b"}}},
		{"dgram,local.type=unix,local.path=/tmp/a,remote.type=unix,remote.path=/tmp/b", Config{Type: "dgram", Dgram: DgramConfig{Network: "unixgram", Local: "/tmp/a", Remote: "/tmp/b"}}},
	}
	for _, c := range cases {
		got, err := Parse(c.spec)
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		if got != c.want {
			t.Errorf("%q:\n got %+v\nwant %+v", c.spec, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	// Each error must be one line and name the culprit.
	cases := []struct{ spec, mention string }{
		{"", "empty"},
		{"socket,fd=3", `"socket"`},
		{"none,foo=1", `"foo"`},
		{"tap,ifname", `"ifname"`},
		{"tap,=x", `"=x"`},
		{"tap,ifname=a,ifname=b", `"ifname" given twice`},
		{"tap,ifname=averyveryverylongname", "ifname"},
		{"tap,ifname=a/b", "ifname"},
		{"tap,script=/etc/qemu-ifup", "script"},
		{"tap,up=maybe", "up"},
		{"tap,vhost=on", `"vhost"`},
		{"stream", "missing address"},
		{"stream,server=on", "missing address"},
		{"stream,path=", "addr.path"},
		{"stream,path=/a,host=b,port=1", "conflicts"},
		{"stream,path=/a,addr.path=/b", `"path" and "addr.path"`},
		{"stream,host=h", `"addr.port"`},
		{"stream,port=1", `"addr.host"`},
		{"stream,host=h,port=http", "addr.port"},
		{"stream,host=h,port=70000", "addr.port"},
		{"stream,host=h,port=0", "port 0"},
		{"stream,addr.type=vsock,addr.path=/a", "addr.type"},
		{"stream,addr.type=inet,addr.path=/a", "addr.path"},
		{"stream,path=/a,server=2", "server"},
		{"stream,path=/a,server=on,reconnect-ms=5", "reconnect-ms"},
		{"stream,path=/a,reconnect-ms=-1", "reconnect-ms"},
		{"stream,path=/a,reconnect-ms=99999999999", "reconnect-ms"},
		{"dgram", "missing address"},
		{"dgram,local=127.0.0.1:1", "remote"},
		{"dgram,local=127.0.0.1,remote=127.0.0.1:2", `local="127.0.0.1"`},
		{"dgram,local=:1,remote=127.0.0.1:2", "local"},
		{"dgram,local=127.0.0.1:x,remote=127.0.0.1:2", "local"},
		{"dgram,local=127.0.0.1:1,local.host=h,remote=127.0.0.1:2", `"local" conflicts with "local.host"`},
		{"dgram,local.path=/a,remote=127.0.0.1:2", "local is unix but remote is inet"},
		{"dgram,local.host=h,local.port=1,remote.host=h,remote.port=0", "remote.port"},
		{"dgram,local.path=/a,remote.path=/b,remote.type=inet", "remote.type=inet"},
		{"dgram,local.path=/a,remote.path=/b,mcast=on", `"mcast"`},
	}
	for _, c := range cases {
		_, err := Parse(c.spec)
		if err == nil {
			t.Errorf("%q: parsed", c.spec)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.mention) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q does not mention %q on one line", c.spec, msg, c.mention)
		}
	}
}

func TestOpenNone(t *testing.T) {
	b, err := Open(Config{Type: "none"}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	rx := newCollector()
	if err := b.Start(rx); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(testFrame(60, 0)); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(make([]byte, MaxFrameSize+1)); err == nil {
		t.Fatal("oversized frame accepted")
	}
	rx.expectNone(t, 10*time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenFailureIsNilBackend(t *testing.T) {
	cfg, err := Parse("stream,path=" + filepath.Join(t.TempDir(), "nobody"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(cfg, quietLog())
	if err == nil || b != nil {
		t.Fatalf("Open = %v, %v; want nil backend and an error", b, err)
	}
	if _, err := Open(Config{Type: "bogus"}, quietLog()); err == nil {
		t.Fatal("opened an unknown type")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"none", "tap,ifname=t0", "stream,path=/a,,b,server=on",
		"stream,host=::1,port=1,reconnect-ms=5", "dgram,local=1.2.3.4:5,remote=[::1]:6",
		"dgram,local.path=/a,remote.path=/b", ",,,=,", "dgram,local=,remote="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		cfg, err := Parse(spec)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(spec, "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		switch cfg.Type {
		case "none", "tap", "stream", "dgram":
		default:
			t.Fatalf("parsed to type %q", cfg.Type)
		}
	})
}
