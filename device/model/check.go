package model

import (
	"fmt"
	"slices"
	"strings"
)

// Problem is one reason a destination cannot take a source's state.
type Problem struct {
	// Param is the parameter concerned, empty for a model mismatch.
	Param string
	Msg   string
}

func (p Problem) String() string { return p.Msg }

// Check is the compatibility check of rule 7, which needs no migration: the
// destination must offer the source's model, know every parameter the source
// lists, accept every listed value, and be able to disable (have an off
// value for) every parameter the source does not list. It reports every
// failure, parameters in name order; an empty result means compatible.
func Check(src Source, dest []*Model) []Problem {
	var m *Model
	names := make([]string, 0, len(dest))
	for _, d := range dest {
		names = append(names, d.Name)
		if d.Name == src.Model {
			m = d
		}
	}
	if m == nil {
		slices.Sort(names)
		offered := strings.Join(names, ", ")
		if offered == "" {
			offered = "none"
		}
		return []Problem{{Msg: fmt.Sprintf("model mismatch: source is %s, destination offers %s", src.Model, offered)}}
	}
	var probs []Problem
	listed := make(map[string]bool, len(src.Params))
	for _, a := range src.Params {
		if listed[a.Name] {
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("parameter %s listed twice by the source", a.Name)})
			continue
		}
		listed[a.Name] = true
		p := m.Param(a.Name)
		if p == nil {
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("unknown parameter %s: the destination does not know it", a.Name)})
			continue
		}
		v := a.Value.as(p.Type)
		if v.Type != p.Type {
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("%s=%s: the destination wants a %v", a.Name, a.Value, p.Type)})
			continue
		}
		if !p.Allows(v) {
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("%s=%s not allowed by the destination (allowed: %s)", a.Name, v, p.AllowedString())})
		}
	}
	for _, p := range m.Params {
		if !listed[p.Name] && p.Off == nil {
			probs = append(probs, Problem{Param: p.Name,
				Msg: fmt.Sprintf("parameter %s: not in the source list and the destination cannot turn it off (no off value)", p.Name)})
		}
	}
	slices.SortStableFunc(probs, func(a, b Problem) int { return strings.Compare(a.Param, b.Param) })
	return probs
}
