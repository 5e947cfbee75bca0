package model

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// source resolves the e1000e model as a server started with --version and
// --param would, and returns what it announces.
func source(t *testing.T, version int, ss ...string) Source {
	t.Helper()
	c, err := E1000E().Resolve(version, settings(t, ss...))
	if err != nil {
		t.Fatal(err)
	}
	return c.Source()
}

// thisProgram is the destination description this program prints, read
// back the way an orchestrator reads a remote host's describe output.
func thisProgram(t *testing.T) []*Model {
	t.Helper()
	out, err := Describe(All()...)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := DecodeDescription(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func messages(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.Msg)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestCheckModelMismatchRefused(t *testing.T) {
	src := source(t, 2)
	src.Model = "qemu.org/devices/e1000e"
	ps := Check(src, thisProgram(t))
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, "model mismatch") ||
		!strings.Contains(ps[0].Msg, "qemu.org/devices/e1000e") || !strings.Contains(ps[0].Msg, E1000EName) {
		t.Errorf("got %q", messages(ps))
	}
	if ps := Check(source(t, 2), nil); len(ps) != 1 || !strings.Contains(ps[0].Msg, "offers none") {
		t.Errorf("empty destination: %q", messages(ps))
	}
}

// A version 1 source migrates into a destination that can do version 2:
// the check passes, and the destination started with the source's list
// runs unfiltered, as the source does.
func TestCheckV1SourceIntoV2CapableDestination(t *testing.T) {
	src := source(t, 1)
	if ps := Check(src, thisProgram(t)); len(ps) != 0 {
		t.Fatalf("refused: %q", messages(ps))
	}
	dst, err := E1000E().ResolveList(src.Params)
	if err != nil {
		t.Fatal(err)
	}
	if got := dst.Int(RXFilterSize); got != 0 {
		t.Errorf("destination runs with rx-filter-size=%d, want 0 (unfiltered)", got)
	}
	if dst.Version != 1 {
		t.Errorf("destination reports version %d, want 1", dst.Version)
	}
}

// A version 2 source cannot go to a host that only knows version 1: the
// refusal names rx-filter-size.
func TestCheckV2SourceAgainstV1OnlyRefused(t *testing.T) {
	ps := Check(source(t, 2), mustLoad("testdata/v1-only.json"))
	if len(ps) != 1 || ps[0].Param != RXFilterSize || !strings.Contains(ps[0].Msg, "unknown parameter rx-filter-size") {
		t.Errorf("got %q", messages(ps))
	}
}

// A version-2-capable server started as version 1 can go back to the old
// host.
func TestCheckV2CapableStartedAsV1AcceptedByV1Only(t *testing.T) {
	if ps := Check(source(t, 1), mustLoad("testdata/v1-only.json")); len(ps) != 0 {
		t.Errorf("refused: %q", messages(ps))
	}
	// So is one started with the old value given explicitly.
	if ps := Check(source(t, 2, "rx-filter-size=0"), mustLoad("testdata/v1-only.json")); len(ps) != 0 {
		t.Errorf("refused: %q", messages(ps))
	}
}

// v2Only is the description the program printed before caps-82574l
// existed (version 2 its latest), as a host not yet upgraded prints it.
func v2Only(t *testing.T) []*Model {
	t.Helper()
	ms := mustLoad("testdata/v2-only.json")
	if len(ms) != 1 || ms[0].Latest() != 2 || ms[0].Param(Caps82574L) != nil {
		t.Fatal("testdata/v2-only.json is not the version-2 description")
	}
	return ms
}

// The capability layout is a parameter: version 3 is caps-82574l=true on
// top of version 2, and an explicit caps-82574l=true on version 2 is
// version 3.
func TestVersion3IsCaps82574L(t *testing.T) {
	m := E1000E()
	v3, err := m.Resolve(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2on, err := m.Resolve(2, settings(t, "caps-82574l=true"))
	if err != nil {
		t.Fatal(err)
	}
	if !v3.Values[Caps82574L].Bool || !reflect.DeepEqual(v2on.Values, v3.Values) {
		t.Errorf("version 2 with caps-82574l=true is %v, version 3 is %v", v2on.Values, v3.Values)
	}
	// Started from its list, as a destination is, it is version 3.
	if c, err := m.ResolveList(v2on.SourceList()); err != nil || c.Version != 3 {
		t.Errorf("version 2 with caps-82574l=true started from its list: version %d, %v", c.Version, err)
	}
	v3off, err := m.Resolve(3, settings(t, "caps-82574l=false"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := m.ResolveList(v3off.SourceList()); err != nil || c.Version != 2 || c.Values[Caps82574L].Bool {
		t.Errorf("version 3 with caps-82574l=false started from its list: version %d, %v", c.Version, err)
	}
	if p := m.Param(Caps82574L); p == nil || p.Type != Bool || p.Off == nil || *p.Off != BoolValue(false) || p.Init != BoolValue(true) {
		t.Errorf("caps-82574l: %+v, want a bool, init true, off false", p)
	}
}

// A version-2 source (the old layout, no caps-82574l in its list) goes to
// a host that knows version 3: started with the source's list, the
// destination keeps the old layout. A version-3 source cannot go to a host
// that only knows version 2, and one started as version 2 can.
func TestCheckCapsLayoutAcrossVersions(t *testing.T) {
	src := source(t, 2)
	if ps := Check(src, thisProgram(t)); len(ps) != 0 {
		t.Fatalf("version 2 into this program refused: %q", messages(ps))
	}
	dst, err := E1000E().ResolveList(src.Params)
	if err != nil {
		t.Fatal(err)
	}
	if dst.Values[Caps82574L].Bool || dst.Version != 2 {
		t.Errorf("destination started with a version-2 list: caps-82574l=%v, version %d", dst.Values[Caps82574L].Bool, dst.Version)
	}
	ps := Check(source(t, 3), v2Only(t))
	if len(ps) != 1 || ps[0].Param != Caps82574L || ps[0].Msg != "destination: unknown parameter caps-82574l (known: hide-msix, rx-filter-size)" {
		t.Errorf("version 3 into a version-2-only host: %q", messages(ps))
	}
	if ps := Check(source(t, 2), v2Only(t)); len(ps) != 0 {
		t.Errorf("version 2 into a version-2-only host refused: %q", messages(ps))
	}
	if ps := Check(source(t, 3, "caps-82574l=false"), v2Only(t)); len(ps) != 0 {
		t.Errorf("version 3 started with the old layout refused by a version-2-only host: %q", messages(ps))
	}
}

// Two running servers with different layouts: the check against the
// destination's configuration names the parameter and both values, either
// way round, and so does the stream's own check.
func TestCompareRefusesMismatchedCapsLayout(t *testing.T) {
	for _, tc := range []struct {
		src, dst Source
		want     string
	}{
		{source(t, 2), source(t, 3), "source runs caps-82574l=false, destination caps-82574l=true\n"},
		{source(t, 3), source(t, 2), "source runs caps-82574l=true, destination caps-82574l=false\n"},
		{source(t, 3), source(t, 2, "caps-82574l=true"), ""},
	} {
		ps := Compare(tc.src, tc.dst)
		if got := messages(ps); got != tc.want {
			t.Errorf("Compare(%v, %v): got %q, want %q", tc.src.Params, tc.dst.Params, got, tc.want)
		}
		if tc.want != "" && ps[0].Param != Caps82574L {
			t.Errorf("problem not named %s: %+v", Caps82574L, ps)
		}
	}
	c, err := E1000E().Resolve(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := messages(c.Matches(source(t, 2))); got != "source runs caps-82574l=false, this device caps-82574l=true\n" {
		t.Errorf("Matches: %q", got)
	}
}

func TestCheckValueRange(t *testing.T) {
	dest := thisProgram(t)
	in := Source{Model: E1000EName, Params: []Assignment{{RXFilterSize, IntValue(8)}}}
	if ps := Check(in, dest); len(ps) != 0 {
		t.Errorf("8 refused: %q", messages(ps))
	}
	out := Source{Model: E1000EName, Params: []Assignment{{RXFilterSize, IntValue(99)}}}
	ps := Check(out, dest)
	if len(ps) != 1 || ps[0].Msg != "destination: rx-filter-size=99 out of range 0..16" {
		t.Errorf("99: %q", messages(ps))
	}
	// A destination with a narrower range refuses what the source runs.
	narrow := thisProgram(t)
	narrow[0].Param(RXFilterSize).Ranges = []Range{{0, 8}}
	if ps := Check(source(t, 2), narrow); len(ps) != 1 || ps[0].Msg != "destination: rx-filter-size=16 out of range 0..8" {
		t.Errorf("narrow destination: %q", messages(ps))
	}
	wrongType := Source{Model: E1000EName, Params: []Assignment{{RXFilterSize, StringValue("16")}}}
	if ps := Check(wrongType, dest); len(ps) != 1 || ps[0].Msg != `destination: rx-filter-size="16": a string, but rx-filter-size takes an integer in 0..16` {
		t.Errorf("string for int: %q", messages(ps))
	}
}

func TestCheckDestinationParamWithoutOffValueRefused(t *testing.T) {
	dest := mustLoad("testdata/no-off-value.json")
	ps := Check(source(t, 2), dest)
	if len(ps) != 1 || ps[0].Param != "queues" || !strings.Contains(ps[0].Msg, "no off value") {
		t.Errorf("got %q", messages(ps))
	}
	// Listing it makes the source acceptable.
	src := source(t, 2)
	src.Params = append(src.Params, Assignment{"queues", IntValue(2)})
	if ps := Check(src, dest); len(ps) != 0 {
		t.Errorf("refused with queues listed: %q", messages(ps))
	}
}

// Rule 7 asks for every failure, not only the first.
func TestCheckReportsEveryFailure(t *testing.T) {
	src := Source{Model: E1000EName, Params: []Assignment{
		{"zeta", IntValue(1)},
		{RXFilterSize, IntValue(99)},
		{"alpha", BoolValue(true)},
	}}
	ps := Check(src, mustLoad("testdata/no-off-value.json"))
	var params []string
	for _, p := range ps {
		params = append(params, p.Param)
	}
	if got := strings.Join(params, ","); got != "alpha,queues,rx-filter-size,zeta" {
		t.Errorf("problems for %s, want alpha,queues,rx-filter-size,zeta:\n%s", got, messages(ps))
	}
}

func TestMatches(t *testing.T) {
	v1, _ := E1000E().Resolve(1, nil)
	v2, _ := E1000E().Resolve(2, nil)
	if ps := v2.Matches(v2.Source()); len(ps) != 0 {
		t.Errorf("v2 does not match itself: %q", messages(ps))
	}
	if ps := v1.Matches(v1.Source()); len(ps) != 0 {
		t.Errorf("v1 does not match itself: %q", messages(ps))
	}
	// A v2 stream into a device started as v1, and the other way round.
	if ps := v1.Matches(v2.Source()); len(ps) != 1 || ps[0].Msg != "source runs rx-filter-size=16, this device rx-filter-size=0" {
		t.Errorf("v2 stream into v1 device: %q", messages(ps))
	}
	if ps := v2.Matches(v1.Source()); len(ps) != 1 || ps[0].Msg != "source runs rx-filter-size=0, this device rx-filter-size=16" {
		t.Errorf("v1 stream into v2 device: %q", messages(ps))
	}
	other := v2.Source()
	other.Model = "qemu.org/devices/e1000e"
	if ps := v2.Matches(other); len(ps) != 1 || !strings.Contains(ps[0].Msg, "model mismatch") {
		t.Errorf("other model: %q", messages(ps))
	}
	bad := Source{Model: E1000EName, Params: []Assignment{{"foo", IntValue(1)}}}
	if ps := v1.Matches(bad); len(ps) != 1 || ps[0].Msg != "source: unknown parameter foo (known: caps-82574l, hide-msix, rx-filter-size)" {
		t.Errorf("unknown parameter: %q", messages(ps))
	}
}

func withMAC(t *testing.T, s Source, mac string) Source {
	t.Helper()
	m, err := ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	s.MAC = m
	return s
}

// Compare is the check of a destination server that already runs: its
// list and, when both report one, its MAC must be the source's.
func TestCompare(t *testing.T) {
	const a, b = "02:e1:0e:00:00:01", "02:e1:0e:00:00:02"
	explicitOff := Source{Model: E1000EName, Params: []Assignment{{RXFilterSize, IntValue(0)}}}
	for _, tc := range []struct {
		name     string
		src, dst Source
		want     string
	}{
		{"same list and mac", withMAC(t, source(t, 2), a), withMAC(t, source(t, 2), a), ""},
		{"a side without mac", withMAC(t, source(t, 2), a), source(t, 2), ""},
		{"an off value listed equals it unlisted", source(t, 1), explicitOff, ""},
		{"other mac", withMAC(t, source(t, 2), a), withMAC(t, source(t, 2), b),
			"mac: source runs 02:e1:0e:00:00:01, destination 02:e1:0e:00:00:02 (the state carries the address; start the destination with the source's)\n"},
		{"other list", source(t, 2), source(t, 1), "source runs rx-filter-size=16, destination rx-filter-size=0\n"},
		{"every difference", withMAC(t, source(t, 1), a), withMAC(t, source(t, 2), b),
			"mac: source runs 02:e1:0e:00:00:01, destination 02:e1:0e:00:00:02 (the state carries the address; start the destination with the source's)\n" +
				"source runs rx-filter-size=0, destination rx-filter-size=16\n"},
		{"other model", source(t, 2), Source{Model: "qemu.org/devices/e1000e"},
			"model mismatch: source runs " + E1000EName + ", destination qemu.org/devices/e1000e\n"},
		{"destination list unknown here", source(t, 2), Source{Model: E1000EName, Params: []Assignment{{"foo", IntValue(1)}}},
			"destination configuration: unknown parameter foo (known: caps-82574l, hide-msix, rx-filter-size)\n"},
		{"a model unknown here, literally", Source{Model: "x.org/m", Params: []Assignment{{"p", IntValue(1)}, {"q", BoolValue(true)}}},
			Source{Model: "x.org/m", Params: []Assignment{{"p", IntValue(2)}, {"r", StringValue("s")}}},
			"source runs p=1, destination p=2\nsource runs q=true, the destination does not list q\ndestination runs r=s, the source does not list r\n"},
	} {
		if got := messages(Compare(tc.src, tc.dst)); got != tc.want {
			t.Errorf("%s: got\n%swant\n%s", tc.name, got, tc.want)
		}
	}
	ps := Compare(withMAC(t, source(t, 2), a), withMAC(t, source(t, 2), b))
	if len(ps) != 1 || ps[0].Param != "mac" {
		t.Errorf("a MAC problem is not named mac: %+v", ps)
	}
	// The description has no MAC: Check does not look at it.
	if ps := Check(withMAC(t, source(t, 2), a), thisProgram(t)); len(ps) != 0 {
		t.Errorf("Check with a MAC: %q", messages(ps))
	}
}

// A source list arrives as JSON, which has no enum type: the value of an
// enum parameter is a string. Check and ResolveList read it through one
// conversion, so for every parameter type a value the check accepts is a
// value a destination starts with, and a value it refuses is refused by
// ResolveList in the same words.
func TestCheckAndResolveListAgreeOnEveryType(t *testing.T) {
	models := mustLoad("testdata/every-type.json")
	m := models[0]
	decode := func(t *testing.T, params string) Source {
		t.Helper()
		src, err := DecodeSource(strings.NewReader(`{"model":"example.org/devices/every-type","params":` + params + `}`))
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	for _, tc := range []struct {
		params string
		name   string
		want   Value
	}{
		{`{"bool":true}`, "bool", BoolValue(true)},
		{`{"int":8}`, "int", IntValue(8)},
		{`{"string":"anything"}`, "string", StringValue("anything")},
		{`{"enum":"slow"}`, "enum", EnumValue("slow")},
	} {
		src := decode(t, tc.params)
		if ps := Check(src, models); len(ps) != 0 {
			t.Errorf("%s: Check refused: %q", tc.params, messages(ps))
			continue
		}
		c, err := m.ResolveList(src.Params)
		if err != nil {
			t.Errorf("%s: the check accepted it, ResolveList did not: %v", tc.params, err)
			continue
		}
		if got, _ := c.Value(tc.name); got != tc.want {
			t.Errorf("%s: %s runs %#v, want %#v", tc.params, tc.name, got, tc.want)
		}
		// The device started from the list takes a state announcing it.
		if ps := c.Matches(src); len(ps) != 0 {
			t.Errorf("%s: Matches refused its own list: %q", tc.params, messages(ps))
		}
	}
	for _, tc := range []struct{ params, want string }{
		{`{"bool":1}`, "bool=1: an integer, but bool takes true or false"},
		{`{"bool":"true"}`, `bool="true": a string, but bool takes true or false`},
		{`{"int":"8"}`, `int="8": a string, but int takes an integer in 0..8`},
		{`{"int":9}`, "int=9 out of range 0..8"},
		{`{"string":false}`, "string=false: a boolean, but string takes a string"},
		{`{"enum":2}`, "enum=2: an integer, but enum takes one of none, fast, slow"},
		{`{"enum":"medium"}`, "enum=medium not allowed (allowed: none, fast, slow)"},
	} {
		src := decode(t, tc.params)
		ps := Check(src, models)
		if len(ps) != 1 || ps[0].Msg != "destination: "+tc.want {
			t.Errorf("%s: Check says %q, want %q", tc.params, messages(ps), "destination: "+tc.want)
		}
		if _, err := m.ResolveList(src.Params); err == nil || err.Error() != tc.want {
			t.Errorf("%s: ResolveList says %v, want %q", tc.params, err, tc.want)
		}
	}
}
