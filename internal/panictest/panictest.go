// Package panictest fails a test during which a server recovered a panic.
//
// The vfio-user and control servers recover a panic in a handler so that
// one bug does not take the process down, but a recovered panic is still a
// bug: it is counted (their Panics, query-status's panics) and logged at
// error level with the panic and its stack. A test that runs a server
// checks one or the other when it ends.
package panictest

import (
	"strings"
	"sync"
	"testing"
)

// Counter is a server that counts the panics it recovered
// (vfiouser.Server, control.Server).
type Counter interface{ Panics() uint64 }

// Check fails t if srv, named what, recovered a panic by the time t ends.
// Called before the cleanup that stops srv is registered, it runs after
// that cleanup, so a panic on the way out counts too.
func Check(t testing.TB, what string, srv Counter) {
	t.Cleanup(func() {
		if n := srv.Panics(); n != 0 {
			t.Errorf("the %s recovered %d panics: a bug (the stack is in its log)", what, n)
		}
	})
}

// Logged returns the records of recovered panics in log, a server's log
// in slog's text format: those at error level with a panic and its stack,
// as vfiouser's Conn.Step and control's Server log them.
func Logged(log string) []string {
	var recs []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "level=ERROR ") && strings.Contains(line, " panic=") && strings.Contains(line, " stack=") {
			recs = append(recs, strings.TrimSuffix(line, "\n"))
		}
	}
	return recs
}

// CheckLog fails t if log, named what, holds a recovered panic's record.
func CheckLog(t testing.TB, what, log string) {
	t.Helper()
	if recs := Logged(log); len(recs) > 0 {
		t.Errorf("%s: %d panics recovered, a bug:\n%s", what, len(recs), strings.Join(recs, "\n"))
	}
}

// Log is a server's log: its goroutines write it while the test reads it.
type Log struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
