package migration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"
)

// SectionWriter collects the sections a device emits while saving. A
// device calls Put (or PutRaw) once per section; the writer frames each one
// and refuses duplicates, bad names and oversized payloads.
type SectionWriter struct {
	buf     []byte
	lim     Limits
	names   []string
	scratch bytes.Buffer
	enc     *msgpack.Encoder
}

// NewSectionWriter returns a writer that appends to dst.
func NewSectionWriter(dst []byte, lim Limits) *SectionWriter {
	w := &SectionWriter{buf: dst, lim: lim.withDefaults()}
	w.enc = msgpack.NewEncoder(&w.scratch)
	w.setupEncoder()
	return w
}

// setupEncoder makes the encoding canonical: sorted map keys so that the
// same state always gives the same bytes (save → load → save is
// byte-identical), and compact integers so that small registers stay small.
func (w *SectionWriter) setupEncoder() {
	w.enc.SetSortMapKeys(true)
	w.enc.UseCompactInts(true)
}

// Put encodes v with msgpack and appends it as section name. Structs are
// encoded as maps keyed by field name (or msgpack tag), which is what lets
// an optional section gain fields later.
//
// Map keys come out sorted only for map[string]string, map[string]bool and
// map[string]any (the msgpack encoder's limit): a device that wants
// byte-identical saves uses those, or slices, for keyed data.
func (w *SectionWriter) Put(name string, mandatory bool, v any) error {
	w.scratch.Reset()
	w.enc.Reset(&w.scratch)
	w.setupEncoder()
	if err := w.enc.Encode(v); err != nil {
		return fmt.Errorf("migration: encoding section %s: %w", name, err)
	}
	return w.PutRaw(name, mandatory, w.scratch.Bytes())
}

// PutRaw appends a section whose payload is already msgpack-encoded.
func (w *SectionWriter) PutRaw(name string, mandatory bool, payload []byte) error {
	if !validName(name, w.lim.MaxNameLen) {
		return fmt.Errorf("migration: invalid section name %q", name)
	}
	for _, n := range w.names {
		if n == name {
			return fmt.Errorf("migration: section %s written twice", name)
		}
	}
	if len(w.names) >= w.lim.MaxSections {
		return fmt.Errorf("migration: more than %d sections", w.lim.MaxSections)
	}
	if len(payload) > w.lim.MaxSectionSize {
		return fmt.Errorf("migration: section %s: %d bytes exceeds the limit of %d", name, len(payload), w.lim.MaxSectionSize)
	}
	if err := checkMsgpack(payload, w.lim.MaxPayloadDepth); err != nil {
		return fmt.Errorf("migration: section %s: %w", name, err)
	}
	w.names = append(w.names, name)
	w.buf = appendSection(w.buf, name, mandatory, payload)
	return nil
}

// Bytes returns everything written so far, including what dst held.
func (w *SectionWriter) Bytes() []byte { return w.buf }

// Section is one decoded-frame section handed to a Loader.
type Section struct {
	Name      string
	Mandatory bool
	Payload   []byte // one well-formed msgpack object, already bounds-checked
}

// Validator is implemented by state structs that check their own fields;
// Section.Decode calls it after decoding.
type Validator interface {
	Validate() error
}

// Decode decodes the section's payload into v (a pointer to a plain state
// struct) and, when v implements Validator, validates it.
//
// Unknown map keys are refused in a mandatory section and ignored in an
// optional one: a mandatory section's layout is fixed by the model and its
// parameters, so a field this build does not know means the source runs a
// layout we cannot honour; an optional section is extra data the
// destination may drop, and that holds for its fields too.
//
// Decoding allocates at most DecodeMultiple times the payload plus
// DecodeSlack when v starts zero, as a Loader's state does: a payload that
// would make the decoder allocate more (a million empty elements, each a
// slice header; a map of many short keys, each an entry) is refused before
// anything is decoded. A field given twice is refused too, since it would
// decode into, and grow, what its first occurrence allocated.
func (s Section) Decode(v any) error {
	limit := DecodeMultiple*uint64(len(s.Payload)) + DecodeSlack
	if cost, err := decodeCost(s.Payload, reflect.TypeOf(v), limit); errors.Is(err, errOverBudget) {
		return fmt.Errorf("section %s: decoding its %d bytes would allocate %d bytes or more, over the bound of %d", s.Name, len(s.Payload), cost, limit)
	} else if err != nil {
		return fmt.Errorf("section %s: %w", s.Name, err)
	}
	d := msgpack.NewDecoder(bytes.NewReader(s.Payload))
	d.DisallowUnknownFields(s.Mandatory)
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("section %s: %w", s.Name, err)
	}
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			return fmt.Errorf("section %s: %w", s.Name, err)
		}
	}
	return nil
}

