package vfiouser

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// accessMsgs builds a 4-byte REGION_READ or REGION_WRITE request to BAR0
// and says how long the reply is.
func accessMsgs(write bool) (req []byte, replyLen int) {
	if write {
		req = make([]byte, HeaderSize+RegionRWSize+4)
		Header{MsgID: 1, Command: CmdRegionWrite, Size: uint32(len(req))}.Encode(req)
		RegionRW{Offset: 0x40, Region: 0, Count: 4}.Encode(req[HeaderSize:])
		copy(req[HeaderSize+RegionRWSize:], []byte{1, 2, 3, 4})
		return req, HeaderSize + RegionRWSize
	}
	req = make([]byte, HeaderSize+RegionRWSize)
	Header{MsgID: 1, Command: CmdRegionRead, Size: uint32(len(req))}.Encode(req)
	RegionRW{Offset: 0x40, Region: 0, Count: 4}.Encode(req[HeaderSize:])
	return req, HeaderSize + RegionRWSize + 4
}

func readFull(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Read(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		p = p[n:]
	}
	return nil
}

func roundTrip(fd int, req, reply []byte) error {
	if _, err := unix.Write(fd, req); err != nil {
		return err
	}
	return readFull(fd, reply)
}

// negotiatedPair returns a server conn (not yet serving) and the raw client
// descriptor after VERSION.
func negotiatedPair(tb testing.TB) (*Conn, int) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	srv := newServer(tb, newFakeDevice(tb), Options{Logger: slog.New(slog.DiscardHandler)})
	conn, err := srv.NewConn(fds[0])
	if err != nil {
		tb.Fatal(err)
	}
	cl := NewClient(fds[1])
	errc := make(chan error, 1)
	go func() { _, err := cl.Negotiate(nil); errc <- err }()
	if err := conn.Step(); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		unix.Close(fds[1])
		conn.Close()
	})
	return conn, fds[1]
}

// TestRegionAccessAllocs asserts the server handles REGION_READ and
// REGION_WRITE without allocating.
func TestRegionAccessAllocs(t *testing.T) {
	for _, write := range []bool{false, true} {
		conn, fd := negotiatedPair(t)
		req, n := accessMsgs(write)
		reply := make([]byte, n)
		step := func() {
			if _, err := unix.Write(fd, req); err != nil {
				t.Fatal(err)
			}
			if err := conn.Step(); err != nil {
				t.Fatal(err)
			}
			if err := readFull(fd, reply); err != nil {
				t.Fatal(err)
			}
		}
		step()
		if a := testing.AllocsPerRun(200, step); a != 0 {
			t.Errorf("write=%v: %.1f allocations per access", write, a)
		}
		if Header(mustHeader(t, reply)).Flags != FlagTypeReply {
			t.Fatalf("reply flags %#x", mustHeader(t, reply).Flags)
		}
	}
}

func mustHeader(t *testing.T, b []byte) Header {
	h, err := DecodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// echo answers each request of reqLen bytes with replyLen bytes: the raw
// AF_UNIX request/reply the server is measured against.
func echo(fd, reqLen, replyLen int) {
	buf := make([]byte, max(reqLen, replyLen))
	for {
		if readFull(fd, buf[:reqLen]) != nil {
			return
		}
		if _, err := unix.Write(fd, buf[:replyLen]); err != nil {
			return
		}
	}
}

func benchAccess(b *testing.B, write bool) {
	conn, fd := negotiatedPair(b)
	go conn.Serve()
	req, n := accessMsgs(write)
	reply := make([]byte, n)

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(pair[1])
	go func() { echo(pair[0], len(req), n); unix.Close(pair[0]) }()

	for range 1000 { // warm both paths
		roundTrip(fd, req, reply)
		roundTrip(pair[1], req, reply)
	}
	// Interleave batches of server and raw round trips so that a change in
	// machine load hits both sides alike.
	const batch = 64
	var server, raw time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		k := min(batch, b.N-done)
		b.StartTimer()
		start := time.Now()
		for range k {
			if err := roundTrip(fd, req, reply); err != nil {
				b.Fatal(err)
			}
		}
		server += time.Since(start)
		b.StopTimer()
		start = time.Now()
		for range k {
			if err := roundTrip(pair[1], req, reply); err != nil {
				b.Fatal(err)
			}
		}
		raw += time.Since(start)
	}
	if err := roundTrip(fd, req, reply); err != nil {
		b.Fatal(err)
	}
	if h, _ := DecodeHeader(reply); h.Flags != FlagTypeReply {
		b.Fatalf("reply flags %#x", h.Flags)
	}
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(server)/float64(raw), "x-raw")
}

// BenchmarkRegionRead: a 4-byte REGION_READ round trip through the server;
// raw-ns/op is the same-size raw socket round trip, x-raw the ratio.
func BenchmarkRegionRead(b *testing.B) { benchAccess(b, false) }

// BenchmarkRegionWrite: the same for a 4-byte REGION_WRITE.
func BenchmarkRegionWrite(b *testing.B) { benchAccess(b, true) }

// TestGuestMemoryAllocs: device reads and writes of mapped guest memory,
// the per-frame path of a NIC, allocate nothing, with dirty logging too.
func TestGuestMemoryAllocs(t *testing.T) {
	mem, err := NewMemory(16 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tab := NewDMATable(DefaultDMALimits)
	defer tab.UnmapAll()
	if err := tab.Map(DMAMap{Flags: 3, Addr: 0x100000, Size: 16 * 4096}, mem.FD()); err != nil {
		t.Fatal(err)
	}
	if _, err := tab.StartLogging(4096, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	a := testing.AllocsPerRun(100, func() {
		if err := tab.Write(0x100000+3000, buf); err != nil {
			t.Fatal(err)
		}
		if err := tab.Read(0x100000+100, buf[:16]); err != nil {
			t.Fatal(err)
		}
	})
	if a != 0 {
		t.Fatalf("%.1f allocations per guest memory access", a)
	}
}

// BenchmarkGuestMemory measures a device's 16-byte descriptor read and
// 1500-byte frame write through the DMA table.
func BenchmarkGuestMemory(b *testing.B) {
	mem, err := NewMemory(64 * 4096)
	if err != nil {
		b.Fatal(err)
	}
	defer mem.Close()
	tab := NewDMATable(DefaultDMALimits)
	defer tab.UnmapAll()
	if err := tab.Map(DMAMap{Flags: 3, Addr: 0x100000, Size: 64 * 4096}, mem.FD()); err != nil {
		b.Fatal(err)
	}
	desc, frame := make([]byte, 16), make([]byte, 1500)
	b.ReportAllocs()
	for i := range b.N {
		off := uint64(i%32) * 4096
		if err := tab.Read(0x100000+off, desc); err != nil {
			b.Fatal(err)
		}
		if err := tab.Write(0x100000+off+64, frame); err != nil {
			b.Fatal(err)
		}
	}
}
