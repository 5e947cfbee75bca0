// Package migration moves a device's state between two instances of it: the
// sectioned state stream (FORMAT.md), the two-phase loader that treats the
// stream as hostile input, the vfio migration v2 state machine, and the
// legacy v1 migration region.
//
// A device takes part by implementing Stateful; Machine turns any Stateful
// device into a device.Migratable, and V1Region serves the same device
// through the v1 migration region.
package migration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Magic starts every state stream. Like PNG's signature it has a high-bit
// byte and a CR LF pair, so a stream mangled by a text-mode transfer or cut
// to 7 bits fails at the first bytes instead of deep inside a section.
var Magic = [8]byte{0x89, 'D', 'S', 'T', '\r', '\n', 0x1a, '\n'}

// FormatVersion is the stream format this package writes. Readers accept
// every version in [1, FormatVersion]; the format version is about the
// envelope only: what is inside the sections is governed by the model and
// its parameters.
const FormatVersion = 1

// Record tags that follow the header.
const (
	tagSection = 'S'
	tagEnd     = 'E'
)

// Section flags.
const (
	flagMandatory = 0x01
	flagsKnown    = flagMandatory
)

const headerFixedLen = 16 // magic, version, reserved, body length

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Param is one configuration parameter as name=value text, as in the
// device model's parameter list (migration-compat rule 6).
type Param struct {
	Name, Value string
}

// Header is the decoded stream header.
type Header struct {
	Version uint16
	Model   string
	Params  []Param
}

// Param returns the value of the named parameter and whether the header
// lists it. A parameter absent from the list is at its off value.
func (h Header) Param(name string) (string, bool) {
	for _, p := range h.Params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// Limits bound what a reader accepts and a writer produces. The zero value
// of a field means the default.
type Limits struct {
	MaxStreamSize   int // whole stream, header to checksum
	MaxSections     int
	MaxSectionSize  int // one section's payload
	MaxParams       int
	MaxNameLen      int // model, parameter and section names
	MaxValueLen     int // parameter values
	MaxPayloadDepth int // msgpack nesting inside a section
}

// DefaultLimits are generous for a NIC (whose state is a few KiB) and small
// enough that a hostile stream cannot make the process allocate much.
var defaultLimits = Limits{
	MaxStreamSize:   16 << 20,
	MaxSections:     256,
	MaxSectionSize:  4 << 20,
	MaxParams:       64,
	MaxNameLen:      64,
	MaxValueLen:     256,
	MaxPayloadDepth: 32,
}

// DefaultLimits returns the limits used when none are given.
func DefaultLimits() Limits { return defaultLimits }

func (l Limits) withDefaults() Limits {
	d := defaultLimits
	if l.MaxStreamSize > 0 {
		d.MaxStreamSize = l.MaxStreamSize
	}
	if l.MaxSections > 0 {
		d.MaxSections = l.MaxSections
	}
	if l.MaxSectionSize > 0 {
		d.MaxSectionSize = l.MaxSectionSize
	}
	if l.MaxParams > 0 {
		d.MaxParams = l.MaxParams
	}
	if l.MaxNameLen > 0 {
		d.MaxNameLen = min(l.MaxNameLen, 255)
	}
	if l.MaxValueLen > 0 {
		d.MaxValueLen = min(l.MaxValueLen, 65535)
	}
	if l.MaxPayloadDepth > 0 {
		d.MaxPayloadDepth = l.MaxPayloadDepth
	}
	return d
}

// ErrShort reports that more bytes are needed to decode the header; it is
// not an error when a stream is still arriving.
var ErrShort = errors.New("migration: stream too short")

// validName accepts the names this format uses for models' parameters and
// sections: lower-case letters, digits and '-', '.', '/', '_' (a model name
// is a domain followed by path components). Restricting the alphabet keeps
// log lines and error messages free of control characters from the input.
func validName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '/', c == '_':
		default:
			return false
		}
	}
	return true
}

// validValue accepts printable ASCII only, for the same reason.
func validValue(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// AppendHeader appends the encoded header for model and params to dst.
func AppendHeader(dst []byte, model string, params []Param, lim Limits) ([]byte, error) {
	lim = lim.withDefaults()
	if !validName(model, lim.MaxNameLen) {
		return dst, fmt.Errorf("migration: invalid model name %q", model)
	}
	if len(params) > lim.MaxParams {
		return dst, fmt.Errorf("migration: %d parameters, limit %d", len(params), lim.MaxParams)
	}
	start := len(dst)
	dst = append(dst, Magic[:]...)
	dst = binary.LittleEndian.AppendUint16(dst, FormatVersion)
	dst = binary.LittleEndian.AppendUint16(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // body length, patched below
	body := len(dst)
	dst = append(dst, byte(len(model)))
	dst = append(dst, model...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(params)))
	for _, p := range params {
		if !validName(p.Name, lim.MaxNameLen) {
			return dst[:start], fmt.Errorf("migration: invalid parameter name %q", p.Name)
		}
		if !validValue(p.Value, lim.MaxValueLen) {
			return dst[:start], fmt.Errorf("migration: invalid value for parameter %s", p.Name)
		}
		dst = append(dst, byte(len(p.Name)))
		dst = append(dst, p.Name...)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(p.Value)))
		dst = append(dst, p.Value...)
	}
	binary.LittleEndian.PutUint32(dst[start+12:], uint32(len(dst)-body))
	return dst, nil
}

