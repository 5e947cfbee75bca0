package migration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// costInner and costAll hold every kind of field state structs use, for
// comparing the cost walk with what the decoder really allocates.
type costInner struct {
	A uint32 `msgpack:"a"`
	S string `msgpack:"s,omitempty"`
	B []byte `msgpack:"b"`
}

type costAll struct {
	Frames [][]byte              `msgpack:"frames"`
	Regs   map[string]uint32     `msgpack:"regs"`
	Arrays map[string][]uint32   `msgpack:"arrays"`
	Words  map[uint8]uint16      `msgpack:"words"`
	Items  []costInner           `msgpack:"items"`
	Ptr    *costInner            `msgpack:"ptr"`
	Fixed  [5]uint32             `msgpack:"fixed"`
	Flags  [5]bool               `msgpack:"flags"`
	Name   string                `msgpack:"name"`
	Any    any                   `msgpack:"any"`
	Strs   []string              `msgpack:"strs"`
	Nested map[string]costInner  `msgpack:"nested"`
	Big    map[uint16][40]uint32 `msgpack:"big"`
	Int    int64
}

// allocated is what f allocates, by the runtime's count.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// rawDecode decodes as Section.Decode does, without the bound.
func rawDecode(p []byte, v any) error {
	d := msgpack.NewDecoder(bytes.NewReader(p))
	return d.Decode(v)
}

// costSlop is what the decoder allocates whatever the payload (itself,
// its reader, its first scratch buffer), which DecodeSlack covers, with
// room for what the runtime and the test framework allocate meanwhile.
const costSlop = 16 << 10

// hostilePayloads are payloads shaped to cost the decoder much per byte,
// by name, n scaling them.
func hostilePayloads(t testing.TB, n int) map[string][]byte {
	t.Helper()
	enc := func(build func(b []byte) []byte) []byte { return build(nil) }
	mapHdr := func(b []byte, n int) []byte { return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n)) }
	arrHdr := func(b []byte, n int) []byte { return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n)) }
	key := func(b []byte, k string) []byte { return append(append(b, 0xa0|byte(len(k))), k...) }
	field := func(name string, body func(b []byte) []byte) []byte {
		return enc(func(b []byte) []byte { return body(key(append(b, 0x81), name)) })
	}
	out := map[string][]byte{
		"empty frames": field("frames", func(b []byte) []byte {
			b = arrHdr(b, n)
			for range n {
				b = append(b, 0xc4, 0)
			}
			return b
		}),
		"nil frames": field("frames", func(b []byte) []byte {
			b = arrHdr(b, n)
			return append(b, bytes.Repeat([]byte{0xc0}, n)...)
		}),
		"one-byte frames": field("frames", func(b []byte) []byte {
			b = arrHdr(b, n)
			for range n {
				b = append(b, 0xc4, 1, 7)
			}
			return b
		}),
		"100-byte frames": field("frames", func(b []byte) []byte {
			b = arrHdr(b, n/50)
			for range n / 50 {
				b = append(append(b, 0xc4, 100), make([]byte, 100)...)
			}
			return b
		}),
		"many keys": field("regs", func(b []byte) []byte {
			b = mapHdr(b, n)
			for i := range n {
				b = append(b, 0xa4, byte(i>>16), byte(i>>8), byte(i), 'k', 0)
			}
			return b
		}),
		"long keys": field("regs", func(b []byte) []byte {
			b = mapHdr(b, n/40)
			for i := range n / 40 {
				b = append(key(b, fmt.Sprintf("%030d", i)), 0)
			}
			return b
		}),
		"one key repeated": field("words", func(b []byte) []byte {
			b = mapHdr(b, n)
			for range n {
				b = append(b, 1, 2)
			}
			return b
		}),
		"empty arrays": field("arrays", func(b []byte) []byte {
			b = mapHdr(b, n/8)
			for i := range n / 8 {
				b = append(b, 0xa4, byte(i>>16), byte(i>>8), byte(i), 'k', 0x91, 1)
			}
			return b
		}),
		"empty items": field("items", func(b []byte) []byte {
			b = arrHdr(b, n)
			return append(b, bytes.Repeat([]byte{0x80}, n)...)
		}),
		"items by array": field("items", func(b []byte) []byte {
			b = arrHdr(b, n/4)
			for range n / 4 {
				b = append(b, 0x93, 0, 0xa0, 0xc0)
			}
			return b
		}),
		"strings": field("strs", func(b []byte) []byte {
			b = arrHdr(b, n/2)
			for range n / 2 {
				b = append(b, 0xa1, 'x')
			}
			return b
		}),
		"nested structs": field("nested", func(b []byte) []byte {
			b = mapHdr(b, n/6)
			for i := range n / 6 {
				b = append(b, 0xa3, byte(i>>16), byte(i>>8), byte(i), 0x80)
			}
			return b
		}),
		"big values": field("big", func(b []byte) []byte {
			b = mapHdr(b, n/4)
			for i := range n / 4 {
				b = append(b, 0xcd, byte(i>>8), byte(i), 0x90)
			}
			return b
		}),
		"dynamic arrays": field("any", func(b []byte) []byte {
			b = arrHdr(b, n/2)
			for range n / 2 {
				b = append(b, 0x91, 1)
			}
			return b
		}),
		"dynamic maps": field("any", func(b []byte) []byte {
			b = arrHdr(b, n/3)
			for range n / 3 {
				b = append(b, 0x81, 0xa0, 1)
			}
			return b
		}),
		"unknown fields": enc(func(b []byte) []byte {
			b = mapHdr(b, n/4)
			for i := range n / 4 {
				b = append(b, 0xa2, byte(i>>8), byte(i), 0xc0)
			}
			return b
		}),
	}
	// A growing string run: the scratch buffer grows at each.
	var runs []byte
	runs = mapHdr(runs, 64)
	for i := range 64 {
		runs = append(key(runs, fmt.Sprintf("u%d", i)), 0xdb)
		runs = binary.BigEndian.AppendUint32(runs, uint32(i*n/2048))
		runs = append(runs, make([]byte, i*n/2048)...)
	}
	out["growing skipped strings"] = runs
	return out
}

