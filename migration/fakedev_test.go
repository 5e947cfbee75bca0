package migration

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// fakeModel is the model of the test device: a small NIC-like state with a
// version-2 feature (an RX filter table) behind the rx-filter-size
// parameter, the shape migration-compat.md describes.
const fakeModel = "example.org/devices/fakenic"

type fakeConfig struct {
	RxFilterSize int `msgpack:"rx-filter-size"`
}

type fakeRegs struct {
	Ctrl   uint32 `msgpack:"ctrl"`
	Status uint32 `msgpack:"status"`
	IMS    uint32 `msgpack:"ims"`
	ITR    uint32 `msgpack:"itr"`
}

type fakeRing struct {
	Base uint64 `msgpack:"base"`
	Len  uint32 `msgpack:"len"` // descriptors
	Head uint32 `msgpack:"head"`
	Tail uint32 `msgpack:"tail"`
}

func (r *fakeRing) Validate() error {
	if r.Len%8 != 0 || r.Len > 4096 {
		return fmt.Errorf("ring length %d is not a multiple of 8 up to 4096", r.Len)
	}
	if r.Len == 0 {
		if r.Head != 0 || r.Tail != 0 {
			return errors.New("empty ring with head or tail set")
		}
		return nil
	}
	if err := checkRange("head", uint64(r.Head), 0, uint64(r.Len-1)); err != nil {
		return err
	}
	return checkRange("tail", uint64(r.Tail), 0, uint64(r.Len-1))
}

// checkRange returns an error naming field when v is outside [lo, hi].
func checkRange(field string, v, lo, hi uint64) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s = %d is outside [%d, %d]", field, v, lo, hi)
	}
	return nil
}

type fakeFilters struct {
	MACs []uint64 `msgpack:"macs"`
}

type fakeStats struct {
	RxPackets uint64 `msgpack:"rx-packets"`
	TxPackets uint64 `msgpack:"tx-packets"`
}

// fakeState is everything the fake device holds; a plain value, so tests
// compare it with ==-like checks through fmt.
type fakeState struct {
	Regs    fakeRegs
	RX      fakeRing
	Filters fakeFilters
	Stats   fakeStats
	Blob    []byte // optional bulk data, for the v1 loop benchmark
}

type fakeDev struct {
	mu           sync.Mutex
	filterSize   int // the device's configuration: 0 is version 1
	knowsFilters bool
	st           fakeState
	quiesced     bool
	quiesceCalls int
	resumeCalls  int
	applyCalls   int
	failApply    bool
	// eager makes the loader change the device while decoding, the bug
	// the two-phase load exists to prevent; the conformance kit must
	// catch it.
	eager bool
}

// newFakeDev returns a device configured with rx-filter-size n. A device
// with knowsFilters false is a build from before the parameter existed.
func newFakeDev(n int, knowsFilters bool) *fakeDev {
	return &fakeDev{filterSize: n, knowsFilters: knowsFilters}
}

func (d *fakeDev) Model() string { return fakeModel }

func (d *fakeDev) Params() []Param {
	if d.filterSize == 0 {
		return nil
	}
	return []Param{{Name: "rx-filter-size", Value: strconv.Itoa(d.filterSize)}}
}

func (d *fakeDev) Sections() []SectionSpec {
	s := []SectionSpec{
		{Name: "config"},
		{Name: "registers"},
		{Name: "rx-ring"},
		{Name: "stats", Rule: Always(Optional)},
		{Name: "blob", Rule: Always(Optional)},
	}
	if d.knowsFilters {
		s = append(s, SectionSpec{Name: "filters", Rule: When("rx-filter-size", Required, Forbidden)})
	}
	return s
}

func (d *fakeDev) SaveConfig(w *SectionWriter) error {
	return w.Put("config", true, fakeConfig{RxFilterSize: d.filterSize})
}

func (d *fakeDev) SaveState(w *SectionWriter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := w.Put("registers", true, &d.st.Regs); err != nil {
		return err
	}
	if err := w.Put("rx-ring", true, &d.st.RX); err != nil {
		return err
	}
	if d.filterSize > 0 {
		if err := w.Put("filters", true, &d.st.Filters); err != nil {
			return err
		}
	}
	if err := w.Put("stats", false, &d.st.Stats); err != nil {
		return err
	}
	if len(d.st.Blob) > 0 {
		return w.Put("blob", false, d.st.Blob)
	}
	return nil
}

