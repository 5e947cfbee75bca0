package model

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestE1000EModelIsValid(t *testing.T) {
	m := E1000E()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := m.Latest(); got != 3 {
		t.Errorf("latest version %d, want 3", got)
	}
	for _, tc := range []struct {
		version int
		want    int64
		caps    bool
	}{{1, 0, false}, {2, RAEntries, false}, {3, RAEntries, true}} {
		v := m.Version(tc.version)
		if v == nil {
			t.Fatalf("version %d missing", tc.version)
		}
		if got := v.Values[RXFilterSize]; got != IntValue(tc.want) {
			t.Errorf("version %d: rx-filter-size=%v, want %d", tc.version, got, tc.want)
		}
		if got := v.Values[Caps82574L]; got != BoolValue(tc.caps) {
			t.Errorf("version %d: caps-82574l=%v, want %v", tc.version, got, tc.caps)
		}
		if got := v.Values[HideMSIX]; got != BoolValue(false) {
			t.Errorf("version %d: hide-msix=%v, want false", tc.version, got)
		}
	}
	if Lookup(E1000EName) == nil || Lookup("example.org/x") != nil {
		t.Error("Lookup does not find exactly the known model")
	}
	// Each call is a fresh copy: changing one must not change the next.
	m.Param(RXFilterSize).Init = IntValue(3)
	if E1000E().Param(RXFilterSize).Init != IntValue(RAEntries) {
		t.Error("E1000E shares state between calls")
	}
}

func TestNewVersionsRestatesOlderDefaults(t *testing.T) {
	off := BoolValue(false)
	params := []Param{
		{Name: "a", Type: Int, Init: IntValue(3)},
		{Name: "b", Type: Bool, Init: BoolValue(true), Off: &off},
	}
	vs := NewVersions(params,
		Compat{Number: 3},
		Compat{Number: 2, Set: map[string]Value{"a": IntValue(2)}},
		Compat{Number: 1, Set: map[string]Value{"b": BoolValue(false)}},
	)
	want := []Version{
		{3, map[string]Value{"a": IntValue(3), "b": BoolValue(true)}},
		{2, map[string]Value{"a": IntValue(2), "b": BoolValue(true)}},
		{1, map[string]Value{"a": IntValue(2), "b": BoolValue(false)}},
	}
	if !reflect.DeepEqual(vs, want) {
		t.Errorf("got %v, want %v", vs, want)
	}
}

func TestResolve(t *testing.T) {
	m := E1000E()
	for _, tc := range []struct {
		name     string
		version  int
		settings []string
		want     int64
		wantVer  int
	}{
		{"default is latest", 0, nil, 16, 3},
		{"version 1", 1, nil, 0, 1},
		{"version 2", 2, nil, 16, 2},
		{"version 3", 3, nil, 16, 3},
		{"override", 2, []string{"rx-filter-size=4"}, 4, 2},
		{"override on v1", 1, []string{"rx-filter-size=8"}, 8, 1},
		{"later overrides earlier", 0, []string{"rx-filter-size=4", "rx-filter-size=0"}, 0, 3},
		{"hex", 0, []string{"rx-filter-size=0x10"}, 16, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := m.Resolve(tc.version, settings(t, tc.settings...))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Int(RXFilterSize); got != tc.want {
				t.Errorf("rx-filter-size=%d, want %d", got, tc.want)
			}
			if c.Version != tc.wantVer {
				t.Errorf("version %d, want %d", c.Version, tc.wantVer)
			}
		})
	}
}

func TestResolveErrorsNameTheBadThing(t *testing.T) {
	m := E1000E()
	for _, tc := range []struct {
		version  int
		settings []string
		want     string
	}{
		{4, nil, "unsupported version 4 (supported: 1, 2, 3)"},
		{0, []string{"foo=1"}, "unknown parameter foo (known: caps-82574l, hide-msix, rx-filter-size)"},
		{0, []string{"caps-82574l=sometimes"}, "caps-82574l=sometimes: not a boolean (use true or false)"},
		{0, []string{"rx-filter-size=99"}, "rx-filter-size=99 out of range 0..16"},
		{1, []string{"rx-filter-size=-1"}, "rx-filter-size=-1 out of range 0..16"},
		{0, []string{"rx-filter-size=many"}, "rx-filter-size=many: not an integer"},
		{0, []string{"rx-filter-size=4", "rx-filter-size=17"}, "rx-filter-size=17 out of range 0..16"},
	} {
		_, err := m.Resolve(tc.version, settings(t, tc.settings...))
		if err == nil || err.Error() != tc.want {
			t.Errorf("Resolve(%d, %v) = %v, want %q", tc.version, tc.settings, err, tc.want)
		}
	}
}

