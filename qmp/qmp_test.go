package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// reply writes a return value with req's id, as QEMU does.
func reply(w io.Writer, req request, ret string) {
	fmt.Fprintf(w, `{"return":%s,"id":%s}`+"\n", ret, req.ID)
}

// peer serves one connection as a scripted QEMU: the greeting, the reply
// to qmp_capabilities, then every further request goes to handle, which
// writes what QEMU would and returns false to close the connection.
func peer(t *testing.T, greeting string, handle func(req request, w io.Writer) bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintln(c, greeting)
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req request
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				t.Errorf("bad request %q: %v", sc.Bytes(), err)
				return
			}
			if req.Execute == "qmp_capabilities" {
				reply(c, req, `{}`)
				continue
			}
			if !handle(req, c) {
				return
			}
		}
	}()
	return path
}

const greeting = `{"QMP":{"version":{},"capabilities":[]}}`

func dial(t *testing.T, path string) (*Client, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, ctx
}

func TestExecuteDecodesTheResult(t *testing.T) {
	var args []string
	path := peer(t, greeting, func(req request, w io.Writer) bool {
		args = append(args, string(req.Arguments))
		reply(w, req, `{"status":"paused","running":false}`)
		return true
	})
	c, ctx := dial(t, path)
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "paused" || st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	var raw json.RawMessage
	if err := c.Execute(ctx, "query-status", map[string]any{"x": 1}, &raw); err != nil || !strings.Contains(string(raw), `"paused"`) {
		t.Fatalf("raw query-status: %s, %v", raw, err)
	}
	if err := c.Execute(ctx, "query-status", nil, nil); err != nil {
		t.Fatal(err)
	}
	if len(args) != 3 || args[0] != "" || args[1] != `{"x":1}` || args[2] != "" {
		t.Errorf("arguments sent: %q", args)
	}
}

func TestAnErrorReplyIsAnError(t *testing.T) {
	path := peer(t, greeting, func(req request, w io.Writer) bool {
		if req.Execute == "frob" {
			fmt.Fprintf(w, `{"error":{"class":"GenericError","desc":"no such thing"},"id":%s}`+"\n", req.ID)
		} else {
			reply(w, req, `{}`)
		}
		return true
	})
	c, ctx := dial(t, path)
	err := c.Execute(ctx, "frob", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "no such thing" {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "frob") {
		t.Errorf("%q does not name the command", err)
	}
	// The connection stays usable.
	if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		t.Errorf("after an error reply: %v", err)
	}
}

func TestEventsAreBufferedAndWaitedFor(t *testing.T) {
	path := peer(t, greeting, func(req request, w io.Writer) bool {
		switch req.Execute {
		case "system_reset":
			// Events before the reply, as QEMU sends them.
			io.WriteString(w, `{"event":"STOP","data":{}}`+"\n"+`{"event":"RESET","data":{"guest":false}}`+"\n")
			reply(w, req, `{}`)
		case "device_del":
			// An event after the reply, while no command is in flight.
			reply(w, req, `{}`)
			io.WriteString(w, `{"event":"DEVICE_DELETED","data":{"device":"nic0"}}`+"\n")
		}
		return true
	})
	c, ctx := dial(t, path)
	if err := c.Execute(ctx, "system_reset", nil, nil); err != nil {
		t.Fatal(err)
	}
	ev, err := c.WaitEvent(ctx, "RESET")
	if err != nil || ev.Name != "RESET" || string(ev.Data) != `{"guest":false}` {
		t.Fatalf("RESET: %+v, %v", ev, err)
	}
	if err := c.Execute(ctx, "device_del", nil, nil); err != nil {
		t.Fatal(err)
	}
	ev, err = c.WaitEvent(ctx, "DEVICE_DELETED")
	if err != nil || string(ev.Data) != `{"device":"nic0"}` {
		t.Fatalf("DEVICE_DELETED: %+v, %v", ev, err)
	}
	// STOP came before RESET and was discarded by the wait for RESET; an
	// event that never comes ends with the context.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if ev, err := c.WaitEvent(short, "STOP"); !errors.Is(err, context.Canceled) {
		t.Errorf("STOP after it was passed over: %+v, %v", ev, err)
	}
}

func TestTheEventBufferDropsTheOldest(t *testing.T) {
	path := peer(t, greeting, func(req request, w io.Writer) bool {
		for i := 0; i <= MaxEvents; i++ {
			fmt.Fprintf(w, `{"event":"E%d"}`+"\n", i)
		}
		reply(w, req, `{}`)
		return true
	})
	c, ctx := dial(t, path)
	if err := c.Execute(ctx, "query-status", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The reader buffers each event before it delivers the reply after
	// them, so all have been seen.
	c.mu.Lock()
	n, first, last := len(c.events), c.events[0].Name, c.events[len(c.events)-1].Name
	c.mu.Unlock()
	if n != MaxEvents || first != "E1" || last != fmt.Sprintf("E%d", MaxEvents) {
		t.Fatalf("%d events kept, %s to %s; want %d, E1 to E%d", n, first, last, MaxEvents, MaxEvents)
	}
	over, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.WaitEvent(over, fmt.Sprintf("E%d", MaxEvents)); err != nil {
		t.Errorf("the newest event: %v", err)
	}
}

func TestAQEMUThatClosesTheSocket(t *testing.T) {
	path := peer(t, greeting, func(req request, w io.Writer) bool {
		switch req.Execute {
		case "quit":
			// QEMU answers quit, then goes.
			io.WriteString(w, `{"event":"SHUTDOWN","data":{"guest":false}}`+"\n")
			reply(w, req, `{}`)
		default:
			io.WriteString(w, `{"event":"RESET"}`+"\n")
		}
		return false
	})
	c, ctx := dial(t, path)
	if err := c.Execute(ctx, "quit", nil, nil); err != nil {
		t.Fatalf("quit, answered before the close: %v", err)
	}
	// An event that came before the close is still there.
	if _, err := c.WaitEvent(ctx, "SHUTDOWN"); err != nil {
		t.Errorf("SHUTDOWN: %v", err)
	}
	if _, err := c.WaitEvent(ctx, "RESET"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("waiting on a closed connection: %v", err)
	}
	if err := c.Execute(ctx, "query-status", nil, nil); err == nil {
		t.Error("a command on a closed connection succeeded")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestACommandGivenUpLosesItsLateReply(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var slow request
	path := peer(t, greeting, func(req request, w io.Writer) bool {
		switch req.Execute {
		case "slow":
			// Hold the reply; the client gives up waiting.
			slow = req
			cancel()
		default:
			reply(w, slow, `"slow's"`)
			reply(w, req, `"mine"`)
		}
		return true
	})
	c, outer := dial(t, path)
	if err := c.Execute(ctx, "slow", nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("slow: %v, want the context's end", err)
	}
	var got string
	if err := c.Execute(outer, "next", nil, &got); err != nil || got != "mine" {
		t.Errorf("next = %q, %v; want its own reply", got, err)
	}
}

func TestDialRefusesAPeerThatIsNotQMP(t *testing.T) {
	path := peer(t, `{"hello":1}`, func(request, io.Writer) bool { return true })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Dial(ctx, path); err == nil || !strings.Contains(err.Error(), "no QMP greeting") {
		t.Fatalf("err = %v", err)
	}
}

func TestDialDoesNotWaitForAMissingSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Dial(ctx, filepath.Join(t.TempDir(), "absent.sock"))
	if !errors.Is(err, syscall.ENOENT) || ctx.Err() != nil {
		t.Fatalf("err = %v, want ENOENT at once", err)
	}
}
