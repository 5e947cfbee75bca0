//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// guest wraps the agent calls a test makes; failures end the test.
type guest struct {
	t   *testing.T
	ctx context.Context
	vm  *harness.VM
}

func (g guest) sh(cmdline string) string {
	g.t.Helper()
	out, err := g.vm.Agent.Sh(g.ctx, time.Minute, cmdline)
	if err != nil {
		g.t.Fatal(err)
	}
	return out
}

// upEth0 brings eth0 up with cidr and waits for its link.
func (g guest) upEth0(cidr string) {
	g.t.Helper()
	g.sh("ip link set eth0 up && ip addr add " + cidr + " dev eth0")
	if _, err := g.vm.Agent.Call(g.ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		g.t.Fatalf("%v\n%s", err, g.sh("ip link show eth0; dmesg | tail -n 20"))
	}
}

// dmesg returns the kernel log lines that mention needle.
func (g guest) dmesg(needle string) []string {
	var lines []string
	for _, l := range strings.Split(g.sh("dmesg"), "\n") {
		if strings.Contains(l, needle) {
			lines = append(lines, l)
		}
	}
	return lines
}