func TestParseSetting(t *testing.T) {
	s, err := ParseSetting("a=b=c")
	if err != nil || s != (Setting{"a", "b=c"}) {
		t.Errorf("ParseSetting(a=b=c) = %v, %v", s, err)
	}
	for _, bad := range []string{"", "a", "=1"} {
		if _, err := ParseSetting(bad); err == nil {
			t.Errorf("ParseSetting(%q) accepted", bad)
		}
	}
}

func TestParseBoolAndEnum(t *testing.T) {
	off := BoolValue(false)
	b := Param{Name: "b", Type: Bool, Init: off, Off: &off}
	if v, err := b.Parse("on"); err != nil || v != BoolValue(true) {
		t.Errorf("bool on: %v %v", v, err)
	}
	if _, err := b.Parse("maybe"); err == nil || !strings.Contains(err.Error(), "b=maybe") {
		t.Errorf("bool maybe: %v", err)
	}
	e := Param{Name: "speed", Type: Enum, Init: EnumValue("1000"), Enum: []string{"10", "100", "1000"}}
	if v, err := e.Parse("100"); err != nil || v != EnumValue("100") {
		t.Errorf("enum 100: %v %v", v, err)
	}
	_, err := e.Parse("5")
	if err == nil || err.Error() != "speed=5 not allowed (allowed: 10, 100, 1000)" {
		t.Errorf("enum 5: %v", err)
	}
}

