package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/device/model"
	"e1000e-vfu/internal/panictest"
)

type fakeTarget struct {
	mu      sync.Mutex
	cfg     model.Config
	link    bool
	linkErr error
	panics  bool
}

func (f *fakeTarget) Config() model.Config {
	if f.panics {
		panic("boom")
	}
	return f.cfg
}

func (f *fakeTarget) Stats() map[string]uint64 {
	return map[string]uint64{"gprc": 7, "gptc": 3}
}

func (f *fakeTarget) LinkUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.link
}

func (f *fakeTarget) SetLink(up bool) error {
	if f.linkErr != nil {
		return f.linkErr
	}
	f.mu.Lock()
	f.link = up
	f.mu.Unlock()
	return nil
}

type statusTarget struct{ *fakeTarget }

func (statusTarget) Status() Status { return Status{State: "running", Migration: "pre-copy"} }

func newTarget(t *testing.T, version int) *fakeTarget {
	t.Helper()
	cfg, err := model.E1000E().Resolve(version, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeTarget{cfg: cfg, link: true}
}

// start serves tgt on a fresh socket and returns its path; the server is
// stopped, and its return checked, when the test ends. The test fails if
// the server recovered a panic.
func start(t *testing.T, srv *Server) string {
	t.Helper()
	panictest.Check(t, "control server", srv)
	return serve(t, srv)
}

// serve is start for a test that provokes panics on purpose and counts
// them itself.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return path
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{c: c, r: bufio.NewReader(c)}
}

func (c *client) send(t *testing.T, line string) map[string]any {
	t.Helper()
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	return c.recv(t)
}

