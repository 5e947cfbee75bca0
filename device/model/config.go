package model

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Setting is one name=value pair as given on a command line, not yet
// checked against a model.
type Setting struct {
	Name, Value string
}

func (s Setting) String() string { return s.Name + "=" + s.Value }

// ParseSetting splits "name=value".
func ParseSetting(s string) (Setting, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Setting{}, fmt.Errorf("%q: want name=value", s)
	}
	return Setting{Name: name, Value: value}, nil
}

// Assignment is a checked parameter value.
type Assignment struct {
	Name  string
	Value Value
}

func (a Assignment) String() string { return a.Name + "=" + a.Value.String() }

// Config is the effective configuration of one device instance: every
// parameter of its model with the value it runs with.
type Config struct {
	Model *Model
	// Version is the version the configuration started from, or 0 when it
	// was built from a source list (ResolveList) that matches no version.
	Version int
	Values  map[string]Value
}

// Value returns the effective value of a parameter; ok is false when the
// model has no such parameter.
func (c Config) Value(name string) (v Value, ok bool) {
	v, ok = c.Values[name]
	return v, ok
}

// Int returns the effective value of an Int parameter, 0 when absent.
func (c Config) Int(name string) int64 { return c.Values[name].Int }

// Effective lists every parameter with its value, sorted by name.
func (c Config) Effective() []Assignment {
	out := make([]Assignment, 0, len(c.Values))
	for name, v := range c.Values {
		out = append(out, Assignment{Name: name, Value: v})
	}
	slices.SortFunc(out, func(a, b Assignment) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SourceList is what a source announces about itself (rule 6): the
// parameters whose value differs from their off value, sorted by name. A
// parameter without an off value always differs, so it is always listed.
func (c Config) SourceList() []Assignment {
	out := make([]Assignment, 0, len(c.Values))
	for _, a := range c.Effective() {
		p := c.Model.Param(a.Name)
		if p != nil && p.Off != nil && *p.Off == a.Value {
			continue
		}
		out = append(out, a)
	}
	return out
}

// Source is the source list with its model name, the form that a source
// hands to the compatibility check.
func (c Config) Source() Source {
	return Source{Model: c.Model.Name, Version: c.Version, Params: c.SourceList()}
}

// Resolve builds the configuration of a device started as version (0 means
// the latest) with settings applied in order, later ones overriding earlier
// ones. Errors name the bad thing: an unsupported version, an unknown
// parameter, a value of the wrong type or out of range.
func (m *Model) Resolve(version int, settings []Setting) (Config, error) {
	if version == 0 {
		version = m.Latest()
	}
	v := m.Version(version)
	if v == nil {
		return Config{}, fmt.Errorf("unsupported version %d (supported: %s)", version, m.supported())
	}
	values := make(map[string]Value, len(v.Values))
	for k, val := range v.Values {
		values[k] = val
	}
	if err := m.apply(values, settings); err != nil {
		return Config{}, err
	}
	return Config{Model: m, Version: version, Values: values}, nil
}

// ResolveList builds the configuration of a destination started with a
// source's list (rule 8): every parameter not listed takes its off value, so
// the destination behaves exactly as the source does. A parameter without
// an off value must be listed. Version is set to the newest version whose
// set equals the result, 0 when none does. It reports every problem, in
// parameter name order.
func (m *Model) ResolveList(list []Assignment) (Config, error) {
	values, probs := m.fromList(list)
	if len(probs) > 0 {
		errs := make([]error, len(probs))
		for i, p := range probs {
			errs[i] = errors.New(p.Msg)
		}
		return Config{}, errors.Join(errs...)
	}
	c := Config{Model: m, Values: values}
	for _, v := range m.Versions {
		if equalValues(v.Values, values) {
			c.Version = v.Number
			break
		}
	}
	return c, nil
}

// fromList is the one reading of a source's list against m: every listed
// value goes through Param.Convert, every parameter not listed takes its
// off value. Check, ResolveList and Matches all read lists through it, so
// a list the check accepts is a list a destination starts with. values is
// complete only when there is no problem; problems are in name order.
func (m *Model) fromList(list []Assignment) (map[string]Value, []Problem) {
	values := make(map[string]Value, len(m.Params))
	for _, p := range m.Params {
		if p.Off != nil {
			values[p.Name] = *p.Off
		}
	}
	var probs []Problem
	listed := make(map[string]bool, len(list))
	for _, a := range list {
		if listed[a.Name] {
			probs = append(probs, Problem{Param: a.Name, Msg: fmt.Sprintf("parameter %s listed twice", a.Name)})
			continue
		}
		listed[a.Name] = true
		p := m.Param(a.Name)
		if p == nil {
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("unknown parameter %s (known: %s)", a.Name, m.paramNames())})
			continue
		}
		v, err := p.Convert(a.Value)
		if err != nil {
			probs = append(probs, Problem{Param: a.Name, Msg: err.Error()})
			continue
		}
		values[a.Name] = v
	}
	for _, p := range m.Params {
		if !listed[p.Name] && p.Off == nil {
			probs = append(probs, Problem{Param: p.Name,
				Msg: fmt.Sprintf("parameter %s: not in the source's list, and it has no off value to take instead", p.Name)})
		}
	}
	slices.SortStableFunc(probs, func(a, b Problem) int { return strings.Compare(a.Param, b.Param) })
	return values, probs
}

func (m *Model) apply(values map[string]Value, settings []Setting) error {
	for _, s := range settings {
		p := m.Param(s.Name)
		if p == nil {
			return fmt.Errorf("unknown parameter %s (known: %s)", s.Name, m.paramNames())
		}
		v, err := p.Parse(s.Value)
		if err != nil {
			return err
		}
		values[s.Name] = v
	}
	return nil
}

// paramNames lists the parameters for messages, "none" when there are none.
func (m *Model) paramNames() string {
	if len(m.Params) == 0 {
		return "none"
	}
	names := make([]string, len(m.Params))
	for i, p := range m.Params {
		names[i] = p.Name
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func equalValues(a, b map[string]Value) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ParseVersion parses a version number as given on a command line.
func ParseVersion(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("version %q: want a positive integer", s)
	}
	return n, nil
}
