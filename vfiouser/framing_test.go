package vfiouser

import (
	"bytes"
	"e1000e-vfu/internal/unixsock"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/leakcheck"
)

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func rawMsg(id uint16, cmd Command, payload []byte) []byte {
	b := make([]byte, HeaderSize+len(payload))
	Header{MsgID: id, Command: cmd, Size: uint32(len(b))}.Encode(b)
	copy(b[HeaderSize:], payload)
	return b
}

func eventfds(t *testing.T, n int) []int {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	t.Cleanup(func() { unixsock.CloseFDs(fds) })
	return fds
}

// TestFramingFDsFollowTheirHeader: messages that arrive in one read keep
// their own descriptors.
func TestFramingFDsFollowTheirHeader(t *testing.T) {
	leakcheck.FDs(t)
	a, b := socketpair(t)
	efd := eventfds(t, 2)
	// A (fd), B, C (fd), D all queued before the first read.
	if err := writeMsg(b, rawMsg(1, CmdSetIRQs, make([]byte, 20)), efd[:1]); err != nil {
		t.Fatal(err)
	}
	writeMsg(b, rawMsg(2, CmdRegionWrite, make([]byte, 20)), nil)
	writeMsg(b, rawMsg(3, CmdSetIRQs, make([]byte, 24)), efd[1:])
	writeMsg(b, rawMsg(4, CmdDeviceReset, nil), nil)
	rd := newReader(a, 64, 1<<20)
	defer rd.close()
	want := []int{1, 0, 1, 0}
	for i, w := range want {
		m, err := rd.next(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if int(m.hdr.MsgID) != i+1 || len(m.fds) != w {
			t.Fatalf("message %d: id %d with %d fds, want %d", i+1, m.hdr.MsgID, len(m.fds), w)
		}
		m.closeFDs()
	}
}

// TestFramingOneByteWrites: a message trickling in one byte per write is
// reassembled; so is one larger than the initial buffer.
func TestFramingOneByteWrites(t *testing.T) {
	a, b := socketpair(t)
	small := rawMsg(9, CmdRegionWrite, []byte("0123456789abcdefXYZW"))
	big := rawMsg(10, CmdMigDataWrite, bytes.Repeat([]byte{7}, 200<<10))
	go func() {
		for i := range small {
			unix.Write(b, small[i:i+1])
		}
		half := len(big) / 2
		writeMsg(b, big[:half], nil)
		writeMsg(b, big[half:], nil)
	}()
	rd := newReader(a, 64, 1<<20)
	m, err := rd.next(1 << 20)
	if err != nil || !bytes.Equal(m.payload, small[HeaderSize:]) {
		t.Fatalf("small: %v %q", err, m.payload)
	}
	m, err = rd.next(1 << 20)
	if err != nil || !bytes.Equal(m.payload, big[HeaderSize:]) {
		t.Fatalf("big: %v, %d bytes", err, len(m.payload))
	}
}

func TestFramingTruncatedControl(t *testing.T) {
	leakcheck.FDs(t)
	a, b := socketpair(t)
	efd := eventfds(t, 1)
	many := make([]int, maxRecvFDs+4)
	for i := range many {
		many[i] = efd[0]
	}
	writeMsg(b, rawMsg(1, CmdDeviceReset, nil), many)
	rd := newReader(a, 64, 1<<20)
	if _, err := rd.next(1 << 20); !errors.Is(err, errStream) {
		t.Fatalf("truncated control data: %v", err)
	}
	rd.close()
}

// TestFramingSplitHeaderFDs: descriptors that come with the second half of
// a split header cannot be matched and are closed, not leaked.
func TestFramingSplitHeaderFDs(t *testing.T) {
	leakcheck.FDs(t)
	a, b := socketpair(t)
	efd := eventfds(t, 1)
	msg := rawMsg(1, CmdDeviceReset, nil)
	rd := newReader(a, 64, 1<<20)
	writeMsg(b, msg[:8], nil)
	go func() { writeMsg(b, msg[8:], efd) }()
	m, err := rd.next(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.fds) != 0 && len(m.fds) != 1 {
		t.Fatalf("%d fds", len(m.fds))
	}
	m.closeFDs()
	rd.close()
}

func TestFramingLimits(t *testing.T) {
	a, b := socketpair(t)
	writeMsg(b, rawMsg(1, CmdRegionWrite, make([]byte, 100)), nil)
	rd := newReader(a, 64, 1<<20)
	if _, err := rd.next(64); !errors.Is(err, errStream) {
		t.Fatalf("oversized message: %v", err)
	}
}
