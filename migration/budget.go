package migration

import (
	"encoding"
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// Decoding a section is bounded in memory: Section.Decode first works out,
// from the payload and the Go type it decodes into, an upper bound of what
// the msgpack decoder will allocate, and refuses the section when that is
// more than DecodeMultiple times the payload plus DecodeSlack. The bound
// follows the decoder's own behaviour: a slice of n elements is allocated
// whole (twice: made, then appended) before its first element is read, a
// map is made for its announced entry count, every map entry's key and
// value are allocated on their own, strings and byte slices are copied,
// and the decoder's scratch buffer grows to the longest string it reads.
// checkMsgpack already holds every announced count to the bytes left, but
// an element of one byte can still cost a 24-byte slice header, or a map
// entry of six bytes some eighty: that is what this bound catches.
const (
	// DecodeMultiple is how many times its payload decoding a section
	// may allocate.
	DecodeMultiple = 4
	// DecodeSlack is what decoding any section may allocate beyond
	// that: the decoder's own state and small maps' fixed sizes.
	DecodeSlack = 64 << 10
)

// errOverBudget ends a cost walk as soon as the bound is passed.
var errOverBudget = errors.New("over budget")

// errDecoderStops ends a cost walk where the decoder itself fails (a
// type that does not match, a truncated object): it allocates nothing
// further, so what was counted up to there bounds it.
var errDecoderStops = errors.New("the decoder stops here")

// costWalker walks a msgpack payload alongside the Go type it will be
// decoded into and adds up what decoding it allocates.
type costWalker struct {
	b     []byte
	i     int
	cost  uint64
	limit uint64
	// buf is the size the decoder's scratch buffer has reached: it is
	// reused, and grows only for a longer string or skipped run. It
	// starts at the 64 bytes the decoder allocates first, counted in
	// DecodeSlack.
	buf     uint64
	structs map[reflect.Type][]structField
}

type structField struct {
	name string
	typ  reflect.Type
}

// decodeCost returns an upper bound of what decoding payload into a value
// of type t (a pointer, as Decode takes) allocates, or an error once it
// exceeds limit or when t holds a type whose decoding cannot be bounded
// this way. It expects a payload checkMsgpack accepted; it does not
// allocate in proportion to the payload.
func decodeCost(payload []byte, t reflect.Type, limit uint64) (uint64, error) {
	if t == nil || t.Kind() != reflect.Pointer {
		return 0, fmt.Errorf("decoding into %v, not a pointer", t)
	}
	w := costWalker{b: payload, limit: limit, buf: 64, structs: make(map[reflect.Type][]structField)}
	if err := w.checkType(t.Elem(), 0); err != nil {
		return 0, err
	}
	if err := w.value(t.Elem(), 0); err != nil && !errors.Is(err, errDecoderStops) {
		return w.cost, err
	}
	return w.cost, nil
}

// checkType walks the Go type once and refuses what the cost walk cannot
// follow; it records each struct's fields on the way.
func (w *costWalker) checkType(t reflect.Type, depth int) error {
	if depth > maxWalkDepth {
		return fmt.Errorf("migration: state type %v nests too deep", t)
	}
	if t.Kind() != reflect.Interface && t.NumMethod()+reflect.PointerTo(t).NumMethod() > 0 {
		for _, u := range selfDecoders {
			if t.Implements(u) || reflect.PointerTo(t).Implements(u) {
				// What such a type allocates is its own to say.
				return fmt.Errorf("migration: state type %v decodes itself (%v): the decode bound cannot follow it", t, u)
			}
		}
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.String, reflect.Interface:
		return nil
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return w.checkType(t.Elem(), depth+1)
	case reflect.Map:
		if err := w.checkType(t.Key(), depth+1); err != nil {
			return err
		}
		return w.checkType(t.Elem(), depth+1)
	case reflect.Struct:
		if _, ok := w.structs[t]; ok {
			return nil
		}
		fs, err := structFields(t)
		if err != nil {
			return err
		}
		w.structs[t] = fs
		for _, f := range fs {
			if err := w.checkType(f.typ, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("migration: state type %v: the decode bound does not follow a %v", t, t.Kind())
}

// selfDecoders are the interfaces through which the msgpack decoder lets
// a type decode itself.
var selfDecoders = []reflect.Type{
	reflect.TypeFor[msgpack.CustomDecoder](),
	reflect.TypeFor[msgpack.Unmarshaler](),
	reflect.TypeFor[encoding.BinaryUnmarshaler](),
	reflect.TypeFor[encoding.TextUnmarshaler](),
}

// Fixed costs of the decoder's reflect-based paths, per occurrence.
const (
	// sliceHeaders covers the slice headers reflect allocates while the
	// decoder makes a slice and appends to it (three of 24 bytes), with
	// room to spare.
	sliceHeaders = 96
	// arrayStruct covers the error value the decoder allocates, and
	// drops, when a struct comes as an array.
	arrayStruct = 32
)

// maxWalkDepth bounds the walk's recursion; checkMsgpack allows at most
// MaxPayloadDepth levels of containers, and Go types nest only so deep.
const maxWalkDepth = 64

func (w *costWalker) add(n uint64) error {
	w.cost += n
	if w.cost > w.limit || w.cost < n {
		return errOverBudget
	}
	return nil
}

// product is n·size, or errOverBudget when that alone is over the limit
// (so neither it nor what is computed from it can overflow).
func (w *costWalker) product(n, size uint64) (uint64, error) {
	hi, lo := bits.Mul64(n, size)
	if hi != 0 || lo > w.limit {
		return 0, errOverBudget
	}
	return lo, nil
}

// allocSize is an upper bound of the heap block a request for n bytes
// takes: the size classes waste at most a quarter of a request, small
// objects come in 16-byte steps, and large ones in whole pages.
func allocSize(n uint64) uint64 {
	switch {
	case n == 0:
		return 0
	case n <= 16:
		return 16
	case n <= 128:
		return (n + 15) &^ 15
	case n <= 32<<10:
		return n + n/4
	}
	return (n + 8191) &^ 8191
}

// mapSize is an upper bound of what making a map of n entries of type t,
// and filling it, allocates: groups of eight slots (a control word and the
// slots) for n·8/7 slots rounded up to a power of two, plus the map header
// and, for large maps, the table directory. A map of more than 1024 slots
// is several tables, among which the entries fall by a hash seeded at
// random: a table that receives more than its share grows (to twice its
// size, or split in two) while the map fills, so such a map is counted
// three times over.
func mapSize(t reflect.Type, n uint64) uint64 {
	slot := uint64(mapSlot(t))
	slots := uint64(8)
	if n > 7 {
		slots = 1 << bits.Len64(n*8/7)
	}
	size := allocSize(slots/8*(8+8*slot)) + 128
	if slots > 1024 {
		size = 3*size + slots/1024*256
	}
	return size
}

// mapSlot is the bytes a map slot takes: key and value, aligned, or
// pointers to them when they are large.
func mapSlot(t reflect.Type) uintptr {
	k, v := t.Key(), t.Elem()
	ks, vs := k.Size(), v.Size()
	if ks > 128 {
		ks = 8
	}
	if vs > 128 {
		vs = 8
	}
	a := max(uintptr(k.Align()), uintptr(v.Align()))
	return (ks + vs + 2*a - 1) &^ (a - 1)
}

// code reads the type code and the length or count that follows it. kind
// is 'n' for nil, 's' for scalars (skip is its data length), 'b' for
// strings and binaries (n their length), 'a' for arrays and 'm' for maps
// (n their count).
func (w *costWalker) code() (kind byte, n uint64, err error) {
	var h mpHead
	ok := false
	if w.i < len(w.b) {
		h, ok = shortHead(w.b[w.i])
	}
	if !ok {
		if h, err = readLongHead(w.b, w.i); err != nil {
			return 0, 0, fmt.Errorf("%w: %w", err, errDecoderStops)
		}
	}
	w.i += h.size
	if h.n > uint64(len(w.b)-w.i) {
		return 0, 0, errCostTruncated
	}
	if h.kind == 's' {
		// Scalar data is read through the scratch buffer, which it
		// never grows past its first 64 bytes.
		w.i += int(h.n)
		return 's', 0, nil
	}
	return h.kind, h.n, nil
}

var errCostTruncated = fmt.Errorf("msgpack: truncated: %w", errDecoderStops)

// scratch accounts for a run of n bytes read through the decoder's
// scratch buffer, which grows (to a new array, appended to) when n is
// longer than any before.
func (w *costWalker) scratch(n uint64) error {
	if n <= w.buf {
		return nil
	}
	w.buf = n
	return w.add(2 * allocSize(n))
}

// take skips the n bytes of a string or binary's data.
func (w *costWalker) take(n uint64) {
	w.i += int(n)
}

// value walks one object decoded into a value of type t.
func (w *costWalker) value(t reflect.Type, depth int) error {
	if depth > maxWalkDepth {
		return errors.New("msgpack: nested too deep")
	}
	start := w.i
	kind, n, err := w.code()
	if err != nil {
		return err
	}
	switch t.Kind() {
	case reflect.Interface:
		w.i = start
		return w.dynamic(depth)
	case reflect.Pointer:
		if kind == 'n' {
			return nil
		}
		w.i = start
		if err := w.add(allocSize(uint64(t.Elem().Size()))); err != nil {
			return err
		}
		return w.value(t.Elem(), depth+1)
	case reflect.String:
		if kind == 'b' {
			w.take(n)
			if err := w.scratch(n); err != nil {
				return err
			}
			return w.add(allocSize(n))
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && kind == 'b' {
			w.take(n)
			return w.add(allocSize(n))
		}
		if kind == 'a' {
			// The elements are made, then appended to the empty
			// slice; and reflect puts each slice header it makes
			// on the way on the heap.
			size, err := w.product(n, uint64(t.Elem().Size()))
			if err != nil {
				return err
			}
			if err := w.add(2*allocSize(size) + sliceHeaders); err != nil {
				return err
			}
			for range n {
				if err := w.value(t.Elem(), depth+1); err != nil {
					return err
				}
			}
			return nil
		}
	case reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && kind == 'b' {
			w.take(n)
			return nil
		}
		if kind == 'a' {
			if n > uint64(t.Len()) {
				return fmt.Errorf("msgpack: %d elements for %v: %w", n, t, errDecoderStops)
			}
			for range n {
				if err := w.value(t.Elem(), depth+1); err != nil {
					return err
				}
			}
			return nil
		}
	case reflect.Map:
		if kind == 'm' {
			if err := w.add(mapSize(t, n)); err != nil {
				return err
			}
			// Each entry's key and value are allocated on their own
			// before they are stored, and stored apart from the
			// slots once larger than 128 bytes.
			each := uint64(0)
			for _, size := range []uint64{uint64(t.Key().Size()), uint64(t.Elem().Size())} {
				each += allocSize(size)
				if size > 128 {
					each += allocSize(size)
				}
			}
			for range n {
				if err := w.add(each); err != nil {
					return err
				}
				if err := w.value(t.Key(), depth+1); err != nil {
					return err
				}
				if err := w.value(t.Elem(), depth+1); err != nil {
					return err
				}
			}
			return nil
		}
	case reflect.Struct:
		return w.structValue(t, kind, n, depth)
	default:
		if kind == 's' {
			return nil
		}
	}
	if kind == 'n' {
		return nil
	}
	// Anything else the decoder refuses where it stands; what it
	// allocated before is counted.
	return fmt.Errorf("msgpack: cannot decode %c into %v: %w", kind, t, errDecoderStops)
}

// structValue walks a struct encoded as a map of field names (or, as the
// decoder also takes, as an array of every field in order).
func (w *costWalker) structValue(t reflect.Type, kind byte, n uint64, depth int) error {
	fields := w.structs[t]
	switch kind {
	case 'n':
		return nil
	case 'a':
		if n == 0 {
			return nil
		}
		if n != uint64(len(fields)) {
			return fmt.Errorf("msgpack: %d elements for the %d fields of %v: %w", n, len(fields), t, errDecoderStops)
		}
		// The decoder tries the code as a map first and allocates
		// the error it then ignores.
		if err := w.add(arrayStruct); err != nil {
			return err
		}
		for _, f := range fields {
			if err := w.value(f.typ, depth+1); err != nil {
				return err
			}
		}
		return nil
	case 'm':
	default:
		return fmt.Errorf("msgpack: cannot decode %c into %v: %w", kind, t, errDecoderStops)
	}
	// seen marks the fields already decoded: a field given twice would
	// decode into what its first occurrence allocated and grow it, and
	// no encoder writes one twice. At most 64 fields are tracked; a
	// struct with more is refused by fields.
	var seen uint64
	for range n {
		kk, kn, err := w.code()
		if err != nil {
			return err
		}
		if kk != 'b' {
			return fmt.Errorf("msgpack: field name of kind %c in %v: %w", kk, t, errDecoderStops)
		}
		name := w.b[w.i : w.i+int(kn)]
		w.take(kn)
		if err := w.scratch(kn); err != nil {
			return err
		}
		idx := -1
		for j, f := range fields {
			if string(name) == f.name {
				idx = j
				break
			}
		}
		if idx < 0 {
			if err := w.skip(depth + 1); err != nil {
				return err
			}
			continue
		}
		if seen&(1<<idx) != 0 {
			return fmt.Errorf("msgpack: field %s of %v given twice", fields[idx].name, t)
		}
		seen |= 1 << idx
		if err := w.value(fields[idx].typ, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// structFields lists the fields the decoder knows t by, as it names them:
// exported fields under their msgpack tag name or their own.
func structFields(t reflect.Type) ([]structField, error) {
	var fs []structField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous {
			return nil, fmt.Errorf("migration: state type %v embeds %s: the decode bound does not follow inlined fields", t, f.Name)
		}
		if !f.IsExported() {
			continue
		}
		if opts != "" && opts != "omitempty" {
			return nil, fmt.Errorf("migration: state type %v: field %s has msgpack options %q the decode bound does not follow", t, f.Name, opts)
		}
		if name == "" {
			name = f.Name
		}
		fs = append(fs, structField{name: name, typ: f.Type})
	}
	if len(fs) > 64 {
		return nil, fmt.Errorf("migration: state type %v has %d fields, at most 64", t, len(fs))
	}
	return fs, nil
}

// skip walks an object the decoder skips (an unknown field's value): only
// its strings and binaries pass through the scratch buffer.
func (w *costWalker) skip(depth int) error {
	if depth > maxWalkDepth {
		return errors.New("msgpack: nested too deep")
	}
	kind, n, err := w.code()
	if err != nil {
		return err
	}
	switch kind {
	case 'b':
		w.take(n)
		return w.scratch(n)
	case 'a', 'm':
		if kind == 'm' {
			n *= 2
		}
		for range n {
			if err := w.skip(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// dynamic walks an object decoded into an interface value: scalars are
// boxed, strings and binaries copied and boxed, arrays become []any and
// maps map[string]any.
func (w *costWalker) dynamic(depth int) error {
	if depth > maxWalkDepth {
		return errors.New("msgpack: nested too deep")
	}
	kind, n, err := w.code()
	if err != nil {
		return err
	}
	const box = 32 // an interface's boxed value: at most a slice header, rounded up
	switch kind {
	case 'n':
		return nil
	case 's':
		return w.add(16)
	case 'b':
		w.take(n)
		if err := w.scratch(n); err != nil {
			return err
		}
		return w.add(allocSize(n) + box)
	case 'a':
		if err := w.add(allocSize(16*n) + box); err != nil {
			return err
		}
		for range n {
			if err := w.dynamic(depth + 1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := w.add(mapSize(reflect.TypeFor[map[string]any](), n) + box); err != nil {
		return err
	}
	for range n {
		kk, kn, err := w.code()
		if err != nil {
			return err
		}
		if kk != 'b' {
			return fmt.Errorf("msgpack: map key of kind %c: %w", kk, errDecoderStops)
		}
		w.take(kn)
		if err := w.scratch(kn); err != nil {
			return err
		}
		if err := w.add(allocSize(kn)); err != nil {
			return err
		}
		if err := w.dynamic(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
