//go:build integration

package migration

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// make demo, as a newcomer runs it, ends with its live migration: this runs
// the demo's program itself (the same build of the server, the same
// prepared caches) and checks that it passes and says what it showed: the
// stream ran across the migration and arrived whole on the destination,
// which announced the guest; no driver trouble on the destination.
func TestMigrateDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./tests/demo", "-mib", "8")
	cmd.Dir = suite.Repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		t.Fatalf("the demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		`MiB had been sent when the migration ended`,
		`TCP host → guest across the migration: \d+ MiB in [\d.]+ s, SHA-256 equal at both ends; the guest answered from QEMU B`,
		`server B announced the guest's address after the switch-over: [1-9]\d* rounds, [1-9]\d* RARP frames`,
		`on B: 3 packets transmitted, 3 packets received`,
		`driver hang or reset messages in dmesg: 0`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("demo output (tail):\n%s", tail(out.String(), 1500))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
