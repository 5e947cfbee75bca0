package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Size limits on the JSON this package reads; both come from outside (a
// file, another host, a control socket).
const (
	MaxSourceJSON      = 64 << 10
	MaxDescriptionJSON = 1 << 20
	MaxModels          = 64
)

// MarshalJSON writes a value as a JSON boolean, number or string.
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.Type {
	case Bool:
		return json.Marshal(v.Bool)
	case Int:
		return json.Marshal(v.Int)
	case String, Enum:
		return json.Marshal(v.Str)
	}
	return nil, fmt.Errorf("value of invalid type %v", v.Type)
}

// valueFromJSON converts a decoded JSON value: booleans, integers that fit
// in int64, and strings. It does not know the parameter, so a string
// becomes a String value; Param.Convert makes it an Enum value where the
// parameter is one.
func valueFromJSON(name string, raw json.RawMessage) (Value, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return Value{}, fmt.Errorf("%s: %w", name, jsonError(err))
	}
	switch x := x.(type) {
	case bool:
		return BoolValue(x), nil
	case json.Number:
		i, err := strconv.ParseInt(x.String(), 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return Value{}, fmt.Errorf("%s=%s: an integer beyond the 64-bit range", name, x)
		}
		if err != nil {
			return Value{}, fmt.Errorf("%s=%s: not an integer", name, x)
		}
		return IntValue(i), nil
	case string:
		if len(x) > MaxStringValue {
			return Value{}, fmt.Errorf("%s: string value longer than %d bytes", name, MaxStringValue)
		}
		return StringValue(x), nil
	}
	return Value{}, fmt.Errorf("%s: value must be a boolean, an integer or a string", name)
}

// as converts a value decoded from JSON to type t where the JSON form
// cannot tell them apart (a string may be an enum value). Only
// Param.Convert calls it, so that every list is read the same way.
func (v Value) as(t Type) Value {
	if t == Enum && v.Type == String {
		return EnumValue(v.Str)
	}
	if t == String && v.Type == Enum {
		return StringValue(v.Str)
	}
	return v
}

// Source is what a source announces for the compatibility check: its model
// name and parameter list (rule 6). Version is informational; the check
// relies on the list alone.
//
// MAC is the NIC's permanent address when the source reports one
// (query-config does; a list from an older program, or from
// 'serve --validate-only --json' without --mac, does not). It is not a
// parameter: every instance has its own, a description has none, so Check
// ignores it. It is still part of the contract, because the migrated state
// carries it and a destination with another address refuses that state:
// Compare checks it whenever both sides carry one.
type Source struct {
	Model   string
	Version int
	Params  []Assignment
	MAC     net.HardwareAddr
}

type sourceJSON struct {
	Model   string                     `json:"model"`
	Params  map[string]json.RawMessage `json:"params"`
	Version int                        `json:"version,omitempty"`
	// A pointer, so that "mac":"" is refused rather than read as absent.
	MAC *string `json:"mac,omitempty"`
}

// MarshalJSON writes {"model": ..., "params": {...}, "version": N,
// "mac": "..."}, parameters sorted by name; version and mac only when set.
// mac comes last, after the fields every reader knows.
func (s Source) MarshalJSON() ([]byte, error) {
	out := struct {
		Model   string           `json:"model"`
		Params  map[string]Value `json:"params"`
		Version int              `json:"version,omitempty"`
		MAC     string           `json:"mac,omitempty"`
	}{Model: s.Model, Params: make(map[string]Value, len(s.Params)), Version: s.Version}
	for _, a := range s.Params {
		out.Params[a.Name] = a.Value
	}
	if s.MAC != nil {
		out.MAC = s.MAC.String()
	}
	return json.Marshal(out)
}