// ParseHeader decodes the header at the start of b and returns it with its
// encoded length. It returns ErrShort when b ends before the header does,
// so a receiver can check a header as soon as it has arrived.
func ParseHeader(b []byte, lim Limits) (Header, int, error) {
	lim = lim.withDefaults()
	if len(b) < headerFixedLen {
		if len(b) > 0 && !bytesPrefix(b, Magic[:]) {
			return Header{}, 0, errors.New("migration: not a state stream (bad magic)")
		}
		return Header{}, 0, ErrShort
	}
	if [8]byte(b[:8]) != Magic {
		return Header{}, 0, errors.New("migration: not a state stream (bad magic)")
	}
	var h Header
	h.Version = binary.LittleEndian.Uint16(b[8:])
	if h.Version == 0 || h.Version > FormatVersion {
		return Header{}, 0, fmt.Errorf("migration: stream format version %d, this build reads 1 to %d", h.Version, FormatVersion)
	}
	if r := binary.LittleEndian.Uint16(b[10:]); r != 0 {
		return Header{}, 0, fmt.Errorf("migration: reserved header field is %#x, want 0", r)
	}
	bodyLen := binary.LittleEndian.Uint32(b[12:])
	// The largest body the limits allow: model, count, and every parameter
	// at its longest.
	maxBody := 1 + lim.MaxNameLen + 2 + lim.MaxParams*(1+lim.MaxNameLen+2+lim.MaxValueLen)
	if uint64(bodyLen) > uint64(maxBody) {
		return Header{}, 0, fmt.Errorf("migration: header body of %d bytes exceeds the limit of %d", bodyLen, maxBody)
	}
	total := headerFixedLen + int(bodyLen)
	if len(b) < total {
		return Header{}, 0, ErrShort
	}
	r := reader{b: b[headerFixedLen:total]}
	model, ok := r.str8()
	if !ok || !validName(model, lim.MaxNameLen) {
		return Header{}, 0, errors.New("migration: header: invalid model name")
	}
	h.Model = model
	n, ok := r.u16()
	if !ok {
		return Header{}, 0, errors.New("migration: header: truncated parameter count")
	}
	if int(n) > lim.MaxParams {
		return Header{}, 0, fmt.Errorf("migration: header lists %d parameters, limit %d", n, lim.MaxParams)
	}
	h.Params = make([]Param, 0, n)
	for i := 0; i < int(n); i++ {
		name, ok := r.str8()
		if !ok || !validName(name, lim.MaxNameLen) {
			return Header{}, 0, fmt.Errorf("migration: header: invalid name of parameter %d", i)
		}
		vlen, ok := r.u16()
		if !ok {
			return Header{}, 0, fmt.Errorf("migration: header: truncated parameter %s", name)
		}
		val, ok := r.take(int(vlen))
		if !ok || !validValue(string(val), lim.MaxValueLen) {
			return Header{}, 0, fmt.Errorf("migration: header: invalid value of parameter %s", name)
		}
		for _, p := range h.Params {
			if p.Name == name {
				return Header{}, 0, fmt.Errorf("migration: header lists parameter %s twice", name)
			}
		}
		h.Params = append(h.Params, Param{Name: name, Value: string(val)})
	}
	if len(r.b) != 0 {
		return Header{}, 0, fmt.Errorf("migration: header: %d stray bytes after the parameters", len(r.b))
	}
	return h, total, nil
}

func bytesPrefix(b, prefix []byte) bool {
	n := min(len(b), len(prefix))
	return string(b[:n]) == string(prefix[:n])
}

