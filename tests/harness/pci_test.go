package harness

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestPCICaps(t *testing.T) {
	cfg := make([]byte, 0x200)
	cfg[6] = 0x10
	cfg[0x34] = 0xc8
	cfg[0xc8], cfg[0xc9] = 0x01, 0xd0
	cfg[0xd0], cfg[0xd1] = 0x05, 0xe0
	cfg[0xe0], cfg[0xe1] = 0x10, 0xa0
	cfg[0xa0], cfg[0xa1] = 0x11, 0x00
	// AER at 0x100 → DSN at 0x140 → end.
	cfg[0x100], cfg[0x101], cfg[0x102], cfg[0x103] = 0x01, 0x00, 0x01, 0x14
	cfg[0x140], cfg[0x141], cfg[0x142], cfg[0x143] = 0x03, 0x00, 0x01, 0x00
	caps, err := PCICaps(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]byte{0xc8: 1, 0xd0: 5, 0xe0: 0x10, 0xa0: 0x11}
	for off, id := range want {
		if caps[off] != id {
			t.Errorf("cap at %#x = %#x, want %#x", off, caps[off], id)
		}
	}
	list, err := PCICapList(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantList := []PCICap{{0xc8, 1}, {0xd0, 5}, {0xe0, 0x10}, {0xa0, 0x11}}
	if len(list) != len(wantList) {
		t.Fatalf("list %v, want %v", list, wantList)
	}
	for i := range wantList {
		if list[i] != wantList[i] {
			t.Errorf("list[%d] = %v, want %v", i, list[i], wantList[i])
		}
	}
	ext, err := PCIExtCaps(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ext[0x100] != 1 || ext[0x140] != 3 || len(ext) != 2 {
		t.Errorf("extended caps %v", ext)
	}
	// A loop in the list ends at the bound instead of hanging.
	cfg[0xa1] = 0xc8
	if _, err := PCICaps(cfg); err != nil {
		t.Errorf("looping list: %v", err)
	}
	cfg[0xa1] = 0x10 // below 0x40
	if _, err := PCICaps(cfg); err == nil {
		t.Error("pointer into the header accepted")
	}
}

func FuzzPCICaps(f *testing.F) {
	f.Add(make([]byte, 256))
	seed := make([]byte, 0x200)
	seed[6], seed[0x34], seed[0xc8], seed[0xc9] = 0x10, 0xc8, 1, 0xc8
	seed[0x100], seed[0x102], seed[0x103] = 1, 1, 0x10
	f.Add(seed)
	f.Fuzz(func(t *testing.T, cfg []byte) {
		caps, _ := PCICaps(cfg)
		if len(caps) > 48 {
			t.Fatalf("%d capabilities from a bounded walk", len(caps))
		}
		ext, _ := PCIExtCaps(cfg)
		if len(ext) > 64 {
			t.Fatalf("%d extended capabilities from a bounded walk", len(ext))
		}
	})
}

func TestUntag(t *testing.T) {
	f := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00, 0xaa}
	g, ok := untag(append([]byte(nil), f...), 5)
	if !ok || len(g) != len(f)-4 || g[12] != 0x08 || g[14] != 0xaa {
		t.Errorf("untag: %x, %v", g, ok)
	}
	if _, ok := untag(append([]byte(nil), f...), 6); ok {
		t.Error("a frame of VLAN 5 passed as VLAN 6")
	}
	if _, ok := untag(f[:15], 5); ok {
		t.Error("a short frame passed")
	}
}

// TestLspciDump: a dump in lspci -xxxx's format that the host's lspci
// reads back and decodes, capabilities in list order.
func TestLspciDump(t *testing.T) {
	cfg := make([]byte, 0x1000)
	copy(cfg, []byte{0x86, 0x80, 0xd3, 0x10})
	cfg[6] = 0x10
	cfg[0x0b] = 0x02 // network controller
	cfg[0x34] = 0xc8
	cfg[0xc8], cfg[0xc9], cfg[0xca] = 0x01, 0xa0, 0x22 // PM version 2, DSI
	cfg[0xa0], cfg[0xa1], cfg[0xa2] = 0x11, 0x00, 0x04 // MSI-X, 5 vectors
	cfg[0xa4], cfg[0xa8] = 0x03, 0x03
	cfg[0xa9] = 0x20
	d := LspciDump("0000:00:03.0", cfg)
	if lines := bytes.Count(d, []byte("\n")); lines != 1+0x100+1 {
		t.Errorf("dump of %d lines", lines)
	}
	if !bytes.Contains(d, []byte("\nff0: 00 00")) || !bytes.HasPrefix(d, []byte("0000:00:03.0 ")) {
		t.Errorf("dump:\n%s", d[:200])
	}
	out, err := Lspci(context.Background(), t.TempDir(), "0000:00:03.0", cfg, "-vvv", "-nn")
	if err != nil {
		t.Fatal(err) // pciutils: make test installs it (tests/deps.sh)
	}
	heads, bodies := LspciCaps(out + "\tKernel driver in use: x\n\t\tnot a capability line\n")
	want := []string{"[c8] Power Management version 2", "[a0] MSI-X: Enable- Count=5 Masked-"}
	if strings.Join(heads, "|") != strings.Join(want, "|") {
		t.Fatalf("capabilities %q, want %q in\n%s", heads, want, out)
	}
	if !strings.Contains(bodies[0][0], "DSI+") || len(bodies[1]) != 2 || bodies[1][1] != "PBA: BAR=3 offset=00002000" {
		t.Errorf("bodies %q in\n%s", bodies, out)
	}
}
