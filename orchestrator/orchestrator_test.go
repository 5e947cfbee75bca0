package orchestrator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device/model"
)

// fakeTarget serves a fixed configuration on a control socket.
type fakeTarget struct{ cfg model.Config }

func (f fakeTarget) Config() model.Config     { return f.cfg }
func (f fakeTarget) Stats() map[string]uint64 { return nil }
func (f fakeTarget) LinkUp() bool             { return true }
func (f fakeTarget) SetLink(bool) error       { return nil }

func serveControl(t *testing.T, version int, settings ...string) string {
	t.Helper()
	var ss []model.Setting
	for _, s := range settings {
		st, err := model.ParseSetting(s)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, st)
	}
	cfg, err := model.E1000E().Resolve(version, ss)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&control.Server{Target: fakeTarget{cfg}}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// fakeQEMU answers QMP like a QEMU would for the commands the orchestrator
// sends; migrate-query answers come from a script.
type fakeQEMU struct {
	mu       sync.Mutex
	status   string
	running  bool
	script   []string // query-migrate replies, the last repeated
	executed []string
	// onMigrate runs when "migrate" arrives (the destination's side).
	onMigrate func()
}

func (q *fakeQEMU) serve(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go q.conn(c)
		}
	}()
	return path
}

func (q *fakeQEMU) conn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriter(c)
	send := func(v any) {
		b, _ := json.Marshal(v)
		w.Write(append(b, '\n'))
		w.Flush()
	}
	send(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if json.Unmarshal(line, &req) != nil {
			return
		}
		q.mu.Lock()
		q.executed = append(q.executed, req.Execute)
		var reply any = map[string]any{}
		switch req.Execute {
		case "query-status":
			reply = map[string]any{"status": q.status, "running": q.running}
		case "query-migrate":
			next := q.script[0]
			if len(q.script) > 1 {
				q.script = q.script[1:]
			}
			var v any
			json.Unmarshal([]byte(next), &v)
			reply = v
		case "migrate":
			if q.onMigrate != nil {
				q.onMigrate()
			}
		}
		q.mu.Unlock()
		// An event before the reply, as QEMU sends them.
		send(map[string]any{"event": "MIGRATION", "data": map[string]any{"status": "active"}})
		send(map[string]any{"return": reply})
	}
}

func (q *fakeQEMU) commands() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.executed...)
}

func loadModels(t *testing.T, path string) []*model.Model {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := model.DecodeDescription(f)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestRunCompletes(t *testing.T) {
	dst := &fakeQEMU{status: "inmigrate"}
	src := &fakeQEMU{status: "running", running: true, script: []string{
		`{"status":"active","total-time":100,"ram":{"transferred":1048576,"remaining":4194304,"dirty-sync-count":1}}`,
		`{"status":"completed","total-time":900,"downtime":42,"setup-time":3,"ram":{"transferred":9437184,"dirty-sync-count":4},"vfio":{"transferred":2048}}`,
	}}
	src.onMigrate = func() { dst.mu.Lock(); dst.status, dst.running = "running", true; dst.mu.Unlock() }
	var progress strings.Builder
	p := Plan{
		SrcControl:    serveControl(t, 2),
		DstControl:    serveControl(t, 2),
		DstModels:     model.All(),
		SrcQMP:        src.serve(t),
		DstQMP:        dst.serve(t),
		URI:           "unix:/nonexistent/mig.sock",
		Poll:          time.Millisecond,
		Progress:      &progress,
		DowntimeLimit: 500 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Run(ctx, p)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	if s.Total != 900*time.Millisecond || s.Downtime != 42*time.Millisecond || s.DeviceBytes != 2048 || s.RAMBytes != 9437184 || s.DirtySyncs != 4 {
		t.Errorf("summary %+v", s)
	}
	if len(s.Source.Params) != 1 || s.Source.Params[0].Name != model.RXFilterSize {
		t.Errorf("source list %+v", s.Source.Params)
	}
	out := progress.String()
	for _, want := range []string{"check: destination accepts", "migrate: active", "1.0 MiB sent", "migrate: completed", "device state 2048 bytes"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	got := strings.Join(src.commands(), ",")
	if !strings.Contains(got, "migrate-set-parameters,migrate,query-migrate") {
		t.Errorf("source QEMU saw %s", got)
	}
	if !strings.Contains(strings.Join(dst.commands(), ","), "migrate-incoming") {
		t.Errorf("destination QEMU saw %v", dst.commands())
	}
}

// A version-2 source against a destination that only knows version 1 is
// refused before either QEMU is touched, naming rx-filter-size.
func TestRunRefusesIncompatibleDestinationBeforeQEMU(t *testing.T) {
	dst := &fakeQEMU{status: "inmigrate"}
	src := &fakeQEMU{status: "running", running: true, script: []string{`{"status":"completed"}`}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstModels:  loadModels(t, "testdata/v1-only.json"),
		SrcQMP:     src.serve(t),
		DstQMP:     dst.serve(t),
		URI:        "unix:/x",
	}
	_, err := Run(context.Background(), p)
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Fatalf("err = %v, want an IncompatibleError naming rx-filter-size", err)
	}
	if n := len(src.commands()) + len(dst.commands()); n != 0 {
		t.Errorf("QEMU was contacted: src %v dst %v", src.commands(), dst.commands())
	}
}

// A server started as version 1 may go to the old host.
func TestCheckVersion1SourceAcceptedByV1Only(t *testing.T) {
	p := Plan{SrcControl: serveControl(t, 1), DstModels: loadModels(t, "testdata/v1-only.json")}
	if _, err := Check(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// The destination server must run the source's configuration.
func TestCheckDestinationServerConfigMismatch(t *testing.T) {
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstControl: serveControl(t, 2, "rx-filter-size=8"),
		DstModels:  model.All(),
	}
	_, err := Check(context.Background(), p)
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunReportsFailedMigration(t *testing.T) {
	dst := &fakeQEMU{status: "inmigrate"}
	src := &fakeQEMU{status: "running", running: true, script: []string{
		`{"status":"active","total-time":10}`,
		`{"status":"failed","error-desc":"vfio device refused the state"}`,
	}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstModels:  model.All(),
		SrcQMP:     src.serve(t),
		DstQMP:     dst.serve(t),
		URI:        "unix:/x",
		Poll:       time.Millisecond,
	}
	_, err := Run(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "vfio device refused the state") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunRefusesDestinationNotWaiting(t *testing.T) {
	dst := &fakeQEMU{status: "running", running: true}
	src := &fakeQEMU{status: "running", running: true, script: []string{`{"status":"completed"}`}}
	p := Plan{
		SrcControl: serveControl(t, 2),
		DstModels:  model.All(),
		SrcQMP:     src.serve(t),
		DstQMP:     dst.serve(t),
		URI:        "unix:/x",
	}
	_, err := Run(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "not waiting") {
		t.Fatalf("err = %v", err)
	}
	for _, c := range src.commands() {
		if c == "migrate" {
			t.Fatal("source migration started")
		}
	}
}
