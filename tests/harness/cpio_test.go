package harness

import (
	"bytes"
	"strconv"
	"testing"
)

// readNewc parses a newc archive into name → data, checking the magic,
// header fields and 4-byte alignment on the way.
func readNewc(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	off := 0
	for i := 0; i < 100; i++ {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(n int) int {
			v, err := strconv.ParseUint(string(h[6+8*n:14+8*n]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		size, nameLen := field(6), field(11)
		p := off + 110
		name := string(b[p : p+nameLen-1])
		if b[p+nameLen-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		p += nameLen
		p += pad4(p)
		if name == "TRAILER!!!" {
			if p != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-p)
			}
			return files
		}
		files[name] = b[p : p+size]
		if mode := field(1); mode&0o170000 != 0o100000 {
			t.Errorf("%s: mode %o is not a regular file", name, mode)
		}
		p += size
		p += pad4(p)
		off = p
	}
	t.Fatal("no trailer")
	return nil
}

func TestCPIONewc(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	want := map[string][]byte{"agent": []byte("\x7fELF binary"), "a/b": {}, "odd": []byte("12345")}
	for _, name := range []string{"agent", "a/b", "odd"} {
		if err := w.file(name, 0o755, want[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", buf.Len())
	}
	got := readNewc(t, buf.Bytes())
	for name, data := range want {
		if !bytes.Equal(got[name], data) {
			t.Errorf("%s: %q, want %q", name, got[name], data)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d files, want %d", len(got), len(want))
	}
}
