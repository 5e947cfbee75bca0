package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// run in process: cancelling its context with a client connected drops
// the client, removes the socket and returns nil within the shutdown bound.
func TestRunStopsOnCancel(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "vfu.sock")
	ctl := filepath.Join(dir, "ctl.sock")
	e := env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	cfg, err := parseServe(e, []string{"--socket", sock, "--control", ctl, "--version", "1"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	cfg.Log = logs

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()

	g := connect(t, sock, 10*time.Second)
	g.checkIdentity()
	g.setup()
	if !strings.Contains(logs.String(), `params="rx-filter-size=0"`) {
		t.Errorf("version 1's parameters not in the startup line:\n%s", logs)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("run did not return after cancel")
	}
	gone(t, sock)
	gone(t, ctl)
	if err := g.c.Reset(); err == nil {
		t.Error("the client is still served after run returned")
	}
	for _, want := range []string{"msg=stopping reason=signal", "msg=stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// A start failure returns an error naming the part, and nothing is left.
func TestRunStartFailure(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "vfu.sock")
	e := env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	cfg, err := parseServe(e, []string{"--socket", sock, "--pcap", dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = io.Discard
	err = run(context.Background(), cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "--pcap "+dir+": ") {
		t.Fatalf("run with a directory as pcap file: %v", err)
	}
	gone(t, sock)
}

// run checks the configuration it is handed rather than trusting it.
func TestRunRefusesAnUnresolvedConfig(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vfu.sock")
	err := run(context.Background(), Config{Socket: sock, Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "e1000e model") {
		t.Fatalf("run without a device configuration: %v", err)
	}
	gone(t, sock)
}
