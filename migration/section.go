package migration

import (
	"bytes"
	"errors"
	"fmt"
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
	canon   []byte // PutCanonical's payload, reused
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
// byte-identical saves uses those, or slices, for keyed data, or
// PutCanonical.
func (w *SectionWriter) Put(name string, mandatory bool, v any) error {
	if err := w.encode(name, v); err != nil {
		return err
	}
	return w.PutRaw(name, mandatory, w.scratch.Bytes())
}

// PutCanonical is Put with the payload in canonical form (AppendCanonical):
// every map's entries, struct fields included, in the order of their
// encoded keys, so that the same state gives the same bytes whatever maps
// hold it.
func (w *SectionWriter) PutCanonical(name string, mandatory bool, v any) error {
	if err := w.encode(name, v); err != nil {
		return err
	}
	var err error
	if w.canon, err = AppendCanonical(w.canon[:0], w.scratch.Bytes()); err != nil {
		return fmt.Errorf("migration: section %s: %w", name, err)
	}
	return w.PutRaw(name, mandatory, w.canon)
}

// encode leaves v's msgpack encoding in w.scratch.
func (w *SectionWriter) encode(name string, v any) error {
	w.scratch.Reset()
	w.enc.Reset(&w.scratch)
	w.setupEncoder()
	if err := w.enc.Encode(v); err != nil {
		return fmt.Errorf("migration: encoding section %s: %w", name, err)
	}
	return nil
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