// Rule 6: the source lists what differs from the off value.
func TestSourceList(t *testing.T) {
	m := E1000E()
	v1, _ := m.Resolve(1, nil)
	if l := v1.SourceList(); len(l) != 0 {
		t.Errorf("version 1 lists %v, want nothing", l)
	}
	v2, _ := m.Resolve(2, nil)
	l := v2.SourceList()
	if len(l) != 1 || l[0] != (Assignment{RXFilterSize, IntValue(16)}) {
		t.Errorf("version 2 lists %v, want rx-filter-size=16", l)
	}
	v3, _ := m.Resolve(3, nil)
	l = v3.SourceList()
	if len(l) != 2 || l[0] != (Assignment{Caps82574L, BoolValue(true)}) || l[1] != (Assignment{RXFilterSize, IntValue(16)}) {
		t.Errorf("version 3 lists %v, want caps-82574l=true and rx-filter-size=16", l)
	}
	// A parameter without an off value is always listed.
	mm := modelWithoutOff()
	c, err := mm.Resolve(0, settings(t, "rx-filter-size=0"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.SourceList()
	if len(got) != 1 || got[0].Name != "queues" {
		t.Errorf("list %v, want queues only (rx-filter-size is off)", got)
	}
}

func TestResolveList(t *testing.T) {
	m := E1000E()
	for _, tc := range []struct {
		list    []Assignment
		want    int64
		wantVer int
	}{
		{nil, 0, 1},
		{[]Assignment{{RXFilterSize, IntValue(16)}}, 16, 2},
		{[]Assignment{{RXFilterSize, IntValue(5)}}, 5, 0},
		{[]Assignment{{Caps82574L, BoolValue(true)}, {RXFilterSize, IntValue(16)}}, 16, 3},
	} {
		c, err := m.ResolveList(tc.list)
		if err != nil {
			t.Fatal(err)
		}
		if c.Int(RXFilterSize) != tc.want || c.Version != tc.wantVer {
			t.Errorf("ResolveList(%v) = %d at version %d, want %d at %d",
				tc.list, c.Int(RXFilterSize), c.Version, tc.want, tc.wantVer)
		}
		// Starting from a list and announcing it gives the list back.
		if got := c.SourceList(); len(got) != len(tc.list) {
			t.Errorf("round trip of %v gives %v", tc.list, got)
		}
	}
	_, err := m.ResolveList([]Assignment{{"foo", IntValue(1)}, {RXFilterSize, IntValue(99)}})
	if err == nil || !strings.Contains(err.Error(), "unknown parameter foo") ||
		!strings.Contains(err.Error(), "rx-filter-size=99 out of range 0..16") {
		t.Errorf("ResolveList with two bad entries: %v", err)
	}
	if _, err := modelWithoutOff().ResolveList(nil); err == nil ||
		err.Error() != "parameter queues: not in the source's list, and it has no off value to take instead" {
		t.Errorf("ResolveList without a parameter that cannot be off: %v", err)
	}
}

func TestValidateRefusesMalformedModels(t *testing.T) {
	good := func() *Model { return E1000E() }
	for _, tc := range []struct {
		name   string
		mutate func(m *Model)
		want   string
	}{
		{"scheme", func(m *Model) { m.Name = "https://example.org/x" }, "no scheme"},
		{"no domain", func(m *Model) { m.Name = "devices/e1000e" }, "domain followed by a path"},
		{"no path", func(m *Model) { m.Name = "example.org" }, "domain followed by a path"},
		{"upper case", func(m *Model) { m.Name = "Example.org/x" }, "only a-z"},
		{"empty component", func(m *Model) { m.Name = "example.org//x" }, "empty or relative"},
		{"duplicate param", func(m *Model) { m.Params = append(m.Params, m.Params[0]) }, "defined twice"},
		{"init out of range", func(m *Model) { m.Param(RXFilterSize).Init = IntValue(17) }, "initial value"},
		{"off out of range", func(m *Model) { v := IntValue(-1); m.Param(RXFilterSize).Off = &v }, "off value"},
		{"off wrong type", func(m *Model) { v := BoolValue(false); m.Param(RXFilterSize).Off = &v }, "off value"},
		{"empty range", func(m *Model) { m.Param(RXFilterSize).Ranges = []Range{{2, 1}} }, "empty range"},
		{"bad param name", func(m *Model) { m.Param(RXFilterSize).Name = "RX" }, "only a-z"},
		{"no versions", func(m *Model) { m.Versions = nil }, "no versions"},
		{"oldest first", func(m *Model) { m.Versions[0], m.Versions[1] = m.Versions[1], m.Versions[0] }, "newest first"},
		{"version 0", func(m *Model) { m.Versions[1].Number = 0 }, "start at 1"},
		{"incomplete version", func(m *Model) { delete(m.Versions[1].Values, RXFilterSize) }, "does not set rx-filter-size"},
		{"unknown in version", func(m *Model) { m.Versions[1].Values["x"] = IntValue(1) }, "unknown parameter x"},
		{"bad value in version", func(m *Model) { m.Versions[1].Values[RXFilterSize] = IntValue(40) }, "out of range"},
		{"enum without values", func(m *Model) {
			m.Params = append(m.Params, Param{Name: "e", Type: Enum, Init: EnumValue("a")})
		}, "enum without values"},
	} {
		m := good()
		tc.mutate(m)
		err := m.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestDescribeRoundTrip(t *testing.T) {
	out, err := Describe(All()...)
	if err != nil {
		t.Fatal(err)
	}
	models, err := DecodeDescription(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 1 || !reflect.DeepEqual(models[0], E1000E()) {
		t.Errorf("round trip changed the model:\n got %+v\nwant %+v", models[0], E1000E())
	}
	again, err := Describe(models...)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("description not stable:\n%s\n%s", out, again)
	}
	for _, key := range []string{`"models"`, `"params"`, `"versions"`, `"type": "int"`, `"init_value": 16`,
		`"off_value": 0`, `"allowed_values"`, `"description"`, `"latest_version": 3`} {
		if !bytes.Contains(out, []byte(key)) {
			t.Errorf("description lacks %s:\n%s", key, out)
		}
	}
}

func TestDecodeDescriptionRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "description: empty: no JSON value"},
		{`{}`, "no models"},
		{`{"models":{}} {}`, "trailing data"},
		{`{"models":{},"extra":1}`, "unknown field"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{},"versions":{"1":{}},"more":1}}}`, "unknown field"},
		{`{"models":{"x/m":{"latest_version":1,"params":{},"versions":{"1":{}}}}}`, "domain followed by a path"},
		{`{"models":{"x.org/m":{"latest_version":2,"params":{},"versions":{"1":{}}}}}`, "latest_version 2"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{},"versions":{"01":{}}}}}`, "not a positive integer"},
		{`{"models":{"x.org/m":{"latest_version":0,"params":{},"versions":{}}}}`, "no versions"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"float","init_value":1,"description":""}},"versions":{"1":{"p":1}}}}}`, "unknown type"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","description":""}},"versions":{"1":{"p":1}}}}}`, "no init_value"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1,"off_value":null,"description":""}},"versions":{"1":{"p":1}}}}}`, "off_value"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1.5,"description":""}},"versions":{"1":{"p":1}}}}}`, "not an integer"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":5,"allowed_values":[{"min":0,"max":3}],"description":""}},"versions":{"1":{"p":1}}}}}`, "out of range"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"bool","init_value":true,"allowed_values":[true],"description":""}},"versions":{"1":{"p":true}}}}}`, "allowed_values on a bool"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1,"description":""}},"versions":{"1":{}}}}}`, "does not set p"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1,"description":""}},"versions":{"1":{"p":"x"}}}}}`, `version 1: p="x": a string, but p takes an integer`},
		// The document's words, not the Go types it decodes into.
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1,"allowed_values":["x"],"description":""}},"versions":{"1":{"p":1}}}}}`,
			`parameter p: allowed_values: a string where a range {"min": N, "max": N} is expected`},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1,"allowed_values":{"min":0},"description":""}},"versions":{"1":{"p":1}}}}}`,
			`parameter p: allowed_values: an object where a list of ranges {"min": N, "max": N} is expected`},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"int","init_value":1,"allowed_values":[{"min":"0","max":1}],"description":""}},"versions":{"1":{"p":1}}}}}`,
			"allowed_values: min: a string where an integer is expected"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"enum","init_value":"a","allowed_values":[1],"description":""}},"versions":{"1":{"p":"a"}}}}}`,
			"allowed_values: a number where a string is expected"},
		{`{"models":[]}`, "description: models: a list where an object is expected"},
		{`{"models":}`, "description: not valid JSON at byte 11: invalid character '}' looking for beginning of value"},
		{`{"models":`, "description: not valid JSON: it ends too early"},
		{`{"models":{"x.org/m":{"latest_version":1,"params":{"p":{"type":"enum","init_value":1,"allowed_values":["a"],"description":""}},"versions":{"1":{"p":"a"}}}}}`,
			"init_value: p=1: an integer, but p takes one of a"},
	} {
		_, err := DecodeDescription(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeDescription(%s) = %v, want it to mention %q", tc.in, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "json:") ||
			strings.Contains(err.Error(), " a int")) {
			t.Errorf("DecodeDescription(%s): %q speaks of the implementation", tc.in, err)
		}
	}
	big := `{"models":{` + strings.Repeat(" ", MaxDescriptionJSON) + `}}`
	if _, err := DecodeDescription(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized description: %v", err)
	}
}

