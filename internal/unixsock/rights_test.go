package unixsock

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Two descriptors sent in one message come back in order; a truncated
// control message is an error that returns none.
func TestRights(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseFDs(sp[:])
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer CloseFDs(p[:])
	if err := unix.Sendmsg(sp[0], []byte{1}, unix.UnixRights(p[0], p[1]), nil, 0); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(8*4))
	_, oobn, _, _, err := unix.Recvmsg(sp[1], buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := Rights(oob[:oobn])
	if err != nil || len(fds) != 2 {
		t.Fatalf("Rights: %v, %v; want two descriptors", fds, err)
	}
	defer CloseFDs(fds)
	// The received pair is a pipe: what goes into the first comes out of the second.
	if _, err := unix.Write(fds[1], []byte{7}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if n, err := unix.Read(p[0], b[:]); n != 1 || err != nil || b[0] != 7 {
		t.Fatalf("the descriptors are not the pipe's, in order: %d %v %v", n, err, b)
	}

	if fds, err := Rights(oob[:oobn-1]); err == nil || fds != nil {
		t.Errorf("a truncated control message: %v, %v; want an error and nothing", fds, err)
	}
}
