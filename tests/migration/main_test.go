//go:build integration

package migration

import (
	"os"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// suite is what every test of the run shares: the stock QEMU's prepared
// root, the patched QEMU (built on first use), the initramfs with a freshly
// built agent, and the server.
var suite harness.Suite

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "migration tests", 60*time.Minute, &suite))
}
