package main

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/agentproto"
)

// exchange feeds lines to serve and returns the replies it wrote.
func exchange(t *testing.T, in string) []agentproto.Reply {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		serve(strings.NewReader(in), pw)
		pw.Close()
	}()
	var out []agentproto.Reply
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, agentproto.Prefix) {
			t.Fatalf("reply line without prefix: %q", line)
		}
		var r agentproto.Reply
		if err := json.Unmarshal([]byte(line[len(agentproto.Prefix):]), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestServe(t *testing.T) {
	reps := exchange(t, "noise\n"+
		`{"id":1,"cmd":"sh","args":["echo hi; exit 3"]}`+"\n"+
		`{"id":2,"cmd":"nope"}`+"\n"+
		`{"id":3,"cmd":"sh"}`+"\n"+
		`{broken`+"\n"+
		`{"id":4,"cmd":"read","args":["/proc/self/status"]}`+"\n")
	if len(reps) != 6 {
		t.Fatalf("%d replies, want 6: %+v", len(reps), reps)
	}
	if reps[0].ID != 0 || reps[0].Out != "ready" {
		t.Errorf("greeting %+v", reps[0])
	}
	if r := reps[1]; r.ID != 1 || !r.OK || r.Code != 3 || r.Out != "hi\n" {
		t.Errorf("sh: %+v", r)
	}
	if r := reps[2]; r.ID != 2 || r.OK || !strings.Contains(r.Err, "unknown command") {
		t.Errorf("unknown: %+v", r)
	}
	if r := reps[3]; r.ID != 3 || r.OK {
		t.Errorf("sh without arguments: %+v", r)
	}
	if r := reps[4]; r.OK || !strings.Contains(r.Err, "bad request") {
		t.Errorf("broken JSON: %+v", r)
	}
	if r := reps[5]; r.ID != 4 || !r.OK || r.Data["bytes"] == nil {
		t.Errorf("read: %+v", r)
	}
}

func TestLimitedBuffer(t *testing.T) {
	var b limitedBuffer
	b.Write(make([]byte, maxOut-1))
	n, err := b.Write([]byte("abc"))
	if n != 3 || err != nil {
		t.Errorf("write past the limit: %d, %v", n, err)
	}
	if b.b.Len() != maxOut || !strings.HasSuffix(b.String(), "[output truncated]") {
		t.Errorf("kept %d bytes", b.b.Len())
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"id":1,"cmd":"sh","args":["ip link"],"timeout_ms":5000}`))
	f.Add([]byte(`{"id":-1,"cmd":"","args":null}`))
	f.Add([]byte(`{"cmd":"send","args":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`))
	f.Add([]byte(`{"timeout_ms":99999999999999}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := decodeRequest(line)
		if err != nil {
			return
		}
		if req.Cmd == "" || len(req.Args) > 16 {
			t.Fatalf("accepted %+v", req)
		}
		if d := timeout(req); d <= 0 || d > 30*time.Minute {
			t.Fatalf("timeout %v out of bounds", d)
		}
	})
}