// DecodeSource reads a source configuration as MarshalJSON writes it. It
// refuses unknown fields, a missing model or params, a "mac" that is not a
// NIC's address, and more than MaxSourceJSON bytes.
func DecodeSource(r io.Reader) (Source, error) {
	data, err := readCapped(r, MaxSourceJSON)
	if err != nil {
		return Source{}, fmt.Errorf("source configuration: %w", err)
	}
	var sj sourceJSON
	if err := strictUnmarshal(data, &sj); err != nil {
		return Source{}, fmt.Errorf("source configuration: %w", err)
	}
	if sj.Model == "" {
		return Source{}, errors.New("source configuration: no model")
	}
	if len(sj.Model) > MaxNameLen {
		return Source{}, fmt.Errorf("source configuration: model name longer than %d bytes", MaxNameLen)
	}
	if sj.Params == nil {
		return Source{}, errors.New("source configuration: no params (use {} for an empty list)")
	}
	if len(sj.Params) > MaxParams {
		return Source{}, fmt.Errorf("source configuration: %d parameters (at most %d)", len(sj.Params), MaxParams)
	}
	if sj.Version < 0 {
		return Source{}, fmt.Errorf("source configuration: version %d", sj.Version)
	}
	s := Source{Model: sj.Model, Version: sj.Version}
	if sj.MAC != nil {
		if s.MAC, err = ParseMAC(*sj.MAC); err != nil {
			return Source{}, fmt.Errorf("source configuration: mac %w", err)
		}
	}
	for name, raw := range sj.Params {
		if err := validateParamName(name); err != nil {
			return Source{}, fmt.Errorf("source configuration: %w", err)
		}
		v, err := valueFromJSON(name, raw)
		if err != nil {
			return Source{}, fmt.Errorf("source configuration: %w", err)
		}
		s.Params = append(s.Params, Assignment{Name: name, Value: v})
	}
	slices.SortFunc(s.Params, func(a, b Assignment) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// ParseMAC reads a NIC's address: 48 bits, unicast and not all zero, as
// the state loader wants it. A longer string is cut in the message, since
// it may come from another host.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		if len(s) > 64 {
			s = s[:64] + "..."
		}
		return nil, fmt.Errorf("%q: not a 48-bit MAC address such as 52:54:00:12:34:56", s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("%s: a multicast address cannot be a NIC's address", mac)
	}
	if string(mac) == "\x00\x00\x00\x00\x00\x00" {
		return nil, fmt.Errorf("%s: the all-zero address cannot be a NIC's address", mac)
	}
	return mac, nil
}

// The description's JSON shape follows the "VFIO Migration" RFC:
// {"models": {"<model>": {"params": {"<name>": {"type", "init_value",
// "off_value", "allowed_values", "description"}}, "versions": {...}}}}.
// Fields are declared in alphabetical order so that the output's keys are
// sorted at every level (encoding/json sorts map keys itself).
type descriptionJSON struct {
	Models map[string]modelJSON `json:"models"`
}

type modelJSON struct {
	LatestVersion int                                   `json:"latest_version"`
	Params        map[string]paramJSON                  `json:"params"`
	Versions      map[string]map[string]json.RawMessage `json:"versions"`
}

type paramJSON struct {
	AllowedValues json.RawMessage `json:"allowed_values,omitempty"`
	Description   string          `json:"description"`
	InitValue     json.RawMessage `json:"init_value"`
	OffValue      json.RawMessage `json:"off_value,omitempty"`
	Type          string          `json:"type"`
}

type rangeJSON struct {
	Max int64 `json:"max"`
	Min int64 `json:"min"`
}