// appendSection appends one section record.
func appendSection(dst []byte, name string, mandatory bool, payload []byte) []byte {
	var flags byte
	if mandatory {
		flags |= flagMandatory
	}
	dst = append(dst, tagSection, flags, byte(len(name)))
	dst = append(dst, name...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// AppendEnd appends the end marker and the CRC32C of everything in stream,
// which must hold the whole stream from its first magic byte.
func AppendEnd(stream []byte) []byte {
	stream = append(stream, tagEnd)
	return binary.LittleEndian.AppendUint32(stream, crc32.Checksum(stream, castagnoli))
}

// rawSection is a section as framed in the stream, before decoding.
type rawSection struct {
	name      string
	mandatory bool
	payload   []byte
}

// splitStream checks the framing of a whole stream after its header: record
// tags, flags, names, lengths, the end marker and the checksum. It returns
// the sections in stream order without looking inside them.
func splitStream(b []byte, hdrLen int, lim Limits) ([]rawSection, error) {
	if len(b) > lim.MaxStreamSize {
		return nil, fmt.Errorf("migration: stream of %d bytes exceeds the limit of %d", len(b), lim.MaxStreamSize)
	}
	r := reader{b: b[hdrLen:]}
	var secs []rawSection
	for {
		tag, ok := r.u8()
		if !ok {
			return nil, errors.New("migration: stream truncated before its end marker")
		}
		switch tag {
		case tagEnd:
			end := len(b) - len(r.b)
			want, ok := r.u32()
			if !ok {
				return nil, errors.New("migration: stream truncated in its checksum")
			}
			if len(r.b) != 0 {
				return nil, fmt.Errorf("migration: %d stray bytes after the checksum", len(r.b))
			}
			if got := crc32.Checksum(b[:end], castagnoli); got != want {
				return nil, fmt.Errorf("migration: checksum mismatch (stream says %#08x, data gives %#08x)", want, got)
			}
			return secs, nil
		case tagSection:
		default:
			return nil, fmt.Errorf("migration: unknown record tag %#02x at offset %d", tag, len(b)-len(r.b)-1)
		}
		if len(secs) >= lim.MaxSections {
			return nil, fmt.Errorf("migration: more than %d sections", lim.MaxSections)
		}
		flags, ok := r.u8()
		if !ok {
			return nil, errors.New("migration: truncated section record")
		}
		name, ok := r.str8()
		if !ok {
			return nil, errors.New("migration: truncated section name")
		}
		if !validName(name, lim.MaxNameLen) {
			return nil, fmt.Errorf("migration: invalid section name %q", name)
		}
		if flags&^flagsKnown != 0 {
			return nil, fmt.Errorf("migration: section %s has unknown flags %#02x", name, flags)
		}
		n, ok := r.u32()
		if !ok {
			return nil, fmt.Errorf("migration: section %s: truncated length", name)
		}
		if uint64(n) > uint64(lim.MaxSectionSize) {
			return nil, fmt.Errorf("migration: section %s: %d bytes exceeds the limit of %d", name, n, lim.MaxSectionSize)
		}
		payload, ok := r.take(int(n))
		if !ok {
			return nil, fmt.Errorf("migration: section %s: truncated payload (%d bytes announced, %d left)", name, n, len(r.b))
		}
		for _, s := range secs {
			if s.name == name {
				return nil, fmt.Errorf("migration: section %s appears twice", name)
			}
		}
		secs = append(secs, rawSection{name: name, mandatory: flags&flagMandatory != 0, payload: payload})
	}
}

// reader is a bounds-checked cursor over a byte slice.
type reader struct{ b []byte }

func (r *reader) take(n int) ([]byte, bool) {
	if n < 0 || n > len(r.b) {
		return nil, false
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, true
}

func (r *reader) u8() (byte, bool) {
	v, ok := r.take(1)
	if !ok {
		return 0, false
	}
	return v[0], true
}

func (r *reader) u16() (uint16, bool) {
	v, ok := r.take(2)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint16(v), true
}

func (r *reader) u32() (uint32, bool) {
	v, ok := r.take(4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(v), true
}

func (r *reader) str8() (string, bool) {
	n, ok := r.u8()
	if !ok {
		return "", false
	}
	v, ok := r.take(int(n))
	if !ok {
		return "", false
	}
	return string(v), true
}

// Split checks a whole stream's header, framing, limits and checksum and
// returns the header and the sections in stream order, without decoding
// any payload. Tools and conformance tests use it to inspect or rebuild
// streams.
func Split(b []byte, lim Limits) (Header, []Section, error) {
	lim = lim.withDefaults()
	h, n, err := ParseHeader(b, lim)
	if err == ErrShort {
		return Header{}, nil, errors.New("migration: stream truncated in its header")
	}
	if err != nil {
		return Header{}, nil, err
	}
	raw, err := splitStream(b, n, lim)
	if err != nil {
		return Header{}, nil, err
	}
	secs := make([]Section, len(raw))
	for i, s := range raw {
		secs[i] = Section{Name: s.name, Mandatory: s.mandatory, Payload: s.payload}
	}
	return h, secs, nil
}

// Assemble builds a whole stream from a header and sections; the payloads
// are framed as they are, so a test can build streams a device never
// would.
func Assemble(h Header, secs []Section, lim Limits) ([]byte, error) {
	lim = lim.withDefaults()
	b, err := AppendHeader(nil, h.Model, h.Params, lim)
	if err != nil {
		return nil, err
	}
	for _, s := range secs {
		if !validName(s.Name, lim.MaxNameLen) {
			return nil, fmt.Errorf("migration: invalid section name %q", s.Name)
		}
		if len(s.Payload) > lim.MaxSectionSize {
			return nil, fmt.Errorf("migration: section %s: %d bytes exceeds the limit of %d", s.Name, len(s.Payload), lim.MaxSectionSize)
		}
		b = appendSection(b, s.Name, s.Mandatory, s.Payload)
	}
	return AppendEnd(b), nil
}
