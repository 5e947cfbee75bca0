package migration_test

import (
	"errors"
	"fmt"

	"e1000e-vfu/migration"
)

// counterState is a plain state struct: no pointers, channels or timers.
type counterState struct {
	Count uint32 `msgpack:"count"`
	Limit uint32 `msgpack:"limit"`
}

// Validate is called by Section.Decode: the device range-checks every value.
func (s *counterState) Validate() error {
	if s.Count > s.Limit {
		return fmt.Errorf("count %d above limit %d", s.Count, s.Limit)
	}
	return nil
}

// counter is a minimal Stateful device with one configuration section and
// one state section.
type counter struct{ st counterState }

func (c *counter) Model() string             { return "example.org/devices/counter" }
func (c *counter) Params() []migration.Param { return nil }
func (c *counter) Quiesce()                  {}
func (c *counter) Resume()                   {}
func (c *counter) SaveConfig(w *migration.SectionWriter) error {
	return w.Put("config", true, struct{}{})
}
func (c *counter) SaveState(w *migration.SectionWriter) error {
	return w.Put("counter", true, &c.st)
}
func (c *counter) Sections() []migration.SectionSpec {
	return []migration.SectionSpec{{Name: "config"}, {Name: "counter"}}
}

// BeginLoad is the compatibility check: this device has no parameters, so
// any listed parameter is unknown to it.
func (c *counter) BeginLoad(h migration.Header) (migration.Loader, error) {
	var errs []error
	for _, p := range h.Params {
		errs = append(errs, fmt.Errorf("unknown parameter %s", p.Name))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &counterLoader{dev: c}, nil
}

// counterLoader decodes into its own copy; only Apply touches the device.
type counterLoader struct {
	dev *counter
	st  counterState
}

func (l *counterLoader) DecodeSection(s migration.Section) error {
	switch s.Name {
	case "config":
		return s.Decode(&struct{}{})
	case "counter":
		return s.Decode(&l.st)
	}
	return fmt.Errorf("unexpected section %s", s.Name)
}
func (l *counterLoader) Validate() error { return nil }
func (l *counterLoader) Apply() error    { l.dev.st = l.st; return nil }

func Example() {
	src := &counter{st: counterState{Count: 3, Limit: 10}}
	stream, err := migration.Save(nil, src, migration.Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	dst := &counter{}
	if err := migration.Load(stream, dst, migration.Limits{}, nil); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%+v\n", dst.st)

	// A state that fails its range check is refused; dst keeps its state.
	bad := &counter{st: counterState{Count: 11, Limit: 10}}
	stream, _ = migration.Save(nil, bad, migration.Limits{})
	fmt.Println(migration.Load(stream, dst, migration.Limits{}, nil))
	fmt.Printf("%+v\n", dst.st)
	// Output:
	// {Count:3 Limit:10}
	// migration: section counter: count 11 above limit 10
	// {Count:3 Limit:10}
}
