package main

import (
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/panictest"
	"e1000e-vfu/vfiouser"
)

// panicReset is a device with a bug: its reset panics.
type panicReset struct{ device.Device }

func (panicReset) Reset() error { panic("a bug in reset") }

// TestStatusCountsVFIOUserPanics: a panic in a vfio-user handler ends that
// client's connection and shows in query-status as panics, and in serve's
// log as a record the tests' panic check finds.
func TestStatusCountsVFIOUserPanics(t *testing.T) {
	nic := newTestNIC(t)
	log := &panictest.Log{}
	srv := vfiouser.NewServer(panicReset{nic}, vfiouser.Options{Logger: slog.New(slog.NewTextHandler(log, nil))})
	tgt := &nicTarget{nic: nic, watch: newClientWatch(nic, slog.New(slog.DiscardHandler)), vfu: srv}
	if s := tgt.Status(); s.Panics != 0 {
		t.Fatalf("status %+v before any client", s)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := srv.NewConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- conn.Serve() }()
	cl := vfiouser.NewClient(fds[1])
	defer cl.Close()
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	if err := cl.Reset(); err == nil {
		t.Fatal("a reset that panicked succeeded")
	}
	if err := <-served; !vfiouser.IsPanic(err) {
		t.Fatalf("Serve returned %v, want the panic", err)
	}
	if s := tgt.Status(); s.Panics != 1 {
		t.Fatalf("status %+v, want panics 1", s)
	}
	if recs := panictest.Logged(log.String()); len(recs) != 1 {
		t.Fatalf("%d recovered panics found in the log, want 1:\n%s", len(recs), log)
	}
}
