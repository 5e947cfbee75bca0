package main

import (
	encbin "encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/vfiouser"
)

// fullEventFD makes e's counter one short of full and its file description
// blocking: the next write of 1 to it would wait until the client reads,
// which a hostile client never does.
func fullEventFD(t *testing.T, e *vfiouser.EventFD) {
	t.Helper()
	if err := unix.SetNonblock(e.FD(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := device.ReadEventfd(e.FD()); err != nil && err != unix.EAGAIN {
		t.Fatal(err)
	}
	var b [8]byte
	encbin.LittleEndian.PutUint64(b[:], 0xfffffffffffffffe)
	if _, err := unix.Write(e.FD(), b[:]); err != nil {
		t.Fatal(err)
	}
}

// The NIC, served by run, against a client that turns its interrupt
// eventfds against it. First a blocking eventfd one signal short of full,
// handed over with SET_IRQS: the interrupt that follows is dropped, and the
// register write that raised it, later reads and the next client are all
// answered. Then an eventfd the client makes blocking again after handing
// it over, signalled from a posted register write that leaves the
// connection stuck with the NIC's lock held: shutdown still completes
// within its bound.
func TestRunSurvivesFullEventfds(t *testing.T) {
	r := startInProc(t, "")
	g := connect(t, r.sock, 10*time.Second)
	g.c.SetTimeout(20 * time.Second) // a wedged server fails the test instead of hanging it
	g.setup()
	full, err := vfiouser.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	fullEventFD(t, full)
	if err := g.c.SetIRQEventFDs(device.IRQMSIX, 0, []*vfiouser.EventFD{full}); err != nil {
		t.Fatal("SET_IRQS with a full blocking eventfd:", err)
	}
	g.wr(e1000e.ICS, e1000e.ICR_RXQ0) // vector 0: the full eventfd
	if g.rd(e1000e.STATUS) == 0 {
		t.Fatal("STATUS reads 0")
	}
	g.close()

	// The next client is accepted; its socket is our own, to see when the
	// server has taken the posted write.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: r.sock}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	next := &guest{t: t, c: vfiouser.NewClient(fd)}
	t.Cleanup(next.close)
	next.c.SetTimeout(20 * time.Second)
	if _, err := next.c.Negotiate(nil); err != nil {
		t.Fatal("the next client:", err)
	}
	next.checkIdentity()
	next.setup()
	fullEventFD(t, next.efds[1]) // TX queue 0's vector, made blocking again
	if err := next.c.WritePosted(device.RegionBAR0, e1000e.ICS, encbin.LittleEndian.AppendUint32(nil, e1000e.ICR_TXQ0)); err != nil {
		t.Fatal(err)
	}
	waitTaken(t, fd)
	r.stop() // fails unless run returns nil within the shutdown bound
}

// waitTaken waits, at most 20 s, until the peer of socket fd has read
// everything sent on it.
func waitTaken(t *testing.T, fd int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still unread by the server", n)
		}
		time.Sleep(time.Millisecond)
	}
}
