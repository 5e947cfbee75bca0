package handover

import (
	"e1000e-vfu/internal/unixsock"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

// TestPeerLineThenFrame: a reply line followed by a frame whose
// descriptors travel with its header; the reader's recvmsg keeps them
// even when one receive takes the line and the frame together.
func TestPeerLineThenFrame(t *testing.T) {
	a, b := socketPair(t)
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ev)
	body, err := EncodeState(sample())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		a.Write([]byte(`{"ok":true}` + "\n"))
		NewPeer(a, nil).SendFrame(KindState, body, []int{ev, ev, ev})
	}()
	p := NewPeer(b, nil)
	defer p.Close()
	line, err := p.ReadLine(4096)
	if err != nil || string(line) != `{"ok":true}` {
		t.Fatalf("line %q %v", line, err)
	}
	h, got, fds, err := p.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	defer unixsock.CloseFDs(fds)
	if h.Kind != KindState || len(fds) != 3 || string(got) != string(body) {
		t.Fatalf("kind %d, %d fds, %d bytes", h.Kind, len(fds), len(got))
	}
	if _, err := DecodeState(got); err != nil {
		t.Fatal(err)
	}
}

// TestPeerRefusesBadFrame: a bad header closes the descriptors that came
// with it.
func TestPeerRefusesBadFrame(t *testing.T) {
	a, b := socketPair(t)
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ev)
	hdr := AppendHeader(nil, 77, 0)
	if _, _, err := a.WriteMsgUnix(hdr, unix.UnixRights(ev), nil); err != nil {
		t.Fatal(err)
	}
	p := NewPeer(b, nil)
	if _, _, _, err := p.ReadFrame(); err == nil {
		t.Fatal("accepted")
	}
	if len(p.fds) != 0 {
		t.Fatal("descriptors kept")
	}
	a.Close()
	if _, _, _, err := p.ReadFrame(); err == nil {
		t.Fatal("read after EOF")
	}
	if r, err := DecodeReason([]byte("bad\x00x")); err != nil || r != "bad?x" {
		t.Fatalf("%q %v", r, err)
	}
}
