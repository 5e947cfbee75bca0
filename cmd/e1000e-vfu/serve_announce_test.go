package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/device/announce"
)

// --announce reads into the schedule the NIC is built with: QEMU's by
// default, any subset of the keys over it, or off.
func TestParseServeAnnounce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	e := env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	def := announce.Default()
	for _, tc := range []struct {
		args []string
		want announce.Schedule
	}{
		{nil, def},
		{[]string{"--announce", "off"}, announce.Schedule{}},
		{[]string{"--announce", "rounds=0"}, announce.Schedule{}},
		{[]string{"--announce", "rounds=5,initial=50ms,max=550ms,step=100ms"}, def},
		{[]string{"--announce", "rounds=3,step=20ms"}, announce.Schedule{Rounds: 3, Initial: def.Initial, Max: def.Max, Step: 20 * time.Millisecond}},
		{[]string{"--announce", "initial=1s,max=2s"}, announce.Schedule{Rounds: 5, Initial: time.Second, Max: 2 * time.Second, Step: def.Step}},
	} {
		cfg, err := parseServe(e, append([]string{"--socket", sock}, tc.args...))
		if err != nil || cfg.Announce != tc.want {
			t.Errorf("%v: %+v, %v; want %+v", tc.args, cfg.Announce, err, tc.want)
		}
	}
}

// The serving line names the schedule only when it is not the default.
func TestStartAttrsAnnounce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	e := env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	for _, tc := range []struct {
		spec, want string
	}{
		{"", ""},
		{"rounds=5", ""},
		{"off", "off"},
		{"rounds=2", "rounds=2,initial=50ms,max=550ms,step=100ms"},
	} {
		args := []string{"--socket", sock}
		if tc.spec != "" {
			args = append(args, "--announce", tc.spec)
		}
		cfg, err := parseServe(e, args)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		attrs := (&server{}).startAttrs(cfg)
		for i := 0; i+1 < len(attrs); i += 2 {
			if attrs[i] == "announce" {
				got = attrs[i+1].(string)
			}
		}
		if got != tc.want {
			t.Errorf("--announce %q: attribute %q, want %q", tc.spec, got, tc.want)
		}
	}
}
