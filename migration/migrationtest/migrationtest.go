// Package migrationtest is a conformance kit for migration.Stateful
// devices: any device runs Run from its tests to check that its state
// round-trips byte for byte, that its streams declare their sections
// consistently, and that every refused stream leaves it untouched.
package migrationtest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"e1000e-vfu/migration"
)

// Device builds instances of the device under test.
type Device struct {
	// New returns a device in its reset state, configured like Busy's.
	New func() migration.Stateful
	// Busy returns a device with representative state in every section
	// it can send.
	Busy   func() migration.Stateful
	Limits migration.Limits
	// MaxMutations bounds the damaged streams tried per kind (truncations,
	// bit flips); 0 means 256.
	MaxMutations int
}

// Run runs every check as a subtest.
func Run(t *testing.T, d Device) {
	t.Helper()
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			for _, err := range c.fn(d) {
				t.Error(err)
			}
		})
	}
}

// Check runs every check and returns the problems found, each naming its
// check.
func Check(d Device) []error {
	var errs []error
	for _, c := range checks {
		for _, err := range c.fn(d) {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errs
}

var checks = []struct {
	name string
	fn   func(Device) []error
}{
	{"round-trip", roundTrip},
	{"sections", sections},
	{"refusals", refusals},
	{"header", header},
}

func save(d Device, s migration.Stateful) ([]byte, error) {
	return migration.Save(nil, s, d.Limits)
}

// roundTrip: save → load → save gives the same bytes.
func roundTrip(d Device) []error {
	b1, err := save(d, d.Busy())
	if err != nil {
		return []error{err}
	}
	dst := d.New()
	if err := migration.Load(b1, dst, d.Limits, nil); err != nil {
		return []error{fmt.Errorf("loading the busy state: %w", err)}
	}
	b2, err := save(d, dst)
	if err != nil {
		return []error{err}
	}
	if !bytes.Equal(b1, b2) {
		return []error{fmt.Errorf("save → load → save differs (%d and %d bytes)", len(b1), len(b2))}
	}
	return nil
}

// sections: what the device writes matches what it declares.
func sections(d Device) []error {
	busy := d.Busy()
	b, err := save(d, busy)
	if err != nil {
		return []error{err}
	}
	h, secs, err := migration.Split(b, d.Limits)
	if err != nil {
		return []error{err}
	}
	var errs []error
	if h.Model != busy.Model() {
		errs = append(errs, fmt.Errorf("header model %s, device %s", h.Model, busy.Model()))
	}
	if fmt.Sprint(h.Params) != fmt.Sprint(busy.Params()) {
		errs = append(errs, fmt.Errorf("header parameters %v, device %v", h.Params, busy.Params()))
	}
	specs := busy.Sections()
	written := map[string]bool{}
	for _, s := range secs {
		written[s.Name] = true
		var spec *migration.SectionSpec
		for i := range specs {
			if specs[i].Name == s.Name {
				spec = &specs[i]
			}
		}
		switch {
		case spec == nil:
			errs = append(errs, fmt.Errorf("section %s written but not declared", s.Name))
		case spec.Rule != nil && spec.Rule(h) == migration.Forbidden:
			errs = append(errs, fmt.Errorf("section %s written although its rule forbids it", s.Name))
		}
	}
	for _, sp := range specs {
		if (sp.Rule == nil || sp.Rule(h) == migration.Required) && !written[sp.Name] {
			errs = append(errs, fmt.Errorf("required section %s not written", sp.Name))
		}
	}
	return errs
}

// refusals: damaged streams are refused and leave the device untouched;
// harmless changes (order, an unknown optional section) are accepted.
func refusals(d Device) []error {
	good, err := save(d, d.Busy())
	if err != nil {
		return []error{err}
	}
	h, secs, err := migration.Split(good, d.Limits)
	if err != nil {
		return []error{err}
	}
	limit := d.MaxMutations
	if limit <= 0 {
		limit = 256
	}
	var errs []error
	dst := d.New()
	before, err := save(d, dst)
	if err != nil {
		return []error{err}
	}
	refuse := func(what string, b []byte) {
		if err := migration.Load(b, dst, d.Limits, nil); err == nil {
			errs = append(errs, fmt.Errorf("%s: accepted", what))
			dst = d.New()
			return
		}
		after, err := save(d, dst)
		if err != nil || !bytes.Equal(after, before) {
			errs = append(errs, fmt.Errorf("%s: the refused load changed the device", what))
			dst = d.New()
		}
	}
	step := max(1, len(good)/limit)
	for n := 0; n < len(good); n += step {
		refuse(fmt.Sprintf("truncated to %d bytes", n), good[:n])
	}
	for off := 0; off < len(good); off += step {
		b := bytes.Clone(good)
		b[off] ^= 0x20
		refuse(fmt.Sprintf("bit flip at byte %d", off), b)
	}
	build := func(ss []migration.Section) []byte {
		b, err := migration.Assemble(h, ss, d.Limits)
		if err != nil {
			errs = append(errs, err)
		}
		return b
	}
	specs := d.Busy().Sections()
	for i, s := range secs {
		dup := append(append([]migration.Section(nil), secs...), s)
		refuse("section "+s.Name+" twice", build(dup))
		for _, sp := range specs {
			if sp.Name == s.Name && (sp.Rule == nil || sp.Rule(h) == migration.Required) {
				drop := append(append([]migration.Section(nil), secs[:i]...), secs[i+1:]...)
				refuse("without section "+s.Name, build(drop))
			}
		}
	}
	unknown := migration.Section{Name: "zz-unknown-section", Payload: []byte{0x80}}
	unknown.Mandatory = true
	refuse("unknown mandatory section", build(append(append([]migration.Section(nil), secs...), unknown)))

	unknown.Mandatory = false
	rev := append([]migration.Section{unknown}, secs...)
	for i, j := 1, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	fresh := d.New()
	if err := migration.Load(build(rev), fresh, d.Limits, nil); err != nil {
		errs = append(errs, fmt.Errorf("reordered sections with an unknown optional one: %w", err))
	} else if b, _ := save(d, fresh); !bytes.Equal(b, good) {
		errs = append(errs, errors.New("reordered sections load to a different state"))
	}
	return errs
}

// header: another model and an unknown parameter are refused, the latter
// by name.
func header(d Device) []error {
	good, err := save(d, d.Busy())
	if err != nil {
		return []error{err}
	}
	h, secs, err := migration.Split(good, d.Limits)
	if err != nil {
		return []error{err}
	}
	var errs []error
	other := h
	other.Model = "example.org/devices/not-" + lastPart(h.Model)
	if b, err := migration.Assemble(other, secs, d.Limits); err == nil {
		if err := migration.Load(b, d.New(), d.Limits, nil); err == nil {
			errs = append(errs, errors.New("a stream of another model was accepted"))
		}
	}
	extra := h
	extra.Params = append(append([]migration.Param(nil), h.Params...), migration.Param{Name: "zz-unknown-param", Value: "1"})
	if b, err := migration.Assemble(extra, secs, d.Limits); err == nil {
		err := migration.Load(b, d.New(), d.Limits, nil)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("zz-unknown-param")) {
			errs = append(errs, fmt.Errorf("unknown parameter: %v, want a refusal naming it", err))
		}
	}
	return errs
}

func lastPart(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return s[i+1:]
		}
	}
	return s
}
