package vfiouser

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"e1000e-vfu/device"
)

// TestClientHoldsDMAWhileWaiting: with HoldDMAWhileWaiting, as QEMU under
// its big lock, the client serves a DMA message that arrives while one of
// its calls waits only once that call's reply is in; without it, at once.
func TestClientHoldsDMAWhileWaiting(t *testing.T) {
	for _, hold := range []bool{true, false} {
		dev := newFakeDevice(t)
		_, _, cl := pair(t, dev, true, Options{})
		if _, err := cl.Negotiate(nil); err != nil {
			t.Fatal(err)
		}
		cl.HoldDMAWhileWaiting(hold)
		guest := make([]byte, 4096)
		if err := cl.MapMessage(0x40000, guest, DMAFlagRead|DMAFlagWrite); err != nil {
			t.Fatal(err)
		}
		written := func() bool {
			cl.memMu.RLock()
			defer cl.memMu.RUnlock()
			return string(guest[:2]) == "zz"
		}
		g := dev.worker(t)
		dmaDone := make(chan error, 1)
		servedInCall := make(chan bool, 1)
		dev.mu.Lock()
		dev.onWrite = func(off uint64) error {
			if off != 0x300 {
				return nil
			}
			// A device goroutine writes guest memory while the client
			// waits for this write's reply.
			go func() { dmaDone <- g.Write(0x40000, []byte("zz")) }()
			wait := 200 * time.Millisecond // long enough to be served, when it is
			if !hold {
				wait = 10 * time.Second
			}
			deadline := time.Now().Add(wait)
			for !written() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			servedInCall <- written()
			return nil
		}
		dev.mu.Unlock()
		if err := cl.WriteRegion(0, 0x300, []byte{1}); err != nil {
			t.Fatal(err)
		}
		if got := <-servedInCall; got == hold {
			t.Fatalf("hold %v: DMA served during the call: %v", hold, got)
		}
		if err := <-dmaDone; err != nil {
			t.Fatalf("hold %v: %v", hold, err)
		}
		if !written() {
			t.Fatalf("hold %v: DMA_WRITE not applied after the call", hold)
		}
	}
}

// TestTeardownWakesDMAWaiters: a device goroutine waiting for a DMA reply
// is woken when the connection ends, long before the DMA timeout, so
// Disconnect can wait for it.
func TestTeardownWakesDMAWaiters(t *testing.T) {
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, true, Options{DMATimeout: time.Hour})
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	// Mapped without fd, but this client never answers DMA: a raw map.
	var p [DMAMapSize]byte
	DMAMap{Argsz: DMAMapSize, Flags: 3, Addr: 0, Size: 4096}.Encode(p[:])
	if _, err := cl.Call(CmdDMAMap, p[:], nil); err != nil {
		t.Fatal(err)
	}
	g := dev.worker(t)
	res := make(chan error, 1)
	go func() { res <- g.Read(0, make([]byte, 4)) }()
	// Let the request go out before the end, so the waiter is pending.
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn.pmu.Lock()
		n := len(conn.pending)
		conn.pmu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no DMA request pending")
		}
		time.Sleep(time.Millisecond)
	}
	cl.Close()
	select {
	case err := <-res:
		if !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("waiter woken with %v, want ENOTCONN", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a DMA waiter outlived its connection")
	}
}

// TestMessageDMAOnlyThroughWorker: the table a device is given refuses
// memory mapped without fd at once, from any goroutine, and sends nothing;
// only its Worker accessor sends message DMA. Both reach fd-backed memory.
func TestMessageDMAOnlyThroughWorker(t *testing.T) {
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, true, Options{})
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	mem, err := NewMemory(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	copy(mem.Data, "fd")
	if err := cl.Map(0x3f000, mem, 0, 4096, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	guest := make([]byte, 4096)
	copy(guest, "msg")
	if err := cl.MapMessage(0x40000, guest, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	table, worker := dev.mem0(), dev.worker(t)

	for name, err := range map[string]error{
		"read":                table.Read(0x40000, make([]byte, 3)),
		"write":               table.Write(0x40000, []byte("no")),
		"read across the two": table.Read(0x3fffe, make([]byte, 4)),
	} {
		if !errors.Is(err, syscall.EDEADLK) {
			t.Errorf("%s of memory mapped without fd through the table: %v, want EDEADLK", name, err)
		}
	}
	conn.pmu.Lock()
	pending := len(conn.pending)
	conn.pmu.Unlock()
	if pending != 0 {
		t.Fatalf("%d DMA messages pending after refused accesses", pending)
	}
	cl.memMu.RLock()
	untouched := string(guest[:3]) == "msg"
	cl.memMu.RUnlock()
	if !untouched {
		t.Fatal("a refused write reached the client's memory")
	}

	for name, g := range map[string]device.GuestMemory{"table": table, "worker": worker} {
		got := make([]byte, 2)
		if err := g.Read(0x3f000, got); err != nil || string(got) != "fd" {
			t.Errorf("%s: fd-backed read: %q %v", name, got, err)
		}
	}
	got := make([]byte, 5)
	if err := worker.Read(0x3fffe, got); err != nil || string(got) != "\x00\x00msg" {
		t.Fatalf("worker read across the two mappings: %q %v", got, err)
	}
}
