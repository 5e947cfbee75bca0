package e1000e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"e1000e-vfu/migration"
)

// The msgpack encoder sorts the keys of map[string]string, map[string]bool
// and map[string]any only; other maps (map[string]uint32, map[uint8]uint16,
// ...) come out in Go's random map order, so the same state would not
// always give the same bytes. putCanonical re-emits every map of a payload
// with its entries sorted by their encoded keys.

const canonMaxDepth = 32

// putCanonical encodes v and writes it as a section with sorted map keys.
func putCanonical(w *migration.SectionWriter, name string, mandatory bool, v any) error {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("e1000e: encoding section %s: %w", name, err)
	}
	out, end, err := canonAppend(nil, buf.Bytes(), 0, 0)
	if err != nil {
		return fmt.Errorf("e1000e: section %s: %w", name, err)
	}
	if end != buf.Len() {
		return fmt.Errorf("e1000e: section %s: %d stray bytes", name, buf.Len()-end)
	}
	return w.PutRaw(name, mandatory, out)
}

var errCanonTruncated = errors.New("msgpack: truncated")

// canonAppend appends the object at b[i:] with its maps sorted, and returns
// the index after the object.
func canonAppend(dst, b []byte, i, depth int) ([]byte, int, error) {
	if depth > canonMaxDepth {
		return dst, 0, errors.New("msgpack: nested too deep")
	}
	if i >= len(b) {
		return dst, 0, errCanonTruncated
	}
	c := b[i]
	hdr, count, isMap, isArr, skip := 1, 0, false, false, 0
	u := func(w int) (int, error) {
		if i+1+w > len(b) {
			return 0, errCanonTruncated
		}
		switch w {
		case 1:
			return int(b[i+1]), nil
		case 2:
			return int(binary.BigEndian.Uint16(b[i+1:])), nil
		}
		return int(binary.BigEndian.Uint32(b[i+1:])), nil
	}
	var err error
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
	case c >= 0x80 && c <= 0x8f:
		count, isMap = int(c&0x0f), true
	case c >= 0x90 && c <= 0x9f:
		count, isArr = int(c&0x0f), true
	case c >= 0xa0 && c <= 0xbf:
		skip = int(c & 0x1f)
	case c == 0xcc, c == 0xd0:
		skip = 1
	case c == 0xcd, c == 0xd1:
		skip = 2
	case c == 0xca, c == 0xce, c == 0xd2:
		skip = 4
	case c == 0xcb, c == 0xcf, c == 0xd3:
		skip = 8
	case c == 0xc4, c == 0xd9:
		hdr = 2
		skip, err = u(1)
	case c == 0xc5, c == 0xda:
		hdr = 3
		skip, err = u(2)
	case c == 0xc6, c == 0xdb:
		hdr = 5
		skip, err = u(4)
	case c == 0xdc:
		hdr, isArr = 3, true
		count, err = u(2)
	case c == 0xdd:
		hdr, isArr = 5, true
		count, err = u(4)
	case c == 0xde:
		hdr, isMap = 3, true
		count, err = u(2)
	case c == 0xdf:
		hdr, isMap = 5, true
		count, err = u(4)
	default:
		return dst, 0, fmt.Errorf("msgpack: type code %#02x", c)
	}
	if err != nil {
		return dst, 0, err
	}
	if i+hdr+skip > len(b) || count > len(b) {
		return dst, 0, errCanonTruncated
	}
	dst = append(dst, b[i:i+hdr+skip]...)
	i += hdr + skip
	switch {
	case isArr:
		for k := 0; k < count; k++ {
			if dst, i, err = canonAppend(dst, b, i, depth+1); err != nil {
				return dst, 0, err
			}
		}
	case isMap:
		type entry struct{ key, kv []byte }
		entries := make([]entry, 0, count)
		for k := 0; k < count; k++ {
			var kv []byte
			if kv, i, err = canonAppend(nil, b, i, depth+1); err != nil {
				return dst, 0, err
			}
			klen := len(kv)
			if kv, i, err = canonAppend(kv, b, i, depth+1); err != nil {
				return dst, 0, err
			}
			entries = append(entries, entry{key: kv[:klen], kv: kv})
		}
		slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.key, b.key) })
		for _, e := range entries {
			dst = append(dst, e.kv...)
		}
	}
	return dst, i, nil
}
