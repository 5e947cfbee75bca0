package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one connection the way QEMU does: greeting, then replies,
// with an event before the reply to "system_reset".
func fakeQMP(t *testing.T, l net.Listener) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var req struct {
			Execute string `json:"execute"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			t.Errorf("bad request %q", sc.Bytes())
			return
		}
		switch req.Execute {
		case "qmp_capabilities":
			c.Write([]byte(`{"return": {}}` + "\n"))
		case "system_reset":
			c.Write([]byte(`{"event": "RESET", "data": {"guest": false}}` + "\n" + `{"return": {}}` + "\n"))
		case "query-status":
			c.Write([]byte(`{"return": {"status": "running", "running": true}}` + "\n"))
		default:
			c.Write([]byte(`{"error": {"class": "CommandNotFound", "desc": "no such command"}}` + "\n"))
		}
	}
}

func TestQMP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go fakeQMP(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ret, err := q.Execute(ctx, "query-status", nil)
	if err != nil || !strings.Contains(string(ret), `"running"`) {
		t.Fatalf("query-status: %s, %v", ret, err)
	}
	if _, err := q.Execute(ctx, "nonsense", nil); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("unknown command: %v", err)
	}
	if _, err := q.Execute(ctx, "system_reset", nil); err != nil {
		t.Fatal(err)
	}
	if ev, err := q.WaitEvent(ctx, "RESET"); err != nil || !strings.Contains(string(ev.Data), "guest") {
		t.Errorf("event: %+v, %v", ev, err)
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := q.WaitEvent(short, "SHUTDOWN"); err == nil {
		t.Error("WaitEvent returned an event that never came")
	}
}

func TestQMPDialGivesUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := DialQMP(ctx, filepath.Join(t.TempDir(), "absent.sock")); err == nil {
		t.Error("dial of a missing socket succeeded")
	}
}