func TestSourceJSON(t *testing.T) {
	c, _ := E1000E().Resolve(2, nil)
	src := c.Source()
	b, err := src.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	back, err := DecodeSource(bytes.NewReader(b))
	if err != nil || !reflect.DeepEqual(back, src) {
		t.Errorf("round trip: %+v, %v; want %+v", back, err, src)
	}
	// The MAC rides along, last, in its canonical form.
	mac, err := DecodeSource(strings.NewReader(`{"model":"a.b/c","params":{},"mac":"02-E1-0E-AA-BB-CC"}`))
	if err != nil || mac.MAC.String() != "02:e1:0e:aa:bb:cc" {
		t.Fatalf("source with a mac: %+v, %v", mac, err)
	}
	if b, err := mac.MarshalJSON(); err != nil || string(b) != `{"model":"a.b/c","params":{},"mac":"02:e1:0e:aa:bb:cc"}` {
		t.Errorf("source with a mac encodes as %s, %v", b, err)
	}
	if src.MAC != nil {
		t.Errorf("a configuration's own source has a MAC: %v", src.MAC)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"params":{}}`, "no model"},
		{`{"model":"a.b/c"}`, "no params"},
		{`{"model":"a.b/c","params":{},"x":1}`, "unknown field"},
		{`{"model":"a.b/c","params":{"p":null}}`, "boolean, an integer or a string"},
		{`{"model":"a.b/c","params":{"p":[1]}}`, "boolean, an integer or a string"},
		{`{"model":"a.b/c","params":{"p":1e3}}`, "not an integer"},
		{`{"model":"a.b/c","params":{"p":99999999999999999999}}`, "p=99999999999999999999: an integer beyond the 64-bit range"},
		{`{"model":"a.b/c","params":{"P Q":1}}`, "only a-z"},
		{`{"model":"a.b/c","params":{},"version":-1}`, "version -1"},
		{`{"model":"a.b/c","params":{},"mac":""}`, `mac "": not a 48-bit MAC address`},
		{`{"model":"a.b/c","params":{},"mac":"02:00:00:00:00"}`, "not a 48-bit MAC address"},
		{`{"model":"a.b/c","params":{},"mac":"00:00:00:00:00:00:00:00"}`, "not a 48-bit MAC address"},
		{`{"model":"a.b/c","params":{},"mac":"01:00:5e:00:00:01"}`, "a multicast address"},
		{`{"model":"a.b/c","params":{},"mac":"00:00:00:00:00:00"}`, "the all-zero address"},
		{`{"model":"a.b/c","params":{},"mac":2}`, "source configuration: mac: a number where a string is expected"},
		{`{"model":"a.b/c","params":[]}`, "source configuration: params: a list where an object is expected"},
	} {
		_, err := DecodeSource(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeSource(%s) = %v, want it to mention %q", tc.in, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "json:")) {
			t.Errorf("DecodeSource(%s): %q speaks of the implementation", tc.in, err)
		}
	}
}

func settings(t *testing.T, ss ...string) []Setting {
	t.Helper()
	out := make([]Setting, 0, len(ss))
	for _, s := range ss {
		st, err := ParseSetting(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

// modelWithoutOff loads testdata/no-off-value.json: the e1000e model name
// with an extra parameter "queues" that has no off value.
func modelWithoutOff() *Model {
	ms := mustLoad("testdata/no-off-value.json")
	return ms[0]
}

func mustLoad(path string) []*Model {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	ms, err := DecodeDescription(f)
	if err != nil {
		panic(path + ": " + err.Error())
	}
	return ms
}