// Check returns an error naming field when v is outside [lo, hi]; state
// structs use it in their Validate methods.
func Check(field string, v, lo, hi uint64) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s = %d is outside [%d, %d]", field, v, lo, hi)
	}
	return nil
}

// checkMsgpack walks b as exactly one msgpack object and checks that every
// length it announces fits in what is left of b, that containers nest at
// most maxDepth deep, and that no byte follows the object.
//
// The msgpack decoder sizes slices and maps from the lengths in its input
// before reading the elements, so a 5-byte array header claiming four
// billion elements would make it allocate gigabytes. Every element takes at
// least one byte, so once each announced count is known to be no larger
// than the bytes left, what the decoder allocates is proportional to the
// payload; Section.Decode then bounds the proportion (budget.go), since an
// element of one byte can still cost dozens.
func checkMsgpack(b []byte, maxDepth int) error {
	// pending[d] counts the objects still expected at depth d.
	var stack [64]int
	if maxDepth > len(stack)-1 {
		maxDepth = len(stack) - 1
	}
	depth := 0
	stack[0] = 1
	i := 0
	for {
		for depth > 0 && stack[depth] == 0 {
			depth--
		}
		if stack[depth] == 0 {
			break
		}
		stack[depth]--
		if i >= len(b) {
			return fmt.Errorf("msgpack: truncated at byte %d", i)
		}
		c := b[i]
		i++
		var skip uint64 // bytes of scalar data after the code
		var elems uint64
		container := false
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			elems, container = 2*uint64(c&0x0f), true
		case c >= 0x90 && c <= 0x9f:
			elems, container = uint64(c&0x0f), true
		case c >= 0xa0 && c <= 0xbf:
			skip = uint64(c & 0x1f)
		default:
			var n uint64
			var w int
			switch c {
			case 0xcc, 0xd0:
				skip = 1
			case 0xcd, 0xd1:
				skip = 2
			case 0xca, 0xce, 0xd2:
				skip = 4
			case 0xcb, 0xcf, 0xd3:
				skip = 8
			case 0xc4, 0xd9: // bin8, str8
				w = 1
			case 0xc5, 0xda, 0xdc, 0xde: // bin16, str16, array16, map16
				w = 2
			case 0xc6, 0xdb, 0xdd, 0xdf: // bin32, str32, array32, map32
				w = 4
			default:
				// 0xc1 is never used; extension types carry
				// application-defined data that no state section uses.
				return fmt.Errorf("msgpack: unsupported type code %#02x at byte %d", c, i-1)
			}
			if w > 0 {
				if len(b)-i < w {
					return fmt.Errorf("msgpack: truncated length at byte %d", i)
				}
				switch w {
				case 1:
					n = uint64(b[i])
				case 2:
					n = uint64(binary.BigEndian.Uint16(b[i:]))
				case 4:
					n = uint64(binary.BigEndian.Uint32(b[i:]))
				}
				i += w
				switch c {
				case 0xdc, 0xdd:
					elems, container = n, true
				case 0xde, 0xdf:
					elems, container = 2*n, true
				default:
					skip = n
				}
			}
		}
		left := uint64(len(b) - i)
		if skip > left {
			return fmt.Errorf("msgpack: %d bytes announced at byte %d, %d left", skip, i, left)
		}
		i += int(skip)
		if container && elems > 0 {
			if elems > left {
				return fmt.Errorf("msgpack: %d elements announced at byte %d, only %d bytes left", elems, i, left)
			}
			if depth+1 > maxDepth {
				return fmt.Errorf("msgpack: nesting deeper than %d", maxDepth)
			}
			depth++
			if elems > math.MaxInt32 {
				return fmt.Errorf("msgpack: %d elements", elems)
			}
			stack[depth] = int(elems)
		}
	}
	if i != len(b) {
		return fmt.Errorf("msgpack: %d stray bytes after the object", len(b)-i)
	}
	return nil
}