// BeginLoad is the compatibility check of migration-compat rule 7: every
// source parameter known and equal to ours, and every parameter of ours
// that the source does not list at its off value. It reports every
// failure.
func (d *fakeDev) BeginLoad(h Header) (Loader, error) {
	var errs []error
	for _, p := range h.Params {
		switch {
		case p.Name != "rx-filter-size" || !d.knowsFilters:
			errs = append(errs, fmt.Errorf("unknown parameter %s=%s", p.Name, p.Value))
		case p.Value != strconv.Itoa(d.filterSize):
			errs = append(errs, fmt.Errorf("source has %s=%s, this device has %s=%d", p.Name, p.Value, p.Name, d.filterSize))
		}
	}
	if _, ok := h.Param("rx-filter-size"); !ok && d.filterSize != 0 {
		errs = append(errs, fmt.Errorf("source has rx-filter-size=0 (off), this device has rx-filter-size=%d", d.filterSize))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &fakeLoader{d: d}, nil
}

func (d *fakeDev) Quiesce() {
	d.mu.Lock()
	d.quiesced = true
	d.quiesceCalls++
	d.mu.Unlock()
}

func (d *fakeDev) Resume() {
	d.mu.Lock()
	d.quiesced = false
	d.resumeCalls++
	d.mu.Unlock()
}

func (d *fakeDev) state() fakeState {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.st
	s.Filters.MACs = append([]uint64(nil), s.Filters.MACs...)
	s.Blob = append([]byte(nil), s.Blob...)
	return s
}

type fakeLoader struct {
	d  *fakeDev
	st fakeState
}

func (l *fakeLoader) DecodeSection(s Section) error {
	var err error
	switch s.Name {
	case "config":
		var c fakeConfig
		if err = s.Decode(&c); err == nil && c.RxFilterSize != l.d.filterSize {
			err = fmt.Errorf("config: rx-filter-size %d, device has %d", c.RxFilterSize, l.d.filterSize)
		}
	case "registers":
		err = s.Decode(&l.st.Regs)
		if l.d.eager {
			l.d.mu.Lock()
			l.d.st.Regs = l.st.Regs
			l.d.mu.Unlock()
		}
	case "rx-ring":
		err = s.Decode(&l.st.RX)
	case "filters":
		if err = s.Decode(&l.st.Filters); err == nil && len(l.st.Filters.MACs) > l.d.filterSize {
			err = fmt.Errorf("filters: %d entries, table holds %d", len(l.st.Filters.MACs), l.d.filterSize)
		}
	case "stats":
		err = s.Decode(&l.st.Stats)
	case "blob":
		err = s.Decode(&l.st.Blob)
	default:
		err = fmt.Errorf("section %s not expected", s.Name)
	}
	return err
}

func (l *fakeLoader) Validate() error {
	if l.st.Regs.IMS&^0x1ffffff != 0 {
		return fmt.Errorf("IMS %#x has reserved bits", l.st.Regs.IMS)
	}
	return nil
}

func (l *fakeLoader) Apply() error {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	if l.d.failApply {
		return errors.New("injected apply failure")
	}
	l.d.st = l.st
	l.d.applyCalls++
	return nil
}

// busyState is a typical state for tests: every section populated.
func busyState(filters int) fakeState {
	s := fakeState{
		Regs:  fakeRegs{Ctrl: 0x40140241, Status: 0x80080783, IMS: 0x1500009d, ITR: 500},
		RX:    fakeRing{Base: 0x1_2345_6000, Len: 256, Head: 17, Tail: 16},
		Stats: fakeStats{RxPackets: 123456, TxPackets: 654321},
	}
	s.Regs.IMS &= 0x1ffffff
	for i := 0; i < filters; i++ {
		s.Filters.MACs = append(s.Filters.MACs, 0x5254_0012_3400+uint64(i))
	}
	return s
}
