package migration

import (
	"bytes"
	"slices"
	"testing"
)

// canonicalState has fields in an order that is not their keys' and maps
// the msgpack encoder leaves in Go's random order.
type canonicalState struct {
	Zeta  uint32            `msgpack:"zeta"`
	Alpha map[string]uint32 `msgpack:"alpha"`
	Words map[uint8]uint16  `msgpack:"words"`
	Inner []map[string]int  `msgpack:"inner"`
}

func sampleCanonicalState() canonicalState {
	s := canonicalState{Zeta: 7, Alpha: map[string]uint32{}, Words: map[uint8]uint16{}}
	for i := range 64 {
		s.Alpha[string(rune('a'+i%26))+string(rune('a'+i/26))] = uint32(i)
		s.Words[uint8(3*i)] = uint16(i)
	}
	s.Inner = []map[string]int{{"x": 1, "yy": 2, "b": 3, "ab": 4}}
	return s
}

// The same state saves to the same bytes every time, maps of any type
// included, and decodes back to itself.
func TestPutCanonicalDeterministic(t *testing.T) {
	var first []byte
	for i := range 20 {
		w := NewSectionWriter(nil, Limits{})
		st := sampleCanonicalState()
		if err := w.PutCanonical("s", true, &st); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = w.Bytes()
			continue
		}
		if !bytes.Equal(w.Bytes(), first) {
			t.Fatalf("save %d differs from the first", i)
		}
	}
	w := NewSectionWriter(nil, Limits{})
	st := sampleCanonicalState()
	if err := w.PutCanonical("s", true, &st); err != nil {
		t.Fatal(err)
	}
	payload := w.canon
	var back canonicalState
	if err := (Section{Name: "s", Mandatory: true, Payload: payload}).Decode(&back); err != nil {
		t.Fatal(err)
	}
	if back.Zeta != st.Zeta || len(back.Alpha) != len(st.Alpha) || len(back.Words) != len(st.Words) || back.Inner[0]["ab"] != 4 {
		t.Fatalf("decoded %+v", back)
	}
	if !mapsSorted(t, payload) {
		t.Fatal("a map is not in key order")
	}
}

// Keys are ordered by their encoded bytes: a shorter string's head is
// smaller, so "b" comes before "ab", and struct fields are ordered too.
func TestAppendCanonicalOrder(t *testing.T) {
	type fields struct {
		B  int `msgpack:"b"`
		AB int `msgpack:"ab"`
		A  int `msgpack:"a"`
	}
	got, err := AppendCanonical([]byte{0xff}, mustPack(t, fields{1, 2, 3}))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xff, 0x83, 0xa1, 'a', 3, 0xa1, 'b', 1, 0xa2, 'a', 'b', 2}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	// What is canonical already comes out as it went in.
	if again, _ := AppendCanonical(nil, got[1:]); !bytes.Equal(again, got[1:]) {
		t.Fatalf("canonical input changed: % x", again)
	}
}

// AppendCanonical refuses what the payload check refuses.
func TestAppendCanonicalRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": {0x82, 0xa1, 'a'},
		"stray":     {0xc0, 0xc0},
		"extension": {0xd4, 1, 2},
		"huge":      {0xdd, 0xff, 0xff, 0xff, 0xff},
		"deep":      bytes.Repeat([]byte{0x91}, 80),
	} {
		if out, err := AppendCanonical([]byte{1}, b); err == nil || !bytes.Equal(out, []byte{1}) {
			t.Errorf("%s: accepted (% x), or dst changed", name, out)
		}
	}
}

// mapsSorted reports whether every map in the object b (canonical or not)
// has its keys in order.
func mapsSorted(t testing.TB, b []byte) bool {
	t.Helper()
	nodes, i := parseModel(t, b, 0)
	if i != len(b) {
		t.Fatalf("%d stray bytes", len(b)-i)
	}
	var sorted func(n modelNode) bool
	sorted = func(n modelNode) bool {
		if n.isMap && !slices.IsSortedFunc(n.kids, func(a, b modelEntry) int { return bytes.Compare(a.key.bytes(), b.key.bytes()) }) {
			return false
		}
		for _, k := range n.kids {
			if !sorted(k.key) || !sorted(k.val) {
				return false
			}
		}
		return true
	}
	return sorted(nodes)
}

// modelNode is the reference model of a msgpack object the fuzz test
// compares against: a tree, with a map's entries sorted by a plain sort.
type modelNode struct {
	head  []byte // head and scalar or string data
	isMap bool
	kids  []modelEntry // array elements (in val) or map entries
}

type modelEntry struct{ key, val modelNode }

func parseModel(t testing.TB, b []byte, i int) (modelNode, int) {
	h, err := readHead(b, i)
	if err != nil {
		t.Fatalf("model: %v", err)
	}
	end := i + h.size
	if h.kind == 's' || h.kind == 'b' {
		end += int(h.n)
	}
	n := modelNode{head: b[i:end], isMap: h.kind == 'm'}
	i = end
	switch h.kind {
	case 'a':
		for range h.n {
			var e modelEntry
			e.val, i = parseModel(t, b, i)
			n.kids = append(n.kids, e)
		}
	case 'm':
		for range h.n {
			var e modelEntry
			e.key, i = parseModel(t, b, i)
			e.val, i = parseModel(t, b, i)
			n.kids = append(n.kids, e)
		}
	}
	return n, i
}

