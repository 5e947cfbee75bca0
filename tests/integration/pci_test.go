//go:build integration

package integration

import (
	"encoding/base64"
	"fmt"
	"net"
	"sort"
	"strings"
)

// findPCI returns the sysfs directory of the first device vendor:device.
func (g guest) findPCI(vendor, device string) string {
	g.t.Helper()
	out := g.sh(`for d in /sys/bus/pci/devices/*; do echo "$d $(cat $d/vendor) $(cat $d/device)"; done`)
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[1] == "0x"+vendor && f[2] == "0x"+device {
			return f[0]
		}
	}
	g.t.Fatalf("no PCI device %s:%s in the guest:\n%s", vendor, device, out)
	return ""
}

// decodeBytes turns the agent's base64 data (JSON []byte) back into bytes.
func decodeBytes(v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("agent data is %T, want base64 text", v)
	}
	return base64.StdEncoding.DecodeString(s)
}

func fmtCaps(m map[int]byte) string {
	var parts []string
	for off, id := range m {
		parts = append(parts, fmt.Sprintf("%#x:%#x", off, id))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func fmtExt(m map[int]uint16) string {
	var parts []string
	for off, id := range m {
		parts = append(parts, fmt.Sprintf("%#x:%#x", off, id))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func mustUDPAddr(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp4", s)
	if err != nil {
		panic(err) // only ever called with constants
	}
	return a
}
