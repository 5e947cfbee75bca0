package panictest

import (
	"fmt"
	"testing"
)

// recorder is a test whose cleanups and errors are kept, not acted on.
type recorder struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }

type counter uint64

func (c *counter) Panics() uint64 { return uint64(*c) }

// Check looks when the test ends, so a panic after it was called counts.
func TestCheck(t *testing.T) {
	for _, n := range []counter{0, 2} {
		r := &recorder{TB: t}
		var c counter
		Check(r, "server", &c)
		c = n
		for _, f := range r.cleanups {
			f()
		}
		if got := len(r.errs) != 0; got != (n != 0) {
			t.Errorf("%d panics: errors %q", n, r.errs)
		}
	}
}

func TestLogged(t *testing.T) {
	const log = `time=1 level=INFO msg=started panic=no
time=2 level=ERROR msg="vfio-user: panic while handling a message; closing the connection" cmd=REGION_WRITE panic="a bug" stack="goroutine 1 [running]:\n..."
time=3 level=ERROR msg="control: write" err=EPIPE
time=4 level=ERROR msg="control: command panicked; closing the connection" cmd=query-config panic="a bug" stack="goroutine 2"
`
	recs := Logged(log)
	if len(recs) != 2 || recs[0][:6] != "time=2" || recs[1][:6] != "time=4" {
		t.Fatalf("Logged found %q, want the records at times 2 and 4", recs)
	}
	r := &recorder{TB: t}
	CheckLog(r, "server", log)
	if len(r.errs) != 1 {
		t.Fatalf("CheckLog: errors %q, want one", r.errs)
	}
}
