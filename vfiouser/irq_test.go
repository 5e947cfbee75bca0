package vfiouser

import (
	"syscall"
	"testing"
	"time"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

func TestSetIRQsEventFDs(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, cl := negotiated(t, dev)
	efds := make([]*EventFD, 3)
	for i := range efds {
		e, err := NewEventFD()
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		efds[i] = e
	}
	if err := cl.SetIRQEventFDs(device.IRQMSIX, 2, efds); err != nil {
		t.Fatal(err)
	}
	if err := dev.trigger(device.IRQMSIX, 3); err != nil {
		t.Fatal(err)
	}
	if n, err := efds[1].Wait(5 * time.Second); err != nil || n != 1 {
		t.Fatalf("vector 3: %d %v", n, err)
	}
	if n, _ := efds[0].Wait(0); n != 0 {
		t.Fatal("vector 2 signalled too")
	}
	// INTx with one eventfd, then DATA_BOOL unmask, DATA_NONE mask.
	if err := cl.SetIRQEventFDs(device.IRQINTx, 0, efds[:1]); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetIRQs(2|16, device.IRQINTx, 0, 1, []bool{true}, nil); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetIRQs(1|8, device.IRQINTx, 0, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	// De-assign with no fds, then disable the whole index.
	if err := cl.SetIRQs(4|32, device.IRQMSIX, 2, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := dev.trigger(device.IRQMSIX, 2); err == nil {
		t.Fatal("vector 2 still assigned after de-assign")
	}
	if err := cl.DisableIRQs(device.IRQMSIX); err != nil {
		t.Fatal(err)
	}
	if err := dev.trigger(device.IRQMSIX, 3); err == nil {
		t.Fatal("vector 3 still assigned after disable")
	}
	dev.mu.Lock()
	got := dev.setIRQs
	dev.mu.Unlock()
	if len(got) != 6 || got[2].Action != device.IRQActionUnmask || len(got[2].Bools) != 1 || !got[2].Bools[0] ||
		got[5].Count != 0 || got[3].Data != device.IRQDataNone {
		t.Fatalf("device saw %+v", got)
	}
}

func TestSetIRQsRefusals(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, cl := negotiated(t, dev)
	e, _ := NewEventFD()
	defer e.Close()
	mem, _ := NewMemory(4096)
	defer mem.Close()
	cases := []struct {
		name                string
		flags, index, start uint32
		count               uint32
		bools               []bool
		fds                 []int
	}{
		{"two data kinds", 1 | 4 | 32, 2, 0, 1, nil, []int{e.FD()}},
		{"no action", 4, 2, 0, 1, nil, []int{e.FD()}},
		{"two actions", 4 | 8 | 32, 2, 0, 1, nil, []int{e.FD()}},
		{"unknown flag", 1 | 32 | 64, 2, 0, 1, nil, nil},
		{"bad index", 1 | 32, 7, 0, 1, nil, nil},
		{"beyond count", 4 | 32, 2, 7, 2, nil, []int{e.FD(), e.FD()}},
		{"start overflow", 1 | 32, 2, 0xffffffff, 2, nil, nil},
		{"fd count", 4 | 32, 2, 0, 2, nil, []int{e.FD()}},
		{"not an eventfd", 4 | 32, 2, 0, 1, nil, []int{mem.FD()}},
		{"fds with DATA_NONE", 1 | 32, 2, 0, 1, nil, []int{e.FD()}},
		{"bools short", 2 | 32, 2, 0, 2, []bool{true}, nil},
		{"mask not maskable", 1 | 8, 2, 0, 1, nil, nil},
		{"count 0 with bool", 2 | 32, 2, 0, 0, nil, nil},
		{"count 0 with start", 1 | 32, 2, 1, 0, nil, nil},
	}
	for _, tc := range cases {
		err := cl.SetIRQs(tc.flags, tc.index, tc.start, tc.count, tc.bools, tc.fds)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		var re *ReplyError
		if !asReplyError(err, &re) || re.Errno != syscall.EINVAL {
			t.Errorf("%s: %v, want EINVAL", tc.name, err)
		}
	}
	dev.mu.Lock()
	n := len(dev.setIRQs)
	dev.mu.Unlock()
	if n != 0 {
		t.Fatalf("device got %d refused requests", n)
	}
	p := make([]byte, IRQSetSize)
	IRQSet{Argsz: 8, Flags: 1 | 32, Index: 2, Count: 1}.Encode(p)
	_, err := cl.Call(CmdSetIRQs, p, nil)
	wantErrno(t, err, syscall.EINVAL)
}

// TestIRQFDsClosedOnDisconnect: eventfds the device kept are dropped when
// the client goes (the fake device closes them in Disconnect), and nothing
// else leaks.
func TestIRQFDsClosedOnDisconnect(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, false, Options{})
	done := make(chan error)
	go func() { done <- conn.Serve() }()
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	e, _ := NewEventFD()
	if err := cl.SetIRQEventFDs(device.IRQMSI, 0, []*EventFD{e}); err != nil {
		t.Fatal(err)
	}
	e.Close()
	cl.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
