package qmp

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve runs a scripted QMP peer: the greeting, then for each request line
// the next canned reply lines.
func serve(t *testing.T, greeting string, replies ...[]string) string {
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
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(greeting + "\n"))
		r := bufio.NewReader(c)
		for _, lines := range replies {
			if _, err := r.ReadBytes('\n'); err != nil {
				return
			}
			for _, l := range lines {
				c.Write([]byte(l + "\n"))
			}
		}
		r.ReadBytes('\n')
	}()
	return path
}

const greeting = `{"QMP":{"version":{},"capabilities":[]}}`

func TestExecuteReturnsErrorsAndKeepsEvents(t *testing.T) {
	path := serve(t, greeting,
		[]string{`{"return":{}}`},
		[]string{`{"event":"STOP","data":{}}`, `{"return":{"status":"paused","running":false}}`},
		[]string{`{"error":{"class":"GenericError","desc":"no such thing"}}`},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "paused" || st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	if ev := c.Events(); len(ev) != 1 || ev[0].Name != "STOP" {
		t.Errorf("events %+v", ev)
	}
	if ev := c.Events(); len(ev) != 0 {
		t.Errorf("events not forgotten: %+v", ev)
	}
	err = c.Execute(ctx, "frob", map[string]any{"x": 1}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || !strings.Contains(err.Error(), "no such thing") {
		t.Errorf("err = %v", err)
	}
}

func TestDialRefusesAPeerThatIsNotQMP(t *testing.T) {
	path := serve(t, `{"hello":1}`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, path); err == nil || !strings.Contains(err.Error(), "no QMP greeting") {
		t.Fatalf("err = %v", err)
	}
}

func TestExecuteHonoursTheContext(t *testing.T) {
	// A peer that greets, accepts capabilities, then never answers.
	path := serve(t, greeting, []string{`{"return":{}}`}, []string{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	start := time.Now()
	if err := c.Execute(short, "query-status", nil, nil); err == nil {
		t.Fatal("no error from a peer that never answers")
	}
	if time.Since(start) > 4*time.Second {
		t.Errorf("Execute returned after %v", time.Since(start))
	}
}
