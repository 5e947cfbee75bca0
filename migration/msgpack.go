package migration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// A msgpack object starts with a head: a type code and, for the longer
// forms, a length or count. readHead is the one reader of heads in the
// package: the payload check (checkMsgpack), the decoding budget's walk
// and the canonical encoding all take an object's shape from it.

// mpHead is the head of one msgpack object.
type mpHead struct {
	// kind is 'n' for nil, 's' for scalars (booleans and numbers), 'b'
	// for strings and binaries, 'a' for arrays and 'm' for maps.
	kind byte
	// size is the bytes of the type code and its length field.
	size int
	// n is the data bytes after the head ('s', 'b'), the elements of an
	// array, or the entries of a map (each a key and a value).
	n uint64
}

// readHead reads the head of the object at b[i:]. It checks that the head
// itself lies in b, not that what it announces does. Extension types
// (application-defined data that no state section uses) and the unused
// code 0xc1 are refused.
func readHead(b []byte, i int) (mpHead, error) {
	if i < len(b) {
		if h, ok := shortHead(b[i]); ok {
			return h, nil
		}
	}
	return readLongHead(b, i)
}

// shortHead reads a one-byte head: a small integer, or a short string,
// map or array, most of what a state holds. ok is false for the other
// codes. It inlines, so the walks over a payload try it first and call
// readHead only for the rest.
func shortHead(c byte) (h mpHead, ok bool) {
	switch {
	case c <= 0x7f, c >= 0xe0:
		return mpHead{kind: 's', size: 1}, true
	case c <= 0xbf: // fixmap, fixarray, fixstr
		return mpHead{kind: "mabb"[(c-0x80)>>4], size: 1, n: uint64(c & (0x0f | (c>>5&1)<<4))}, true
	}
	return mpHead{}, false
}

// readLongHead is readHead for the codes from 0xc0 to 0xdf, and for an
// object cut off before its head.
func readLongHead(b []byte, i int) (mpHead, error) {
	if i >= len(b) {
		return mpHead{}, fmt.Errorf("msgpack: truncated at byte %d", i)
	}
	c := b[i]
	h := mpHead{size: 1}
	width := 0
	switch c { // a value switch: a jump table
	case 0xc2, 0xc3:
		h.kind = 's'
	case 0xc0:
		h.kind = 'n'
	case 0xcc, 0xd0:
		h.kind, h.n = 's', 1
	case 0xcd, 0xd1:
		h.kind, h.n = 's', 2
	case 0xca, 0xce, 0xd2:
		h.kind, h.n = 's', 4
	case 0xcb, 0xcf, 0xd3:
		h.kind, h.n = 's', 8
	case 0xc4, 0xd9: // bin8, str8
		h.kind, width = 'b', 1
	case 0xc5, 0xda: // bin16, str16
		h.kind, width = 'b', 2
	case 0xc6, 0xdb: // bin32, str32
		h.kind, width = 'b', 4
	case 0xdc:
		h.kind, width = 'a', 2
	case 0xdd:
		h.kind, width = 'a', 4
	case 0xde:
		h.kind, width = 'm', 2
	case 0xdf:
		h.kind, width = 'm', 4
	default:
		return mpHead{}, fmt.Errorf("msgpack: unsupported type code %#02x at byte %d", c, i)
	}
	if width == 0 {
		return h, nil
	}
	if len(b)-i-1 < width {
		return mpHead{}, fmt.Errorf("msgpack: truncated length at byte %d", i+1)
	}
	switch width {
	case 1:
		h.n = uint64(b[i+1])
	case 2:
		h.n = uint64(binary.BigEndian.Uint16(b[i+1:]))
	case 4:
		h.n = uint64(binary.BigEndian.Uint32(b[i+1:]))
	}
	h.size += width
	return h, nil
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
		var h mpHead
		ok := false
		if i < len(b) {
			h, ok = shortHead(b[i])
		}
		if !ok {
			var err error
			if h, err = readLongHead(b, i); err != nil {
				return err
			}
		}
		i += h.size
		left := uint64(len(b) - i)
		var elems uint64 // objects inside a container
		switch h.kind {
		case 's', 'b':
			if h.n > left {
				return fmt.Errorf("msgpack: %d bytes announced at byte %d, %d left", h.n, i, left)
			}
			i += int(h.n)
		case 'a':
			elems = h.n
		case 'm':
			elems = 2 * h.n
		}
		if elems > 0 {
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

// maxCanonicalDepth is the deepest nesting AppendCanonical takes: the most
// checkMsgpack can follow, above any Limits.MaxPayloadDepth a stream uses.
const maxCanonicalDepth = 63

// AppendCanonical appends to dst the msgpack object b with the entries of
// every map, at every depth, in the order of their encoded keys compared
// byte by byte; everything else is copied as it is. b must be exactly one
// object, nested at most 63 deep.
//
// This is the canonical form of a payload: the same state gives the same
// bytes whatever Go types hold it. The msgpack encoder sorts the keys of
// map[string]string, map[string]bool and map[string]any only, and emits
// other maps (map[string]uint32, map[uint8]uint16, ...) in Go's random map
// order; a struct's fields come in declaration order, and here in key
// order too, so reordering a struct's fields does not change its bytes.
// Decoding is unaffected: a decoder does not care about map order.
func AppendCanonical(dst, b []byte) ([]byte, error) {
	if err := checkMsgpack(b, maxCanonicalDepth); err != nil {
		return dst, err
	}
	c := canonicaliser{in: b, out: dst}
	c.object()
	return c.out, nil
}

// canonicaliser copies a checked object, sorting each map once its
// entries are out.
type canonicaliser struct {
	in  []byte
	i   int
	out []byte
	// entries is a stack: the entries of each map being copied, above
	// those of the maps around it.
	entries []mapEntry
	tmp     []byte
}

// mapEntry is where one entry of a map lies in the output: its key from
// start to keyEnd, its value from keyEnd to end.
type mapEntry struct{ start, keyEnd, end int }

// object copies the object at c.in[c.i:], which checkMsgpack accepted.
func (c *canonicaliser) object() {
	h, _ := readHead(c.in, c.i)
	end := c.i + h.size
	if h.kind == 's' || h.kind == 'b' {
		end += int(h.n)
	}
	c.out = append(c.out, c.in[c.i:end]...)
	c.i = end
	switch h.kind {
	case 'a':
		for range h.n {
			c.object()
		}
	case 'm':
		c.mapEntries(int(h.n))
	}
}

// mapEntries copies n map entries, each canonical already, then puts them
// in the order of their keys. Sorting is stable, so a key given twice
// keeps its order (a decoder refuses or overwrites it either way).
func (c *canonicaliser) mapEntries(n int) {
	base, start := len(c.entries), len(c.out)
	for range n {
		e := mapEntry{start: len(c.out)}
		c.object()
		e.keyEnd = len(c.out)
		c.object()
		e.end = len(c.out)
		c.entries = append(c.entries, e)
	}
	ents := c.entries[base:]
	byKey := func(a, b mapEntry) int {
		return bytes.Compare(c.out[a.start:a.keyEnd], c.out[b.start:b.keyEnd])
	}
	if !slices.IsSortedFunc(ents, byKey) {
		slices.SortStableFunc(ents, byKey)
		c.tmp = append(c.tmp[:0], c.out[start:]...)
		o := start
		for _, e := range ents {
			o += copy(c.out[o:], c.tmp[e.start-start:e.end-start])
		}
	}
	c.entries = c.entries[:base]
}
