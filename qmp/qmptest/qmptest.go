// Package qmptest is a fake QEMU for tests of QMP clients: it speaks the
// QMP greeting, records every command it is sent, answers query-status from
// its state and query-migrate from a script, and counts connections, so a
// test can assert that nothing was sent to a QEMU at all.
package qmptest

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// QEMU answers QMP as a QEMU would for the commands a migration
// orchestrator sends. Set its fields before Serve; afterwards use the
// methods, which lock.
type QEMU struct {
	// Status and Running are query-status's answer.
	Status  string
	Running bool
	// Script holds query-migrate's answers as JSON, the last one repeated.
	Script []string
	// OnMigrate runs when "migrate" arrives, with q locked: a test uses it
	// to move the destination QEMU on (SetStatus of the other fake).
	OnMigrate func()

	mu       sync.Mutex
	executed []string
	conns    int
}

// Serve listens on a fresh UNIX socket until the test ends and returns its
// path.
func (q *QEMU) Serve(t testing.TB) string {
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
			q.mu.Lock()
			q.conns++
			q.mu.Unlock()
			go q.conn(c)
		}
	}()
	return path
}

// SetStatus changes query-status's answer.
func (q *QEMU) SetStatus(status string, running bool) {
	q.mu.Lock()
	q.Status, q.Running = status, running
	q.mu.Unlock()
}

// SetScript replaces query-migrate's answers with one, repeated.
func (q *QEMU) SetScript(reply string) {
	q.mu.Lock()
	q.Script = []string{reply}
	q.mu.Unlock()
}

// Commands lists the commands received, in order.
func (q *QEMU) Commands() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.executed...)
}

// Conns is the number of connections accepted.
func (q *QEMU) Conns() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.conns
}

func (q *QEMU) conn(c net.Conn) {
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
			ID        json.RawMessage `json:"id"`
		}
		if json.Unmarshal(line, &req) != nil {
			return
		}
		q.mu.Lock()
		q.executed = append(q.executed, req.Execute)
		var reply any = map[string]any{}
		switch req.Execute {
		case "query-status":
			reply = map[string]any{"status": q.Status, "running": q.Running}
		case "query-migrate":
			if len(q.Script) > 0 {
				next := q.Script[0]
				if len(q.Script) > 1 {
					q.Script = q.Script[1:]
				}
				var v any
				json.Unmarshal([]byte(next), &v)
				reply = v
			}
		case "migrate":
			if q.OnMigrate != nil {
				q.OnMigrate()
			}
		case "cont":
			q.Status, q.Running = "running", true
		}
		q.mu.Unlock()
		// An event before the reply, as QEMU sends them.
		send(map[string]any{"event": "MIGRATION", "data": map[string]any{"status": "active"}})
		rep := map[string]any{"return": reply}
		if req.ID != nil {
			rep["id"] = req.ID // as QEMU does
		}
		send(rep)
	}
}
