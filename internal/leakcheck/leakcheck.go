// Package leakcheck is the tests' check that what a test opened it also
// closed: the process's descriptors and goroutines are counted when the
// check is set up and again when the test ends.
//
// A check registers a cleanup, and cleanups run last-registered first, so
// a check set up at the start of a test counts after everything the test
// registered later has been torn down. Goroutines and descriptors that a
// closed connection releases on its own are waited for, up to Bound: the
// bound is only how long a failing check takes to say so.
package leakcheck

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Bound is how long a check waits for the counts to come back.
const Bound = 20 * time.Second

// FDCount is the number of open descriptors of this process.
func FDCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

var netpollOnce sync.Once

// FDs fails the test unless it ends with as many descriptors open as now:
// no more (a leak) and no fewer (a descriptor closed twice, the second
// time someone else's).
func FDs(t testing.TB) {
	t.Helper()
	// The runtime's poller keeps one descriptor once any net code ran;
	// open it before counting.
	netpollOnce.Do(func() {
		if ln, err := net.Listen("unix", fmt.Sprintf("@leakcheck-netpoll-%d", os.Getpid())); err == nil {
			ln.Close()
		}
	})
	before := FDCount(t)
	t.Cleanup(func() {
		after := waitFor(func() int { return FDCount(t) }, func(n int) bool { return n == before })
		if after != before {
			t.Errorf("descriptors: %d open before, %d after", before, after)
		}
	})
}

// Goroutines fails the test unless the goroutine count comes back to what
// it is now (or below) by the test's end.
func Goroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if n := waitFor(runtime.NumGoroutine, func(n int) bool { return n <= before }); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

// Check is FDs and Goroutines.
func Check(t testing.TB) {
	t.Helper()
	FDs(t)
	Goroutines(t)
}

// waitFor polls count until ok holds of it or Bound has passed, and
// returns the last count.
func waitFor(count func() int, ok func(int) bool) int {
	deadline := time.Now().Add(Bound)
	for {
		n := count()
		if ok(n) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(time.Millisecond)
	}
}
