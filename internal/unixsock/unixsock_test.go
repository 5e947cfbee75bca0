package unixsock

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// staleSocket leaves a socket file at path that nobody holds any more, as
// a process that crashed does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket file: %v, %v", fi, err)
	}
}

// answers reports whether something accepts connections at path.
func answers(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestListenMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file %v, %v; want a socket with mode 0600", fi, err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
}

func TestListenLiveSocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln2, err := Listen(path, 0); err == nil || !strings.Contains(err.Error(), "in use") {
		if err == nil {
			ln2.Close()
		}
		t.Fatalf("Listen on a live socket: %v; want an in-use error", err)
	}
	if !answers(path) {
		t.Error("the live socket stopped answering after a refused Listen")
	}
}

func TestListenStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	staleSocket(t, path)
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln.Close()
	if !answers(path) {
		t.Error("the new socket does not answer")
	}
}

// Anything but a socket at the path is refused and left as it was.
func TestListenNotASocketUntouched(t *testing.T) {
	dir := t.TempDir()

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "inside"), []byte("keep me too"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A symbolic link to a stale socket: what it points to is not ours.
	target := filepath.Join(dir, "target.sock")
	staleSocket(t, target)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{file, sub, link} {
		ln, err := Listen(path, 0o600)
		if err == nil {
			ln.Close()
			t.Errorf("%s: Listen succeeded", filepath.Base(path))
			continue
		}
		if !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("%s: %v; want a not-a-socket error", filepath.Base(path), err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(sub, "inside")); err != nil || string(b) != "keep me too" {
		t.Errorf("directory changed: %q, %v", b, err)
	}
	if dst, err := os.Readlink(link); err != nil || dst != target {
		t.Errorf("symbolic link changed: %q, %v", dst, err)
	}
	if fi, err := os.Lstat(target); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket behind the link changed: %v, %v", fi, err)
	}
}

// A socket that answers the probe with anything but "refused" may be
// somebody's: it is left alone. A bound datagram socket probed with a
// stream connection answers EPROTOTYPE.
func TestListenProbeFailureUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.sock")
	g, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ln, err := Listen(path, 0); err == nil {
		ln.Close()
		t.Fatal("Listen replaced a live datagram socket")
	} else if !errors.Is(err, syscall.EPROTOTYPE) {
		t.Errorf("error %v; want the probe's EPROTOTYPE", err)
	}
	if _, err := g.WriteToUnix([]byte("x"), &net.UnixAddr{Name: path, Net: "unixgram"}); err != nil {
		t.Errorf("datagram socket gone: %v", err)
	}
}

func TestRemoveStaleDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.sock")
	g, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale("unixgram", path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("live datagram socket: %v; want an in-use error", err)
	}
	g.Close() // a datagram socket file outlives its socket
	if err := RemoveStale("unixgram", path); err != nil {
		t.Fatalf("stale datagram socket: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale datagram socket still there: %v", err)
	}
	if err := RemoveStale("unixgram", path); err != nil {
		t.Errorf("nothing at the path: %v", err)
	}
}

// fakeListener fails Accept with errs, in order, then returns conn.
type fakeListener struct {
	errs  []error
	conn  net.Conn
	calls int
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.conn, nil
}

func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.UnixAddr{Name: "fake", Net: "unix"} }

// acceptErr is how an accept error reaches the caller of net.Listener.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", errno)}
}

func TestAcceptBacksOffThenSucceeds(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ln := &fakeListener{conn: a}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED,
		syscall.EMFILE, syscall.EMFILE, syscall.EMFILE, syscall.EMFILE, syscall.EMFILE} {
		ln.errs = append(ln.errs, acceptErr(e))
	}
	var waits []time.Duration
	record := func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))

	c, err := accept(context.Background(), ln, log, record)
	if err != nil || c != a {
		t.Fatalf("accept: %v, %v; want the listener's connection", c, err)
	}
	ms := time.Millisecond
	want := []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	if n := strings.Count(logged.String(), "accept failed"); n != len(want) {
		t.Errorf("%d retries logged, want %d:\n%s", n, len(want), logged.String())
	}

	// The next call starts from the shortest wait again.
	waits = nil
	ln.errs = []error{acceptErr(syscall.EMFILE)}
	if _, err := accept(context.Background(), ln, nil, record); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(waits, []time.Duration{5 * ms}) {
		t.Errorf("waits after a success %v, want [5ms]", waits)
	}
}

func TestAcceptReturnsOtherErrors(t *testing.T) {
	ln := &fakeListener{errs: []error{acceptErr(syscall.EINVAL)}}
	waited := false
	_, err := accept(context.Background(), ln, nil, func(context.Context, time.Duration) error {
		waited = true
		return nil
	})
	if !errors.Is(err, syscall.EINVAL) || waited || ln.calls != 1 {
		t.Errorf("err %v, waited %v, %d accepts; want EINVAL at once", err, waited, ln.calls)
	}
}

func TestAcceptStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ln := &fakeListener{errs: []error{acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE)}}
	// Cancelled during the wait: the real wait ends and Accept returns.
	_, err := accept(ctx, ln, nil, func(ctx context.Context, d time.Duration) error {
		cancel()
		return sleep(ctx, d)
	})
	if !errors.Is(err, context.Canceled) || ln.calls != 1 {
		t.Errorf("err %v after %d accepts; want context.Canceled after 1", err, ln.calls)
	}
	// Already cancelled: the first error ends it.
	if _, err := Accept(ctx, ln, nil); !errors.Is(err, context.Canceled) || ln.calls != 2 {
		t.Errorf("err %v after %d accepts; want context.Canceled after 2", err, ln.calls)
	}
}

func TestAcceptStopsOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := Accept(context.Background(), ln, nil)
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	ln.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v; want net.ErrClosed", err)
	}
}

func TestAcceptRealConnection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := Accept(context.Background(), ln, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*net.UnixConn); !ok {
		t.Errorf("accepted a %T, want *net.UnixConn", s)
	}
}

func TestTransient(t *testing.T) {
	for _, err := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EPROTO, syscall.ENETUNREACH, acceptErr(syscall.EMFILE)} {
		if !Transient(err) {
			t.Errorf("%v not transient", err)
		}
	}
	for _, err := range []error{nil, net.ErrClosed, syscall.EBADF, syscall.EINVAL, acceptErr(syscall.ENOTSOCK),
		context.Canceled, errors.New("x")} {
		if Transient(err) {
			t.Errorf("%v transient", err)
		}
	}
}
