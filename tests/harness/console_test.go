package harness

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/agentproto"
)

func TestConsoleWaitFor(t *testing.T) {
	host, guest := net.Pipe()
	c, err := newConsole(host, filepath.Join(t.TempDir(), "console.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mark := c.Mark()
	go guest.Write([]byte("booting\nLink is Up\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitFor(ctx, mark, "Link is Up"); err != nil {
		t.Fatal(err)
	}
	mark = c.Mark()
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := c.WaitFor(short, mark, "Link is Up"); err == nil {
		t.Error("WaitFor found text from before the mark")
	}
	guest.Close()
	if err := c.WaitFor(ctx, mark, "never"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after close: %v", err)
	}
	if !strings.Contains(c.Tail(100), "booting") {
		t.Errorf("tail %q", c.Tail(100))
	}
}

func TestConsoleKeepsBounded(t *testing.T) {
	host, guest := net.Pipe()
	c, err := newConsole(host, filepath.Join(t.TempDir(), "console.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 64<<10))
	for range 20 {
		guest.Write(chunk)
	}
	guest.Write([]byte("END"))
	guest.Close()
	<-c.done
	if n := len(c.Tail(1 << 30)); n > consoleKeep {
		t.Errorf("console keeps %d bytes, bound is %d", n, consoleKeep)
	}
	if !strings.HasSuffix(c.Tail(10), "END") {
		t.Errorf("tail lost the newest output: %q", c.Tail(10))
	}
	if c.Mark() != 20*64<<10+3 {
		t.Errorf("mark %d", c.Mark())
	}
}

// fakeAgent answers requests on conn like the guest agent, with noise
// around the replies, a stale reply, and "ready" first.
func fakeAgent(t *testing.T, conn net.Conn) {
	enc := func(r agentproto.Reply) string {
		b, _ := json.Marshal(r)
		return "kernel noise " + agentproto.Prefix + string(b) + "\n"
	}
	conn.Write([]byte("garbage before raw mode\n" + enc(agentproto.Reply{OK: true, Out: "ready"})))
	dec := json.NewDecoder(conn)
	for {
		var req agentproto.Request
		if err := dec.Decode(&req); err != nil {
			return
		}
		stale := enc(agentproto.Reply{ID: req.ID + 1000, OK: true, Out: "stale"})
		rep := agentproto.Reply{ID: req.ID, OK: true, Out: strings.Join(req.Args, ",")}
		if req.Cmd == "fail" {
			rep = agentproto.Reply{ID: req.ID, Err: "it failed"}
		}
		if req.Cmd == "sh" && req.Args[0] == "false" {
			rep.Code = 1
		}
		conn.Write([]byte(stale + enc(rep)))
	}
}

func TestAgentCall(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	go fakeAgent(t, guest)
	a := newAgent(host)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rp, err := a.Call(ctx, time.Second, "echo", "a", "b")
	if err != nil || rp.Out != "a,b" {
		t.Fatalf("call: %+v, %v", rp, err)
	}
	if _, err := a.Call(ctx, time.Second, "fail"); err == nil || !strings.Contains(err.Error(), "it failed") {
		t.Errorf("failing command: %v", err)
	}
	if _, err := a.Sh(ctx, time.Second, "false"); err == nil {
		t.Error("non-zero exit status was not an error")
	}
	guest.Close()
	if _, err := a.Call(ctx, time.Second, "echo"); err == nil {
		t.Error("call on a closed port succeeded")
	}
}