func (c *client) recv(t *testing.T) map[string]any {
	t.Helper()
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return m
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestQueryConfigIsTheSourceList(t *testing.T) {
	for _, tc := range []struct {
		version int
		want    string
	}{
		{2, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2}`},
		{1, `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1}`},
	} {
		c := dial(t, start(t, &Server{Target: newTarget(t, tc.version)}))
		rep := c.send(t, `{"cmd":"query-config"}`)
		if rep["ok"] != true || asJSON(t, rep["result"]) != tc.want {
			t.Errorf("version %d: reply %v, want result %s", tc.version, rep, tc.want)
		}
		// The result is what the compatibility check takes as a source.
		src, err := model.DecodeSource(strings.NewReader(asJSON(t, rep["result"])))
		if err != nil {
			t.Fatal(err)
		}
		if ps := model.Check(src, model.All()); len(ps) != 0 {
			t.Errorf("own configuration refused: %v", ps)
		}
	}
}

// macTarget is a NIC: it has an address.
type macTarget struct {
	*fakeTarget
	mac net.HardwareAddr
}

func (m macTarget) MAC() net.HardwareAddr { return m.mac }

// A target with an address reports it in query-config, last, and the
// result still reads back as a source configuration carrying it.
func TestQueryConfigCarriesTheMAC(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0xe1, 0x0e, 0x01, 0x02, 0x03}
	c := dial(t, start(t, &Server{Target: macTarget{newTarget(t, 2), mac}}))
	line := `{"cmd":"query-config"}` + "\n"
	if _, err := io.WriteString(c.c, line); err != nil {
		t.Fatal(err)
	}
	raw, err := c.r.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"ok":true,"result":{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2,"mac":"02:e1:0e:01:02:03"}}` + "\n"
	if string(raw) != want {
		t.Errorf("query-config: %s, want %s", raw, want)
	}
	var rep struct{ Result json.RawMessage }
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	src, err := model.DecodeSource(strings.NewReader(string(rep.Result)))
	if err != nil || src.MAC.String() != mac.String() {
		t.Errorf("decoded %+v, %v; want mac %s", src, err, mac)
	}
}

func TestStatsAndLink(t *testing.T) {
	tgt := newTarget(t, 2)
	c := dial(t, start(t, &Server{Target: tgt}))
	rep := c.send(t, `{"cmd":"query-stats"}`)
	if got := asJSON(t, rep["result"]); got != `{"link_up":true,"stats":{"gprc":7,"gptc":3}}` {
		t.Errorf("query-stats: %v", rep)
	}
	rep = c.send(t, `{"cmd":"set-link","up":false,"id":7}`)
	if rep["ok"] != true || asJSON(t, rep["result"]) != `{"link_up":false}` || rep["id"] != float64(7) {
		t.Errorf("set-link down: %v", rep)
	}
	if tgt.LinkUp() {
		t.Error("target link still up")
	}
	rep = c.send(t, `{"cmd":"query-stats"}`)
	if asJSON(t, rep["result"]) != `{"link_up":false,"stats":{"gprc":7,"gptc":3}}` {
		t.Errorf("query-stats after link down: %v", rep)
	}
	rep = c.send(t, `{"cmd":"set-link","up":true,"id":"x"}`)
	if !tgt.LinkUp() || rep["id"] != "x" {
		t.Errorf("set-link up: %v", rep)
	}
	tgt.linkErr = errors.New("backend gone")
	rep = c.send(t, `{"cmd":"set-link","up":false}`)
	if rep["ok"] != false || rep["error"] != "set-link: backend gone" {
		t.Errorf("failing set-link: %v", rep)
	}
}

func TestQueryStatus(t *testing.T) {
	c := dial(t, start(t, &Server{Target: newTarget(t, 2)}))
	if rep := c.send(t, `{"cmd":"query-status"}`); asJSON(t, rep["result"]) != `{"state":"unknown"}` {
		t.Errorf("without a reporter: %v", rep)
	}
	c = dial(t, start(t, &Server{Target: statusTarget{newTarget(t, 2)}}))
	if rep := c.send(t, `{"cmd":"query-status"}`); asJSON(t, rep["result"]) != `{"migration":"pre-copy","state":"running"}` {
		t.Errorf("with a reporter: %v", rep)
	}
}

func TestBadRequestsGetErrorsAndTheConnectionGoesOn(t *testing.T) {
	c := dial(t, start(t, &Server{Target: newTarget(t, 2)}))
	for _, tc := range []struct{ in, want string }{
		{`not json`, "bad request"},
		{`{"cmd":"reboot"}`, `unknown command "reboot"`},
		{`{"cmd":"set-link"}`, `set-link needs "up"`},
		{`{"cmd":"set-link","up":"no"}`, `field "up" has the wrong type`},
		{`{"cmd":"query-config","up":true}`, "takes no arguments"},
		{`{"cmd":"query-config","extra":1}`, "unknown field"},
		{`{"cmd":"query-config"} {}`, "trailing data"},
		{`{}`, `no "cmd"`},
		{`[1]`, "bad request"},
		{`{"cmd":"query-config","id":{"a":1}}`, "id must be a number or a string"},
	} {
		rep := c.send(t, tc.in)
		if rep["ok"] != false || !strings.Contains(rep["error"].(string), tc.want) {
			t.Errorf("%s: reply %v, want an error mentioning %q", tc.in, rep, tc.want)
		}
	}
	// Blank lines are skipped, and the connection still answers.
	if rep := c.send(t, "\n"+`{"cmd":"query-stats"}`); rep["ok"] != true {
		t.Errorf("after errors: %v", rep)
	}
}

func TestOverlongRequestClosesTheConnection(t *testing.T) {
	c := dial(t, start(t, &Server{Target: newTarget(t, 2)}))
	go io.WriteString(c.c, `{"cmd":"`+strings.Repeat("x", 2*MaxRequest)+"\"}\n")
	rep := c.recv(t)
	if rep["ok"] != false || !strings.Contains(rep["error"].(string), "longer than") {
		t.Errorf("reply %v", rep)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection still open after an overlong request")
	}
}

// A panic in the target is a bug: the request gets an internal error, the
// connection is closed, the server goes on, query-status counts it, and
// the log has a record the tests' panic check finds.
func TestPanickingTargetClosesTheConnection(t *testing.T) {
	tgt := newTarget(t, 2)
	tgt.panics = true
	log := &panictest.Log{}
	srv := &Server{Target: tgt, Logger: slog.New(slog.NewTextHandler(log, nil))}
	path := serve(t, srv) // the panic is expected: no panictest.Check
	c := dial(t, path)
	if rep := c.send(t, `{"cmd":"query-config"}`); rep["ok"] != false || rep["error"] != "internal error in query-config" {
		t.Errorf("reply %v", rep)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection still open after a panic")
	}
	if n := srv.Panics(); n != 1 {
		t.Errorf("Panics() = %d, want 1", n)
	}
	c = dial(t, path)
	if rep := c.send(t, `{"cmd":"query-status"}`); asJSON(t, rep["result"]) != `{"panics":1,"state":"unknown"}` {
		t.Errorf("query-status after the panic: %v", rep)
	}
	if recs := panictest.Logged(log.String()); len(recs) != 1 {
		t.Errorf("%d recovered panics found in the log, want 1:\n%s", len(recs), log)
	}
}

func TestConnectionCap(t *testing.T) {
	path := start(t, &Server{Target: newTarget(t, 2), MaxConns: 1})
	first := dial(t, path)
	if rep := first.send(t, `{"cmd":"query-stats"}`); rep["ok"] != true {
		t.Fatalf("first connection: %v", rep)
	}
	second := dial(t, path)
	rep := second.recv(t)
	if rep["ok"] != false || rep["error"] != "too many connections (at most 1)" {
		t.Errorf("second connection: %v", rep)
	}
	first.c.Close()
	// The slot frees once the first handler has finished; a bounded retry
	// waits for that without a fixed sleep.
	// A refused connection is answered and closed at once, so the request
	// written on it may meet a closed socket: the reply line, when there
	// is one, says which happened.
	for i := 0; ; i++ {
		c := dial(t, path)
		io.WriteString(c.c, `{"cmd":"query-stats"}`+"\n")
		b, err := c.r.ReadBytes('\n')
		var rep map[string]any
		if err == nil && json.Unmarshal(b, &rep) == nil && rep["ok"] == true {
			break
		}
		if i == 100 {
			t.Fatalf("slot never freed: last reply %q, %v", b, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPeerNotAllowedIsClosed(t *testing.T) {
	c := dial(t, start(t, &Server{Target: newTarget(t, 2), AllowUID: func(uint32) bool { return false }}))
	io.WriteString(c.c, `{"cmd":"query-stats"}`+"\n")
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("a refused peer got an answer")
	}
}

func TestShutdownClosesConnections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Target: newTarget(t, 2)}
	panictest.Check(t, "control server", srv)
	go func() { done <- srv.Serve(ctx, ln) }()
	c := dial(t, path)
	if rep := c.send(t, `{"cmd":"query-stats"}`); rep["ok"] != true {
		t.Fatal(rep)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection open after shutdown")
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("still accepting after shutdown")
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listener on a live socket: %v", err)
	}
	// A socket left behind by a dead server is replaced.
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln2.Close()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
}

func TestDecodeRequest(t *testing.T) {
	req, err := DecodeRequest([]byte(`{"cmd":"set-link","up":false,"id":"a"}`))
	if err != nil || req.Cmd != CmdSetLink || req.Up == nil || *req.Up || string(req.ID) != `"a"` {
		t.Errorf("got %+v, %v", req, err)
	}
	// The id survives an error, so the reply can carry it.
	req, err = DecodeRequest([]byte(`{"cmd":"nope","id":3}`))
	if err == nil || string(req.ID) != "3" {
		t.Errorf("got %+v, %v", req, err)
	}
	if _, err := DecodeRequest([]byte(strings.Repeat(" ", MaxRequest+1))); err == nil {
		t.Error("overlong request accepted")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"cmd":"query-config"}`, `{"cmd":"query-stats","id":1}`, `{"cmd":"set-link","up":true}`,
		`{"cmd":"query-status","id":"x"}`, `{"cmd":"set-link"}`, `{`, `{"cmd":1}`, `{"id":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := DecodeRequest(line)
		if err != nil {
			return
		}
		switch req.Cmd {
		case CmdQueryConfig, CmdQueryStats, CmdQueryStatus:
			if req.Up != nil {
				t.Fatalf("accepted an argument for %s", req.Cmd)
			}
		case CmdSetLink:
			if req.Up == nil {
				t.Fatal("accepted set-link without up")
			}
		default:
			t.Fatalf("accepted unknown command %q", req.Cmd)
		}
		if len(req.ID) > 0 && !json.Valid(req.ID) {
			t.Fatalf("invalid id %q", req.ID)
		}
	})
}

func TestCall(t *testing.T) {
	tgt := newTarget(t, 2)
	path := start(t, &Server{Target: tgt})
	ctx := context.Background()
	res, err := Call(ctx, path, Request{Cmd: CmdQueryConfig})
	if err != nil || string(res) != `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2}` {
		t.Errorf("query-config: %s, %v", res, err)
	}
	down := false
	if _, err := Call(ctx, path, Request{Cmd: CmdSetLink, Up: &down}); err != nil || tgt.LinkUp() {
		t.Errorf("set-link: %v, link %v", err, tgt.LinkUp())
	}
	if _, err := Call(ctx, path, Request{Cmd: CmdSetLink}); err == nil || err.Error() != `set-link needs "up": true or false` {
		t.Errorf("error reply: %v", err)
	}
	if _, err := Call(ctx, filepath.Join(t.TempDir(), "none"), Request{Cmd: CmdQueryStats}); err == nil {
		t.Error("call to a missing socket succeeded")
	}
}