// The cost walk is an upper bound of what the decoder allocates, for every
// shape of payload and field kind, within the fixed slop of the decoder
// itself.
func TestDecodeCostBoundsTheDecoder(t *testing.T) {
	good, err := msgpack.Marshal(&costAll{
		Frames: [][]byte{[]byte("frame one"), make([]byte, 1500)},
		Regs:   map[string]uint32{"ctrl": 1, "rctl": 2},
		Arrays: map[string][]uint32{"mta": make([]uint32, 128)},
		Words:  map[uint8]uint16{1: 2, 3: 4},
		Items:  []costInner{{A: 1, S: "x", B: []byte("y")}},
		Ptr:    &costInner{A: 5},
		Fixed:  [5]uint32{1, 2, 3, 4, 5},
		Name:   "name",
		Any:    map[string]any{"a": []any{1, "b", []byte{2}}},
		Strs:   []string{"p", "q"},
		Nested: map[string]costInner{"n": {A: 1}},
		Big:    map[uint16][40]uint32{7: {1, 2, 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := hostilePayloads(t, 20_000)
	cases["every field"] = good
	for name, p := range cases {
		if err := checkMsgpack(p, 32); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cost, err := decodeCost(p, reflect.TypeFor[*costAll](), math.MaxUint64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var derr error
		got := allocated(func() { derr = rawDecode(p, &costAll{}) })
		if got > cost+costSlop {
			t.Errorf("%s: %d bytes of payload: decoding allocated %d, the walk counted %d", name, len(p), got, cost)
		}
		t.Logf("%-24s %8d bytes: allocated %9d (%5.1fx), counted %9d (%5.1fx) %v", name, len(p), got, float64(got)/float64(len(p)), cost, float64(cost)/float64(len(p)), derr)
	}
}

// Section.Decode allocates at most DecodeMultiple times its payload plus
// DecodeSlack, however the payload is shaped: what would cost more is
// refused before it is decoded.
func TestDecodeMemoryBounded(t *testing.T) {
	for name, p := range hostilePayloads(t, 1<<20) {
		var err error
		got := allocated(func() { err = Section{Name: "s", Payload: p}.Decode(&costAll{}) })
		if bound := DecodeMultiple*uint64(len(p)) + DecodeSlack; got > bound {
			t.Errorf("%s: decoding %d bytes allocated %d, over %d", name, len(p), got, bound)
		}
		t.Logf("%-24s %8d bytes: allocated %9d (%4.2fx) %v", name, len(p), got, float64(got)/float64(len(p)), err)
	}
}

// What the bound refuses is refused by name, and what the walk cannot
// follow is refused before any decoding.
func TestDecodeCostRefusals(t *testing.T) {
	p := hostilePayloads(t, 1<<16)["empty frames"]
	err := Section{Name: "rx", Payload: p}.Decode(&costAll{})
	if err == nil || !strings.Contains(err.Error(), "section rx: decoding its") {
		t.Fatalf("empty frames: %v", err)
	}
	twice := []byte{0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x', 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'y'}
	if err := (Section{Name: "s", Payload: twice}).Decode(&costAll{}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Fatalf("a field twice: %v", err)
	}
	type embeds struct{ costInner }
	type custom struct {
		D msgpack.RawMessage `msgpack:"d"`
	}
	type inlined struct {
		A int `msgpack:"a,inline"`
	}
	for _, v := range []any{&embeds{}, &custom{}, &inlined{}, costAll{}} {
		if err := (Section{Name: "s", Payload: []byte{0x80}}).Decode(v); err == nil {
			t.Errorf("%T: decoded", v)
		}
	}
	// A mismatch is left to the decoder, whose error names it.
	if err := (Section{Name: "s", Payload: []byte{0x81, 0xa4, 'n', 'a', 'm', 'e', 0x90}}).Decode(&costAll{}); err == nil || !strings.Contains(err.Error(), "msgpack") {
		t.Fatalf("an array for a string: %v", err)
	}
}

// FuzzDecodeCost: for any payload checkMsgpack accepts, the walk counts at
// least what the decoder allocates.
func FuzzDecodeCost(f *testing.F) {
	for _, p := range hostilePayloads(f, 64) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if checkMsgpack(p, 32) != nil {
			return
		}
		cost, err := decodeCost(p, reflect.TypeFor[*costAll](), math.MaxUint64)
		if err != nil && !strings.Contains(err.Error(), "given twice") {
			t.Fatalf("walk: %v", err)
		}
		if err != nil {
			return
		}
		got := allocated(func() { _ = rawDecode(p, &costAll{}) })
		if got > cost+costSlop {
			t.Fatalf("decoding allocated %d, the walk counted %d", got, cost)
		}
	})
}