// Describe writes the machine-readable description of models, indented,
// with sorted keys, ending in a newline. Every model must be valid.
func Describe(models ...*Model) ([]byte, error) {
	d := descriptionJSON{Models: make(map[string]modelJSON, len(models))}
	for _, m := range models {
		if err := m.Validate(); err != nil {
			return nil, err
		}
		mj := modelJSON{
			LatestVersion: m.Latest(),
			Params:        make(map[string]paramJSON, len(m.Params)),
			Versions:      make(map[string]map[string]json.RawMessage, len(m.Versions)),
		}
		for _, p := range m.Params {
			pj, err := paramToJSON(&p)
			if err != nil {
				return nil, err
			}
			mj.Params[p.Name] = pj
		}
		for _, v := range m.Versions {
			set := make(map[string]json.RawMessage, len(v.Values))
			for name, val := range v.Values {
				b, err := val.MarshalJSON()
				if err != nil {
					return nil, err
				}
				set[name] = b
			}
			mj.Versions[strconv.Itoa(v.Number)] = set
		}
		d.Models[m.Name] = mj
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func paramToJSON(p *Param) (paramJSON, error) {
	pj := paramJSON{Type: p.Type.String(), Description: p.Description}
	var err error
	if pj.InitValue, err = p.Init.MarshalJSON(); err != nil {
		return pj, err
	}
	if p.Off != nil {
		if pj.OffValue, err = p.Off.MarshalJSON(); err != nil {
			return pj, err
		}
	}
	switch {
	case p.Type == Int && len(p.Ranges) > 0:
		rs := make([]rangeJSON, len(p.Ranges))
		for i, r := range p.Ranges {
			rs[i] = rangeJSON{Min: r.Min, Max: r.Max}
		}
		pj.AllowedValues, err = json.Marshal(rs)
	case p.Type == Enum:
		pj.AllowedValues, err = json.Marshal(p.Enum)
	}
	return pj, err
}

// DecodeDescription reads a description as Describe writes it, from another
// host or a file, and checks every model in it as Validate does. Keys this
// version does not know are refused rather than ignored, so that a
// constraint it cannot understand never passes as "compatible".
func DecodeDescription(r io.Reader) ([]*Model, error) {
	data, err := readCapped(r, MaxDescriptionJSON)
	if err != nil {
		return nil, fmt.Errorf("description: %w", err)
	}
	var d descriptionJSON
	if err := strictUnmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("description: %w", err)
	}
	if d.Models == nil {
		return nil, errors.New("description: no models")
	}
	if len(d.Models) > MaxModels {
		return nil, fmt.Errorf("description: %d models (at most %d)", len(d.Models), MaxModels)
	}
	names := make([]string, 0, len(d.Models))
	for name := range d.Models {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]*Model, 0, len(names))
	for _, name := range names {
		m, err := modelFromJSON(name, d.Models[name])
		if err != nil {
			return nil, fmt.Errorf("description: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

func modelFromJSON(name string, mj modelJSON) (*Model, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if len(mj.Params) > MaxParams {
		return nil, fmt.Errorf("model %s: %d parameters (at most %d)", name, len(mj.Params), MaxParams)
	}
	if len(mj.Versions) > MaxVersions {
		return nil, fmt.Errorf("model %s: %d versions (at most %d)", name, len(mj.Versions), MaxVersions)
	}
	m := &Model{Name: name}
	pnames := make([]string, 0, len(mj.Params))
	for pn := range mj.Params {
		pnames = append(pnames, pn)
	}
	slices.Sort(pnames)
	for _, pn := range pnames {
		p, err := paramFromJSON(pn, mj.Params[pn])
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", name, err)
		}
		m.Params = append(m.Params, p)
	}
	for vs, set := range mj.Versions {
		n, err := strconv.Atoi(vs)
		if err != nil || n < 1 || strconv.Itoa(n) != vs {
			return nil, fmt.Errorf("model %s: version %q is not a positive integer", name, vs)
		}
		if len(set) > MaxParams {
			return nil, fmt.Errorf("model %s: version %d: too many parameters", name, n)
		}
		v := Version{Number: n, Values: make(map[string]Value, len(set))}
		for pn, raw := range set {
			val, err := valueFromJSON(pn, raw)
			if err != nil {
				return nil, fmt.Errorf("model %s: version %d: %w", name, n, err)
			}
			// An unknown parameter is kept as it is, for Validate to name.
			if p := m.Param(pn); p != nil {
				if val, err = p.Convert(val); err != nil {
					return nil, fmt.Errorf("model %s: version %d: %w", name, n, err)
				}
			}
			v.Values[pn] = val
		}
		m.Versions = append(m.Versions, v)
	}
	slices.SortFunc(m.Versions, func(a, b Version) int { return b.Number - a.Number })
	if mj.LatestVersion != m.Latest() {
		return nil, fmt.Errorf("model %s: latest_version %d but the newest version listed is %d",
			name, mj.LatestVersion, m.Latest())
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func paramFromJSON(name string, pj paramJSON) (Param, error) {
	t, ok := parseType(pj.Type)
	if !ok {
		return Param{}, fmt.Errorf("parameter %s: unknown type %q", name, pj.Type)
	}
	p := Param{Name: name, Type: t, Description: pj.Description}
	if len(pj.InitValue) == 0 {
		return Param{}, fmt.Errorf("parameter %s: no init_value", name)
	}
	// The allowed values first: Convert checks init and off against them.
	if len(pj.AllowedValues) > 0 {
		switch t {
		case Int:
			var rs []rangeJSON
			if err := strictUnmarshal(pj.AllowedValues, &rs); err != nil {
				return Param{}, fmt.Errorf("parameter %s: allowed_values: %w", name, err)
			}
			if len(rs) > MaxAllowed {
				return Param{}, fmt.Errorf("parameter %s: more than %d allowed ranges", name, MaxAllowed)
			}
			for _, r := range rs {
				p.Ranges = append(p.Ranges, Range{Min: r.Min, Max: r.Max})
			}
		case Enum:
			if err := strictUnmarshal(pj.AllowedValues, &p.Enum); err != nil {
				return Param{}, fmt.Errorf("parameter %s: allowed_values: %w", name, err)
			}
		default:
			return Param{}, fmt.Errorf("parameter %s: allowed_values on a %v parameter", name, t)
		}
	}
	if err := validateDomain(&p); err != nil {
		return Param{}, err
	}
	init, err := valueFromJSON(name, pj.InitValue)
	if err != nil {
		return Param{}, fmt.Errorf("parameter %s: init_value: %w", name, err)
	}
	if p.Init, err = p.Convert(init); err != nil {
		return Param{}, fmt.Errorf("parameter %s: init_value: %w", name, err)
	}
	if len(pj.OffValue) > 0 {
		off, err := valueFromJSON(name, pj.OffValue)
		if err != nil {
			return Param{}, fmt.Errorf("parameter %s: off_value: %w", name, err)
		}
		if off, err = p.Convert(off); err != nil {
			return Param{}, fmt.Errorf("parameter %s: off_value: %w", name, err)
		}
		p.Off = &off
	}
	return p, nil
}

// readCapped reads all of r, failing when it holds more than limit bytes.
func readCapped(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// strictUnmarshal decodes exactly one JSON value, refusing unknown fields
// and trailing data.
func strictUnmarshal(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// jsonError says what is wrong with a document in the words of JSON rather
// than of the Go types it is decoded into: encoding/json names those ("Go
// value of type model.rangeJSON"), which mean nothing to whoever wrote the
// document.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		// Value is the JSON kind, with the number when it is one
		// ("number 1.5").
		msg := fmt.Sprintf("%s where %s is expected", jsonKind(typeErr.Value), jsonWanted(typeErr.Type))
		if typeErr.Field != "" {
			msg = typeErr.Field + ": " + msg
		}
		return errors.New(msg)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("not valid JSON at byte %d: %s", syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("not valid JSON: it ends too early")
	case errors.Is(err, io.EOF):
		return errors.New("empty: no JSON value")
	}
	// The decoder's other errors ("json: unknown field \"x\"") carry no Go
	// type; only the package's prefix goes.
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// jsonKind turns encoding/json's name for what it found into a phrase.
func jsonKind(v string) string {
	switch {
	case v == "array":
		return "a list"
	case v == "object":
		return "an object"
	case v == "bool":
		return "a boolean"
	case v == "string":
		return "a string"
	case v == "number":
		return "a number"
	case strings.HasPrefix(v, "number "):
		return "the number " + strings.TrimPrefix(v, "number ")
	}
	return v
}

// jsonWanted describes, as JSON, what a Go type of this package's JSON
// shapes decodes from.
func jsonWanted(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	if t == reflect.TypeFor[rangeJSON]() {
		return `a range {"min": N, "max": N}`
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		switch t.Elem() {
		case reflect.TypeFor[byte]():
			// json.RawMessage takes any value.
			return "a JSON value"
		case reflect.TypeFor[rangeJSON]():
			return `a list of ranges {"min": N, "max": N}`
		case reflect.TypeFor[string]():
			return "a list of strings"
		}
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonWanted(t.Elem())
	}
	return "another value"
}
