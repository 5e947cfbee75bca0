package model

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// Problem is one reason a destination cannot take a source's state.
type Problem struct {
	// Param is the parameter concerned, "mac" for the NIC's address, empty
	// for a model mismatch.
	Param string
	Msg   string
}

func (p Problem) String() string { return p.Msg }

// Join is the problems' messages in one line, separated by "; ".
func Join(probs []Problem) string {
	msgs := make([]string, len(probs))
	for i, p := range probs {
		msgs[i] = p.Msg
	}
	return strings.Join(msgs, "; ")
}

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
	_, probs := m.fromList(src.Params)
	for i := range probs {
		probs[i].Msg = "destination: " + probs[i].Msg
	}
	return probs
}

// Matches is the check a destination makes when a state stream arrives: the
// source's list must be exactly this device's own list, because the state
// layout follows the parameters (rule 4). It is stricter than Check, which
// asks whether a destination could be started to match; Matches asks
// whether this one was. It reports every difference, in name order.
func (c Config) Matches(src Source) []Problem {
	if c.Model == nil {
		return []Problem{{Msg: "the device has no model"}}
	}
	if src.Model != c.Model.Name {
		return []Problem{{Msg: fmt.Sprintf("model mismatch: the state is for %s, this device is %s", src.Model, c.Model.Name)}}
	}
	theirs, probs := c.Model.fromList(src.Params)
	for i := range probs {
		probs[i].Msg = "source: " + probs[i].Msg
	}
	bad := make(map[string]bool, len(probs))
	for _, p := range probs {
		bad[p.Param] = true
	}
	for _, p := range c.Model.Params {
		if bad[p.Name] {
			continue
		}
		if v, mine := theirs[p.Name], c.Values[p.Name]; v != mine {
			probs = append(probs, Problem{Param: p.Name,
				Msg: fmt.Sprintf("source runs %s=%s, this device %s=%s", p.Name, v, p.Name, mine)})
		}
	}
	slices.SortStableFunc(probs, func(a, b Problem) int { return strings.Compare(a.Param, b.Param) })
	return probs
}

// Compare checks the configuration of a destination server that already
// runs against the source's, as an orchestrator does before migrating: the
// destination must have been started with the source's list (rule 8), and
// with the source's MAC when both report one. The address is not a
// parameter, but the migrated state carries it and a destination with
// another refuses the state only once the source has stopped, inside the
// downtime; comparing it here refuses the pair before anything starts.
//
// Unlike Check, Compare needs no description: a destination that runs the
// source's list can take its state. Parameters are compared through this
// program's definition of the model when it has one, so that a value
// listed at its off value equals an unlisted one; otherwise literally. It
// reports every difference, in name order.
func Compare(src, dst Source) []Problem {
	var probs []Problem
	if src.Model != dst.Model {
		probs = append(probs, Problem{Msg: fmt.Sprintf("model mismatch: source runs %s, destination %s", src.Model, dst.Model)})
	} else {
		probs = append(probs, compareLists(src, dst)...)
	}
	if src.MAC != nil && dst.MAC != nil && !bytes.Equal(src.MAC, dst.MAC) {
		probs = append(probs, Problem{Param: "mac", Msg: fmt.Sprintf(
			"mac: source runs %s, destination %s (the state carries the address; start the destination with the source's)", src.MAC, dst.MAC)})
	}
	slices.SortStableFunc(probs, func(a, b Problem) int { return strings.Compare(a.Param, b.Param) })
	return probs
}

func compareLists(src, dst Source) []Problem {
	if m := Lookup(src.Model); m != nil {
		scfg, err := m.ResolveList(src.Params)
		if err != nil {
			return []Problem{{Msg: "source configuration: " + err.Error()}}
		}
		dcfg, err := m.ResolveList(dst.Params)
		if err != nil {
			return []Problem{{Msg: "destination configuration: " + err.Error()}}
		}
		var probs []Problem
		for _, a := range scfg.Effective() {
			if v := dcfg.Values[a.Name]; v != a.Value {
				probs = append(probs, Problem{Param: a.Name,
					Msg: fmt.Sprintf("source runs %s=%s, destination %s=%s", a.Name, a.Value, a.Name, v)})
			}
		}
		return probs
	}
	theirs := make(map[string]Value, len(dst.Params))
	for _, a := range dst.Params {
		theirs[a.Name] = a.Value
	}
	var probs []Problem
	seen := make(map[string]bool, len(src.Params))
	for _, a := range src.Params {
		seen[a.Name] = true
		v, ok := theirs[a.Name]
		switch {
		case !ok:
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("source runs %s=%s, the destination does not list %s", a.Name, a.Value, a.Name)})
		case v.jsonText() != a.Value.jsonText():
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("source runs %s=%s, destination %s=%s", a.Name, a.Value, a.Name, v)})
		}
	}
	for _, a := range dst.Params {
		if !seen[a.Name] {
			probs = append(probs, Problem{Param: a.Name,
				Msg: fmt.Sprintf("destination runs %s=%s, the source does not list %s", a.Name, a.Value, a.Name)})
		}
	}
	return probs
}
