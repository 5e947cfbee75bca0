package harness

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// PCICap is one entry of the standard capability list.
type PCICap struct {
	Off int
	ID  byte
}

// PCICapList walks a config space's standard capability list and returns
// its entries in list order, bounded so a looping list cannot hang the
// test.
func PCICapList(cfg []byte) ([]PCICap, error) {
	var list []PCICap
	if len(cfg) < 64 {
		return list, fmt.Errorf("config space of %d bytes", len(cfg))
	}
	if cfg[6]&0x10 == 0 {
		return list, fmt.Errorf("no capability list (status %#x)", cfg[6])
	}
	off := int(cfg[0x34]) &^ 3
	for i := 0; off != 0 && i < 48; i++ {
		if off < 0x40 || off+2 > len(cfg) {
			return list, fmt.Errorf("capability pointer %#x out of range", off)
		}
		list = append(list, PCICap{Off: off, ID: cfg[off]})
		off = int(cfg[off+1]) &^ 3
	}
	return list, nil
}

// PCICaps walks the standard capability list as PCICapList does and
// returns offset → capability id.
func PCICaps(cfg []byte) (map[int]byte, error) {
	list, err := PCICapList(cfg)
	caps := make(map[int]byte, len(list))
	for _, c := range list {
		caps[c.Off] = c.ID
	}
	return caps, err
}

// PCIExtCaps walks the extended capability list (config space beyond 256
// bytes) and returns offset → extended capability id.
func PCIExtCaps(cfg []byte) (map[int]uint16, error) {
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

// LspciDump writes a config space in the format of `lspci -xxxx` (a slot
// line, then 16 bytes a line), which `lspci -F FILE` reads back: lspci can
// then decode bytes read anywhere, here the config space a guest sees,
// with every option it has (-vvv, -nn).
func LspciDump(slot string, cfg []byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s Ethernet controller: dump\n", slot)
	for off := 0; off+16 <= len(cfg); off += 16 {
		fmt.Fprintf(&b, "%02x:", off)
		for _, v := range cfg[off : off+16] {
			fmt.Fprintf(&b, " %02x", v)
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return []byte(b.String())
}

// Lspci runs the host's lspci on a dump of cfg (LspciDump), with args
// (e.g. -vvv -nn), and returns its output. The dump is written in dir.
// pciutils is a host tool the tests need (tests/deps.sh installs it).
func Lspci(ctx context.Context, dir, slot string, cfg []byte, args ...string) (string, error) {
	bin, err := exec.LookPath("lspci")
	if err != nil {
		return "", fmt.Errorf("lspci (pciutils, which make deps installs): %w", err)
	}
	f := filepath.Join(dir, "lspci.dump")
	if err := os.WriteFile(f, LspciDump(slot, cfg), 0o644); err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append([]string{"-F", f}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("lspci -F %s %s: %w: %s", f, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// LspciCaps returns the capability header lines of lspci -v output, in
// order, without their "Capabilities: " prefix ("[c8] Power Management
// version 2", "[100 v1] Advanced Error Reporting"), and for each the
// lines indented under it.
func LspciCaps(out string) (heads []string, bodies [][]string) {
	in := false // the lines being read belong to the last capability
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "Capabilities: "):
			heads = append(heads, strings.TrimPrefix(t, "Capabilities: "))
			bodies = append(bodies, nil)
			in = true
		case in && strings.HasPrefix(l, "\t\t") && t != "":
			bodies[len(bodies)-1] = append(bodies[len(bodies)-1], t)
		default:
			// A device-level line (one tab) or a blank one ends it.
			in = false
		}
	}
	return heads, bodies
}