func (n modelNode) canonical() modelNode {
	c := modelNode{head: n.head, isMap: n.isMap}
	for _, e := range n.kids {
		ce := modelEntry{val: e.val.canonical()}
		if n.isMap {
			ce.key = e.key.canonical()
		}
		c.kids = append(c.kids, ce)
	}
	if c.isMap {
		slices.SortStableFunc(c.kids, func(a, b modelEntry) int { return bytes.Compare(a.key.bytes(), b.key.bytes()) })
	}
	return c
}

func (n modelNode) bytes() []byte {
	b := slices.Clone(n.head)
	for _, e := range n.kids {
		if n.isMap {
			b = append(b, e.key.bytes()...)
		}
		b = append(b, e.val.bytes()...)
	}
	return b
}

// FuzzAppendCanonical: for every payload the stream accepts, the canonical
// form is what a plain tree sort gives, as long, accepted too, sorted, and
// its own canonical form.
func FuzzAppendCanonical(f *testing.F) {
	f.Add(mustPack(f, busyState(4)))
	f.Add(mustPack(f, sampleCanonicalState()))
	f.Add([]byte{0x82, 0xa1, 'b', 0x81, 0xa1, 'z', 1, 0xa1, 'a', 0x92, 0x80, 0xc0})
	f.Add([]byte{0x82, 0x81, 0x02, 0x01, 0x01, 0x81, 0x01, 0x01, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkMsgpack(b, maxCanonicalDepth) != nil {
			if _, err := AppendCanonical(nil, b); err == nil {
				t.Fatal("accepted what the payload check refuses")
			}
			return
		}
		got, err := AppendCanonical(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		model, _ := parseModel(t, b, 0)
		if want := model.canonical().bytes(); !bytes.Equal(got, want) {
			t.Fatalf("canonical % x, the model gives % x", got, want)
		}
		if len(got) != len(b) || checkMsgpack(got, maxCanonicalDepth) != nil || !mapsSorted(t, got) {
			t.Fatalf("canonical form % x of % x", got, b)
		}
		if again, _ := AppendCanonical(nil, got); !bytes.Equal(again, got) {
			t.Fatalf("not its own canonical form: % x", again)
		}
	})
}

// Every type code's head, against the msgpack specification's table.
func TestReadHeadEveryCode(t *testing.T) {
	type want struct {
		kind byte
		size int
		n    uint64
	}
	spec := func(c byte) (want, bool) {
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc2, c == 0xc3:
			return want{'s', 1, 0}, true
		case c <= 0x8f:
			return want{'m', 1, uint64(c - 0x80)}, true
		case c <= 0x9f:
			return want{'a', 1, uint64(c - 0x90)}, true
		case c <= 0xbf:
			return want{'b', 1, uint64(c - 0xa0)}, true
		case c == 0xc0:
			return want{'n', 1, 0}, true
		}
		switch c {
		case 0xcc, 0xd0:
			return want{'s', 1, 1}, true
		case 0xcd, 0xd1:
			return want{'s', 1, 2}, true
		case 0xca, 0xce, 0xd2:
			return want{'s', 1, 4}, true
		case 0xcb, 0xcf, 0xd3:
			return want{'s', 1, 8}, true
		case 0xc4, 0xd9:
			return want{'b', 2, 0x01}, true
		case 0xc5, 0xda:
			return want{'b', 3, 0x0102}, true
		case 0xc6, 0xdb:
			return want{'b', 5, 0x01020304}, true
		case 0xdc:
			return want{'a', 3, 0x0102}, true
		case 0xdd:
			return want{'a', 5, 0x01020304}, true
		case 0xde:
			return want{'m', 3, 0x0102}, true
		case 0xdf:
			return want{'m', 5, 0x01020304}, true
		}
		return want{}, false // 0xc1 and the extension types
	}
	for c := 0; c < 256; c++ {
		h, err := readHead([]byte{byte(c), 1, 2, 3, 4}, 0)
		w, ok := spec(byte(c))
		if !ok {
			if err == nil {
				t.Errorf("%#02x: accepted as %+v", c, h)
			}
			continue
		}
		if err != nil || want(h) != w {
			t.Errorf("%#02x: %+v, %v; want %+v", c, h, err, w)
		}
		if sh, short := shortHead(byte(c)); short && sh != h {
			t.Errorf("%#02x: shortHead %+v, readHead %+v", c, sh, h)
		}
		if w.size > 1 {
			if _, err := readHead([]byte{byte(c)}, 0); err == nil {
				t.Errorf("%#02x: length cut off, accepted", c)
			}
		}
	}
	if _, err := readHead(nil, 0); err == nil {
		t.Error("no byte at all: accepted")
	}
}
