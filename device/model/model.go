// Package model describes device models the way the project's migration
// rules define them: a model is a hardware interface plus a state
// representation plus parameter definitions, named by a string that never
// changes. Variation lives in parameters (name=value pairs with an off value
// that leaves the interface and state exactly as before the parameter
// existed) and in versions (aliases for complete parameter sets).
//
// The package resolves a configuration (version plus overrides) into
// effective values, derives the list a source announces (the parameters that
// differ from their off value), checks such a list against a destination's
// description before any migration starts, and reads and writes the
// machine-readable JSON description of every model.
package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Type is the type of a parameter's values.
type Type int

// Parameter types.
const (
	Bool Type = iota + 1
	Int
	String
	Enum
)

var typeNames = [...]string{Bool: "bool", Int: "int", String: "string", Enum: "enum"}

func (t Type) String() string {
	if t >= Bool && t <= Enum {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

func parseType(s string) (Type, bool) {
	for t := Bool; t <= Enum; t++ {
		if typeNames[t] == s {
			return t, true
		}
	}
	return 0, false
}

// Value is one parameter value. Which field is meaningful depends on Type:
// Bool for Bool, Int for Int, Str for String and Enum.
type Value struct {
	Type Type
	Bool bool
	Int  int64
	Str  string
}

// BoolValue, IntValue, StringValue and EnumValue build values.
func BoolValue(b bool) Value     { return Value{Type: Bool, Bool: b} }
func IntValue(i int64) Value     { return Value{Type: Int, Int: i} }
func StringValue(s string) Value { return Value{Type: String, Str: s} }
func EnumValue(s string) Value   { return Value{Type: Enum, Str: s} }

// String formats v as it is written on a command line.
func (v Value) String() string {
	switch v.Type {
	case Bool:
		return strconv.FormatBool(v.Bool)
	case Int:
		return strconv.FormatInt(v.Int, 10)
	default:
		return v.Str
	}
}

// Range is an inclusive range of integers.
type Range struct {
	Min, Max int64
}

func (r Range) String() string {
	if r.Min == r.Max {
		return strconv.FormatInt(r.Min, 10)
	}
	return strconv.FormatInt(r.Min, 10) + ".." + strconv.FormatInt(r.Max, 10)
}

// Param defines one configuration parameter.
type Param struct {
	Name string
	Type Type
	// Init is the value a device of the latest version starts with.
	Init Value
	// Off is the value that leaves the hardware interface and the state
	// representation exactly as they were before the parameter existed; nil
	// means the parameter cannot be disabled, so every configuration must
	// give it a value.
	Off *Value
	// Ranges lists the allowed values of an Int parameter (empty: any).
	Ranges []Range
	// Enum lists the allowed values of an Enum parameter.
	Enum        []string
	Description string
}

// Allows reports whether v is a value p accepts.
func (p *Param) Allows(v Value) bool {
	if v.Type != p.Type {
		return false
	}
	switch p.Type {
	case Int:
		if len(p.Ranges) == 0 {
			return true
		}
		for _, r := range p.Ranges {
			if v.Int >= r.Min && v.Int <= r.Max {
				return true
			}
		}
		return false
	case Enum:
		return slices.Contains(p.Enum, v.Str)
	}
	return true
}

// AllowedString describes the allowed values for error messages.
func (p *Param) AllowedString() string {
	switch p.Type {
	case Bool:
		return "true, false"
	case Int:
		if len(p.Ranges) == 0 {
			return "any integer"
		}
		parts := make([]string, len(p.Ranges))
		for i, r := range p.Ranges {
			parts[i] = r.String()
		}
		return strings.Join(parts, ", ")
	case Enum:
		return strings.Join(p.Enum, ", ")
	}
	return "any string"
}

// Parse converts the text form of a value (as in name=value) to a Value of
// p's type, and checks that p allows it. Errors name the parameter and the
// value.
func (p *Param) Parse(text string) (Value, error) {
	var v Value
	switch p.Type {
	case Bool:
		switch text {
		case "true", "on", "yes", "1":
			v = BoolValue(true)
		case "false", "off", "no", "0":
			v = BoolValue(false)
		default:
			return Value{}, fmt.Errorf("%s=%s: not a boolean (use true or false)", p.Name, text)
		}
	case Int:
		i, err := strconv.ParseInt(text, 0, 64)
		if err != nil {
			return Value{}, fmt.Errorf("%s=%s: not an integer", p.Name, text)
		}
		v = IntValue(i)
	case String:
		v = StringValue(text)
	case Enum:
		v = EnumValue(text)
	default:
		return Value{}, fmt.Errorf("%s: parameter has invalid type %v", p.Name, p.Type)
	}
	if err := p.check(v); err != nil {
		return Value{}, err
	}
	return v, nil
}

// Convert turns a value as a source list or a description carries it into
// a value of p's type, and checks that p allows it. JSON has booleans,
// integers and strings, and a string is an enum value when the parameter is
// an enum. It is the one conversion every list goes through: Check,
// ResolveList and Matches all call it, so a value the check accepts is a
// value a destination starts with. Errors name the parameter and the value
// as the list wrote it.
func (p *Param) Convert(v Value) (Value, error) {
	v = v.as(p.Type)
	if err := p.check(v); err != nil {
		return Value{}, err
	}
	return v, nil
}

// check returns an error naming the parameter and value when p does not
// allow v.
func (p *Param) check(v Value) error {
	if v.Type != p.Type {
		return fmt.Errorf("%s=%s: %s, but %s takes %s", p.Name, v.jsonText(), v.kind(), p.Name, p.takes())
	}
	if p.Allows(v) {
		return nil
	}
	if p.Type == Int {
		return fmt.Errorf("%s=%s out of range %s", p.Name, v, p.AllowedString())
	}
	return fmt.Errorf("%s=%s not allowed (allowed: %s)", p.Name, v, p.AllowedString())
}

// kind names the sort of value v is, in the words of its JSON form, where
// a string and an enum value look the same.
func (v Value) kind() string {
	switch v.Type {
	case Bool:
		return "a boolean"
	case Int:
		return "an integer"
	case String, Enum:
		return "a string"
	}
	return "an invalid value"
}

// jsonText is v as a list writes it: a string quoted, so that "16" and 16
// read differently in a message.
func (v Value) jsonText() string {
	b, err := v.MarshalJSON()
	if err != nil {
		return v.String()
	}
	return string(b)
}

// takes describes the values p accepts, for messages.
func (p *Param) takes() string {
	switch p.Type {
	case Bool:
		return "true or false"
	case Int:
		if len(p.Ranges) == 0 {
			return "an integer"
		}
		return "an integer in " + p.AllowedString()
	case String:
		return "a string"
	case Enum:
		return "one of " + p.AllowedString()
	}
	return "no value (its type is invalid)"
}

// Version is a complete parameter set under a number.
type Version struct {
	Number int
	Values map[string]Value
}

// Model is a device model: its stable name, its parameters and its
// versions, newest first.
type Model struct {
	Name     string
	Params   []Param
	Versions []Version
}

// Param returns the parameter called name, or nil.
func (m *Model) Param(name string) *Param {
	for i := range m.Params {
		if m.Params[i].Name == name {
			return &m.Params[i]
		}
	}
	return nil
}

// Latest is the newest version's number, 0 when the model has none.
func (m *Model) Latest() int {
	if len(m.Versions) == 0 {
		return 0
	}
	return m.Versions[0].Number
}

// Version returns the version with the given number, or nil.
func (m *Model) Version(n int) *Version {
	for i := range m.Versions {
		if m.Versions[i].Number == n {
			return &m.Versions[i]
		}
	}
	return nil
}

// supported lists the version numbers oldest first, for messages.
func (m *Model) supported() string {
	parts := make([]string, 0, len(m.Versions))
	for i := len(m.Versions) - 1; i >= 0; i-- {
		parts = append(parts, strconv.Itoa(m.Versions[i].Number))
	}
	return strings.Join(parts, ", ")
}

// Compat is the change an older version makes to the next newer one: the
// defaults that used to hold, restated. Build a version list with
// NewVersions.
type Compat struct {
	Number int
	Set    map[string]Value
}

// NewVersions expands version definitions given newest first into complete
// parameter sets: the newest starts from every parameter's Init value, and
// each older one starts from the set of the one before it and applies its
// own Set. This is the pattern QEMU's machine compat arrays follow, and it
// means a new parameter needs only a line in the version that predates it.
func NewVersions(params []Param, defs ...Compat) []Version {
	out := make([]Version, 0, len(defs))
	cur := make(map[string]Value, len(params))
	for _, p := range params {
		cur[p.Name] = p.Init
	}
	for _, d := range defs {
		next := make(map[string]Value, len(cur))
		for k, v := range cur {
			next[k] = v
		}
		for k, v := range d.Set {
			next[k] = v
		}
		out = append(out, Version{Number: d.Number, Values: next})
		cur = next
	}
	return out
}

// Limits on a model, which also bound a decoded description.
const (
	MaxNameLen     = 256
	MaxParams      = 256
	MaxVersions    = 1024
	MaxAllowed     = 256
	MaxDescription = 4096
	MaxStringValue = 1024
)

// Validate checks that m is well formed: a model name of the form
// domain/path, unique parameter names, initial and off values that are
// allowed, versions numbered 1 and up in strictly descending order, each a
// complete set of allowed values.
func (m *Model) Validate() error {
	if err := ValidateName(m.Name); err != nil {
		return err
	}
	if len(m.Params) > MaxParams {
		return fmt.Errorf("model %s: %d parameters (at most %d)", m.Name, len(m.Params), MaxParams)
	}
	seen := make(map[string]bool, len(m.Params))
	for i := range m.Params {
		p := &m.Params[i]
		if err := validateParam(p); err != nil {
			return fmt.Errorf("model %s: %w", m.Name, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("model %s: parameter %s defined twice", m.Name, p.Name)
		}
		seen[p.Name] = true
	}
	if len(m.Versions) == 0 {
		return fmt.Errorf("model %s: no versions", m.Name)
	}
	if len(m.Versions) > MaxVersions {
		return fmt.Errorf("model %s: %d versions (at most %d)", m.Name, len(m.Versions), MaxVersions)
	}
	for i, v := range m.Versions {
		if v.Number < 1 {
			return fmt.Errorf("model %s: version %d: numbers start at 1", m.Name, v.Number)
		}
		if i > 0 && v.Number >= m.Versions[i-1].Number {
			return fmt.Errorf("model %s: version %d listed after version %d: versions go newest first",
				m.Name, v.Number, m.Versions[i-1].Number)
		}
		for name, val := range v.Values {
			p := m.Param(name)
			if p == nil {
				return fmt.Errorf("model %s: version %d: unknown parameter %s", m.Name, v.Number, name)
			}
			if err := p.check(val); err != nil {
				return fmt.Errorf("model %s: version %d: %w", m.Name, v.Number, err)
			}
		}
		for _, p := range m.Params {
			if _, ok := v.Values[p.Name]; !ok {
				return fmt.Errorf("model %s: version %d does not set %s", m.Name, v.Number, p.Name)
			}
		}
	}
	return nil
}

func validateParam(p *Param) error {
	if err := validateDomain(p); err != nil {
		return err
	}
	if err := p.check(p.Init); err != nil {
		return fmt.Errorf("initial value: %w", err)
	}
	if p.Off != nil {
		if err := p.check(*p.Off); err != nil {
			return fmt.Errorf("off value: %w", err)
		}
	}
	return nil
}

// validateDomain checks what p's values are checked against: its name,
// type and allowed values.
func validateDomain(p *Param) error {
	if err := validateParamName(p.Name); err != nil {
		return err
	}
	if p.Type < Bool || p.Type > Enum {
		return fmt.Errorf("parameter %s: invalid type %v", p.Name, p.Type)
	}
	if len(p.Description) > MaxDescription {
		return fmt.Errorf("parameter %s: description longer than %d bytes", p.Name, MaxDescription)
	}
	if len(p.Ranges) > MaxAllowed || len(p.Enum) > MaxAllowed {
		return fmt.Errorf("parameter %s: more than %d allowed values", p.Name, MaxAllowed)
	}
	if len(p.Ranges) > 0 && p.Type != Int {
		return fmt.Errorf("parameter %s: ranges on a %v parameter", p.Name, p.Type)
	}
	for _, r := range p.Ranges {
		if r.Min > r.Max {
			return fmt.Errorf("parameter %s: empty range %d..%d", p.Name, r.Min, r.Max)
		}
	}
	if p.Type == Enum {
		if len(p.Enum) == 0 {
			return fmt.Errorf("parameter %s: enum without values", p.Name)
		}
		for _, e := range p.Enum {
			if len(e) > MaxStringValue {
				return fmt.Errorf("parameter %s: enum value longer than %d bytes", p.Name, MaxStringValue)
			}
		}
	} else if len(p.Enum) > 0 {
		return fmt.Errorf("parameter %s: enum values on a %v parameter", p.Name, p.Type)
	}
	return nil
}

func validateParamName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("parameter name %q: must be 1 to 64 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("parameter name %q: only a-z, 0-9 and - are allowed", name)
		}
	}
	return nil
}

// ValidateName checks a model name: a domain (at least one dot) followed by
// one or more path components, with no scheme; lower-case letters, digits,
// '.', '-' and '_' only.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("model name %q: must be 1 to %d characters", name, MaxNameLen)
	}
	if strings.Contains(name, "://") {
		return fmt.Errorf("model name %q: no scheme; a domain followed by a path", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && !strings.ContainsRune("./-_", rune(c)) {
			return fmt.Errorf("model name %q: only a-z, 0-9, '.', '-', '_' and '/' are allowed", name)
		}
	}
	parts := strings.Split(name, "/")
	if len(parts) < 2 || !strings.Contains(parts[0], ".") ||
		strings.HasPrefix(parts[0], ".") || strings.HasSuffix(parts[0], ".") {
		return fmt.Errorf("model name %q: must be a domain followed by a path", name)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("model name %q: empty or relative path component", name)
		}
	}
	return nil
}
