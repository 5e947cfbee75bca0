//go:build integration

package integration

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
)

// pciCaps walks a config space's standard capability list and returns
// offset → capability id, bounded so a looping list cannot hang the test.
func pciCaps(cfg []byte) (map[int]byte, error) {
	caps := map[int]byte{}
	if len(cfg) < 64 || cfg[6]&0x10 == 0 {
		return caps, fmt.Errorf("no capability list (status %#x)", cfg[6])
	}
	off := int(cfg[0x34]) &^ 3
	for i := 0; off != 0 && i < 48; i++ {
		if off < 0x40 || off+2 > len(cfg) {
			return caps, fmt.Errorf("capability pointer %#x out of range", off)
		}
		caps[off] = cfg[off]
		off = int(cfg[off+1]) &^ 3
	}
	return caps, nil
}

// pciExtCaps walks the extended capability list (config space beyond 256
// bytes) and returns offset → extended capability id.
func pciExtCaps(cfg []byte) (map[int]uint16, error) {
	caps := map[int]uint16{}
	off := 0x100
	for i := 0; off != 0 && i < 64; i++ {
		if off < 0x100 || off+4 > len(cfg) {
			return caps, fmt.Errorf("extended capability at %#x out of range (config is %d bytes)", off, len(cfg))
		}
		h := binary.LittleEndian.Uint32(cfg[off:])
		if h == 0 {
			break
		}
		caps[off] = uint16(h)
		off = int(h>>20) &^ 3
	}
	return caps, nil
}

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
