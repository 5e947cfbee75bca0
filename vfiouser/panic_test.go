package vfiouser

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// recordLog keeps the records logged through it.
type recordLog struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *recordLog) WithGroup(string) slog.Handler            { return l }
func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

// errorAttrs returns the attributes of the error-level records.
func (l *recordLog) errorAttrs() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r.Level != slog.LevelError {
			continue
		}
		m := map[string]string{"msg": r.Message}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// TestHandlerPanicEndsTheConnection: a panic in a handler is a bug, not a
// bad request: the client gets no errno reply but loses the connection,
// the stack is logged at error level, and Server.Panics counts it.
func TestHandlerPanicEndsTheConnection(t *testing.T) {
	dev := newFakeDevice(t)
	log := &recordLog{}
	srv := NewServer(dev, Options{Logger: slog.New(log)}) // the panic is expected: no newServer
	_, _, cl := pairWith(t, srv, true)
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	dev.mu.Lock()
	dev.onWrite = func(off uint64) error {
		if off == 0x300 {
			panic("a bug in the device")
		}
		return nil
	}
	dev.mu.Unlock()
	err := cl.WriteRegion(0, 0x300, []byte{1})
	if err == nil {
		t.Fatal("a write whose handler panicked succeeded")
	}
	if _, ok := err.(*ReplyError); ok {
		t.Fatalf("a panic was answered like a bad request: %v", err)
	}
	if err := cl.ReadRegion(0, 0, make([]byte, 4)); err == nil {
		t.Fatal("the connection still answers after a panic")
	}
	if n := srv.Panics(); n != 1 {
		t.Fatalf("Panics() = %d, want 1", n)
	}
	errs := log.errorAttrs()
	if len(errs) != 1 {
		t.Fatalf("%d records at error level, want 1: %v", len(errs), errs)
	}
	if rec := errs[0]; rec["panic"] != "a bug in the device" || !strings.Contains(rec["stack"], "TestHandlerPanicEndsTheConnection") ||
		rec["cmd"] != CmdRegionWrite.String() {
		t.Fatalf("error record %v: want the panic, the command and a stack through the handler", rec)
	}
}
