package harness

import (
	"os"
	"testing"
)

// TestDir is a per-test directory with a short path (UNIX socket paths are
// limited to 107 bytes), kept with its logs when the test fails.
func TestDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "evfu-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", d)
			return
		}
		os.RemoveAll(d)
	})
	return d
}
