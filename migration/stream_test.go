package migration

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func mustSave(t testing.TB, d Stateful) []byte {
	t.Helper()
	b, err := Save(nil, d, Limits{})
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	return b
}

func mustPack(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildStream frames arbitrary sections behind a header, for tests that
// need streams no device would write.
func buildStream(t testing.TB, model string, params []Param, secs ...rawSection) []byte {
	t.Helper()
	b, err := AppendHeader(nil, model, params, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		b = appendSection(b, s.name, s.mandatory, s.payload)
	}
	return AppendEnd(b)
}

// validSections is a v1 (no filters) device's state, section by section.
func validSections(t testing.TB) []rawSection {
	st := busyState(0)
	return []rawSection{
		{"config", true, mustPack(t, fakeConfig{})},
		{"registers", true, mustPack(t, &st.Regs)},
		{"rx-ring", true, mustPack(t, &st.RX)},
		{"stats", false, mustPack(t, &st.Stats)},
	}
}

func dump(s fakeState) string { return fmt.Sprintf("%+v", s) }

func TestRoundTripByteIdentical(t *testing.T) {
	for _, n := range []int{0, 16} {
		t.Run(fmt.Sprintf("rx-filter-size=%d", n), func(t *testing.T) {
			src := newFakeDev(n, true)
			src.st = busyState(n / 2)
			b1 := mustSave(t, src)
			dst := newFakeDev(n, true)
			if err := Load(b1, dst, Limits{}, nil); err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got, want := dump(dst.state()), dump(src.state()); got != want {
				t.Fatalf("loaded state\n%s\nwant\n%s", got, want)
			}
			if b2 := mustSave(t, dst); !bytes.Equal(b1, b2) {
				t.Fatalf("save → load → save differs:\n%x\n%x", b1, b2)
			}
		})
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	params := []Param{{"rx-filter-size", "32"}, {"link-speed", "1000"}}
	b, err := AppendHeader(nil, fakeModel, params, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i++ {
		if _, _, err := ParseHeader(b[:i], Limits{}); err != ErrShort {
			t.Fatalf("prefix of %d bytes: %v, want ErrShort", i, err)
		}
	}
	h, n, err := ParseHeader(b, Limits{})
	if err != nil || n != len(b) || h.Model != fakeModel || fmt.Sprint(h.Params) != fmt.Sprint(params) || h.Version != FormatVersion {
		t.Fatalf("ParseHeader = %+v, %d, %v", h, n, err)
	}
	if v, ok := h.Param("link-speed"); !ok || v != "1000" {
		t.Fatalf("Param(link-speed) = %q, %v", v, ok)
	}
	if _, _, err := ParseHeader([]byte("GET / HTTP/1.1\r\n"), Limits{}); err == nil || err == ErrShort {
		t.Fatalf("bad magic: %v", err)
	}
	bad := bytes.Clone(b)
	binary.LittleEndian.PutUint16(bad[8:], FormatVersion+1)
	if _, _, err := ParseHeader(bad, Limits{}); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("future version: %v", err)
	}
}

// The headline compatibility cases of migration-compat.md.
func TestCompatibility(t *testing.T) {
	v2 := newFakeDev(32, true)
	v2.st = busyState(4)
	v2stream := mustSave(t, v2)

	v1 := newFakeDev(0, true)
	v1.st = busyState(0)
	v1stream := mustSave(t, v1)

	t.Run("v2 state into a v1-only device is refused at the header", func(t *testing.T) {
		old := newFakeDev(0, false)
		err := Load(v2stream, old, Limits{}, nil)
		if err == nil || !strings.Contains(err.Error(), "rx-filter-size") {
			t.Fatalf("Load = %v, want a refusal naming rx-filter-size", err)
		}
		// Refused before any section: the device's state is untouched and
		// the header alone is enough to refuse.
		if old.applyCalls != 0 {
			t.Fatal("state applied")
		}
		_, hlen, _ := ParseHeader(v2stream, Limits{})
		_, _, _, herr := CheckHeader(v2stream[:hlen], old, Limits{})
		if herr == nil || !strings.Contains(herr.Error(), "rx-filter-size") {
			t.Fatalf("CheckHeader on the header alone = %v", herr)
		}
	})
	t.Run("v2 state into a v2-capable device started as v1 is refused", func(t *testing.T) {
		d := newFakeDev(0, true)
		err := Load(v2stream, d, Limits{}, nil)
		if err == nil || !strings.Contains(err.Error(), "rx-filter-size") {
			t.Fatalf("Load = %v", err)
		}
	})
	t.Run("v1 state into a v2-capable device started as v1 loads", func(t *testing.T) {
		d := newFakeDev(0, true)
		if err := Load(v1stream, d, Limits{}, nil); err != nil {
			t.Fatal(err)
		}
		if dump(d.state()) != dump(v1.state()) {
			t.Fatal("state differs")
		}
	})
	t.Run("v1 state into a device started as v2 is refused", func(t *testing.T) {
		d := newFakeDev(32, true)
		err := Load(v1stream, d, Limits{}, nil)
		if err == nil || !strings.Contains(err.Error(), "rx-filter-size") {
			t.Fatalf("Load = %v", err)
		}
	})
	t.Run("every failing parameter is reported", func(t *testing.T) {
		s := buildStream(t, fakeModel, []Param{{"rx-filter-size", "8"}, {"jumbo", "on"}}, validSections(t)...)
		err := Load(s, newFakeDev(32, true), Limits{}, nil)
		if err == nil || !strings.Contains(err.Error(), "rx-filter-size") || !strings.Contains(err.Error(), "jumbo") {
			t.Fatalf("Load = %v", err)
		}
	})
	t.Run("other model", func(t *testing.T) {
		s := buildStream(t, "example.org/devices/other", nil, validSections(t)...)
		err := Load(s, newFakeDev(0, true), Limits{}, nil)
		if err == nil || !strings.Contains(err.Error(), "example.org/devices/other") {
			t.Fatalf("Load = %v", err)
		}
	})
}

// recordHandler keeps log records so a test can check what was logged.
type recordHandler struct{ msgs []string }

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	h.msgs = append(h.msgs, s)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestSectionRules(t *testing.T) {
	good := validSections(t)
	with := func(extra ...rawSection) []rawSection { return append(append([]rawSection(nil), good...), extra...) }
	without := func(name string) []rawSection {
		var out []rawSection
		for _, s := range good {
			if s.name != name {
				out = append(out, s)
			}
		}
		return out
	}
	filters := rawSection{"filters", true, mustPack(t, fakeFilters{MACs: []uint64{1}})}
	config4 := rawSection{"config", true, mustPack(t, fakeConfig{RxFilterSize: 4})}
	cases := []struct {
		name    string
		params  []Param
		secs    []rawSection
		wantErr string // "" means the load succeeds
	}{
		{"valid", nil, good, ""},
		{"unknown mandatory section", nil, with(rawSection{"rss", true, mustPack(t, 1)}), "unknown mandatory section rss"},
		{"unknown optional section", nil, with(rawSection{"rss", false, mustPack(t, 1)}), ""},
		{"duplicate section", nil, with(good[1]), "registers appears twice"},
		{"missing required section", nil, without("rx-ring"), "required section rx-ring is missing"},
		{"missing optional section", nil, without("stats"), ""},
		{"section forbidden by a parameter", nil, with(filters), "filters is not allowed"},
		{"section required by a parameter", []Param{{"rx-filter-size", "4"}}, []rawSection{config4, good[1], good[2]}, "required section filters is missing"},
		{"section required by a parameter, present", []Param{{"rx-filter-size", "4"}}, []rawSection{config4, good[1], good[2], filters}, ""},
		{"section content beyond what a parameter allows", []Param{{"rx-filter-size", "4"}},
			[]rawSection{config4, good[1], good[2], {"filters", true, mustPack(t, fakeFilters{MACs: make([]uint64, 5)})}}, "5 entries"},
		{"reordered sections", nil, []rawSection{good[3], good[2], good[0], good[1]}, ""},
		{"unknown field in a mandatory section", nil,
			append([]rawSection{{"config", true, mustPack(t, map[string]int{"rx-filter-size": 0, "turbo": 1})}}, good[1:]...), "turbo"},
		{"unknown field in an optional section", nil,
			append(without("stats"), rawSection{"stats", false, mustPack(t, map[string]uint64{"rx-packets": 5, "rx-bytes": 9})}), ""},
		{"value out of range", nil,
			append(without("rx-ring"), rawSection{"rx-ring", true, mustPack(t, fakeRing{Len: 8, Head: 8})}), "head = 8 is outside"},
		{"cross-section validation", nil,
			append(without("registers"), rawSection{"registers", true, mustPack(t, fakeRegs{IMS: 1 << 31})}), "reserved bits"},
		{"trailing bytes in a payload", nil,
			append(without("stats"), rawSection{"stats", false, append(mustPack(t, fakeStats{}), 0)}), "stray bytes"},
		{"wrong type", nil,
			append(without("rx-ring"), rawSection{"rx-ring", true, mustPack(t, "ring")}), "rx-ring"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := 0
			if v, ok := (Header{Params: c.params}).Param("rx-filter-size"); ok {
				fmt.Sscan(v, &n)
			}
			d := newFakeDev(n, true)
			d.st = fakeState{Regs: fakeRegs{Ctrl: 7}}
			before := dump(d.state())
			h := &recordHandler{}
			err := Load(buildStream(t, fakeModel, c.params, c.secs...), d, Limits{}, slog.New(h))
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if d.applyCalls != 1 {
					t.Fatal("not applied")
				}
				if strings.Contains(c.name, "unknown optional") && (len(h.msgs) != 1 || !strings.Contains(h.msgs[0], "rss")) {
					t.Fatalf("log = %q, want one record naming rss", h.msgs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Load = %v, want an error containing %q", err, c.wantErr)
			}
			if got := dump(d.state()); got != before || d.applyCalls != 0 {
				t.Fatalf("device changed by a failed load: %s", got)
			}
		})
	}
}

func TestFraming(t *testing.T) {
	good := buildStream(t, fakeModel, nil, validSections(t)...)
	hdrLen := 0
	if _, n, err := ParseHeader(good, Limits{}); err == nil {
		hdrLen = n
	}
	flip := func(off int) []byte { b := bytes.Clone(good); b[off] ^= 0x10; return b }
	cases := map[string][]byte{
		"every truncation":   nil,
		"bit flip in data":   flip(len(good) / 2),
		"bit flip in crc":    flip(len(good) - 1),
		"unknown record tag": func() []byte { b := bytes.Clone(good); b[hdrLen] = 'X'; return b }(),
		"unknown flags":      buildStream(t, fakeModel, nil, rawSection{"config", true, mustPack(t, fakeConfig{})}),
		"stray bytes":        append(bytes.Clone(good), 0),
	}
	// Set an unknown flag bit in the first section.
	cases["unknown flags"][hdrLen+1] |= 0x80
	cases["unknown flags"] = AppendEnd(cases["unknown flags"][:len(cases["unknown flags"])-5])
	for name, b := range cases {
		if b == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if err := Load(b, newFakeDev(0, true), Limits{}, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	for i := 0; i < len(good); i++ {
		d := newFakeDev(0, true)
		if err := Load(good[:i], d, Limits{}, nil); err == nil || d.applyCalls != 0 {
			t.Fatalf("truncated to %d bytes: %v", i, err)
		}
	}
}

func TestLimits(t *testing.T) {
	lim := Limits{MaxSections: 3}
	if err := Load(buildStream(t, fakeModel, nil, validSections(t)...), newFakeDev(0, true), lim, nil); err == nil || !strings.Contains(err.Error(), "more than 3 sections") {
		t.Fatalf("section count: %v", err)
	}
	lim = Limits{MaxSectionSize: 8}
	if err := Load(buildStream(t, fakeModel, nil, validSections(t)...), newFakeDev(0, true), lim, nil); err == nil || !strings.Contains(err.Error(), "exceeds the limit of 8") {
		t.Fatalf("section size: %v", err)
	}
	lim = Limits{MaxStreamSize: 64}
	if err := Load(buildStream(t, fakeModel, nil, validSections(t)...), newFakeDev(0, true), lim, nil); err == nil || !strings.Contains(err.Error(), "limit of 64") {
		t.Fatalf("stream size: %v", err)
	}
	many := make([]Param, 65)
	for i := range many {
		many[i] = Param{Name: fmt.Sprintf("p%d", i), Value: "1"}
	}
	if _, err := AppendHeader(nil, fakeModel, many, Limits{}); err == nil {
		t.Fatal("65 parameters written")
	}
	long := strings.Repeat("a", 65)
	if _, err := AppendHeader(nil, long, nil, Limits{}); err == nil {
		t.Fatal("65-byte model name written")
	}
	w := NewSectionWriter(nil, Limits{})
	if err := w.Put("Bad Name", true, 1); err == nil {
		t.Fatal("bad section name written")
	}
	if err := w.Put("x", true, 1); err != nil {
		t.Fatal(err)
	}
	if err := w.Put("x", true, 1); err == nil {
		t.Fatal("duplicate section written")
	}
}

// A payload that lies about a length must not make the decoder allocate
// from the lie: an array32 header claiming 2^32-1 elements would otherwise
// make msgpack allocate 32 GiB for a []uint64.
func TestPayloadLengthLies(t *testing.T) {
	lies := map[string][]byte{
		"array32": {0x81, 0xa4, 'm', 'a', 'c', 's', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01},
		"map32":   {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa4, 'm', 'a', 'c', 's'},
		"bin32":   {0x81, 0xa4, 'm', 'a', 'c', 's', 0xc6, 0xff, 0xff, 0xff, 0xf0},
		"str32":   {0x81, 0xdb, 0xff, 0xff, 0xff, 0xf0, 'm'},
		"deep":    bytes.Repeat([]byte{0x91}, 40),
		"ext":     {0xd4, 0x01, 0x00},
	}
	for name, p := range lies {
		t.Run(name, func(t *testing.T) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			secs := append(validSections(t), rawSection{"filters", true, p})
			d := newFakeDev(4, true)
			secs[0] = rawSection{"config", true, mustPack(t, fakeConfig{RxFilterSize: 4})}
			err := Load(buildStream(t, fakeModel, []Param{{"rx-filter-size", "4"}}, secs...), d, Limits{}, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			runtime.ReadMemStats(&ms)
			if grew := ms.TotalAlloc - before; grew > 1<<20 {
				t.Fatalf("load allocated %d bytes for a %d-byte payload", grew, len(p))
			}
		})
	}
}

func TestCheckMsgpackAcceptsEncoderOutput(t *testing.T) {
	values := []any{
		nil, true, 1, -1, -200, 70000, uint64(1) << 60, 1.5, float32(2), "x", strings.Repeat("y", 300),
		[]byte{1, 2, 3}, bytes.Repeat([]byte{9}, 70000), []int{1, 2, 3}, make([]uint8, 20),
		map[string]any{"a": []any{1, "b", map[string]int{"c": 3}}}, busyState(3),
	}
	for _, v := range values {
		b := mustPack(t, v)
		if err := checkMsgpack(b, 32); err != nil {
			t.Errorf("%T %v: %v", v, v, err)
		}
		if err := checkMsgpack(b[:len(b)-1], 32); err == nil {
			t.Errorf("%T truncated: accepted", v)
		}
	}
}

func TestSplitAssemble(t *testing.T) {
	good := mustSave(t, sampleDev(16))
	h, secs, err := Split(good, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(secs) != 5 || secs[0].Name != "config" || !secs[0].Mandatory || secs[4].Name != "stats" || secs[4].Mandatory {
		t.Fatalf("sections %+v", secs)
	}
	b, err := Assemble(h, secs, Limits{})
	if err != nil || !bytes.Equal(b, good) {
		t.Fatalf("Assemble(Split(s)) differs: %v", err)
	}
	if _, _, err := Split(good[:len(good)-1], Limits{}); err == nil {
		t.Fatal("truncated stream split")
	}
	if _, err := Assemble(h, []Section{{Name: "Bad"}}, Limits{}); err == nil {
		t.Fatal("bad name assembled")
	}
}

func TestRules(t *testing.T) {
	h := Header{Params: []Param{{"rx-filter-size", "0"}, {"link-speed", "1000"}}}
	cases := []struct {
		rule func(Header) Presence
		want Presence
	}{
		{Always(Optional), Optional},
		{When("link-speed", Required, Forbidden), Required},
		{When("jumbo", Required, Forbidden), Forbidden},
	}
	for i, c := range cases {
		if got := c.rule(h); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}
