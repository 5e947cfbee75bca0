package migration

import (
	"fmt"
	"log/slog"
)

// Stateful is what a device implements to have its state migrated.
//
// Saving is split in two so that migration v2's PRE_COPY can send the
// configuration while the device still runs and the destination can refuse
// early. Loading is two-phase: BeginLoad returns a Loader that decodes and
// validates every section into plain state structs without touching the
// device; only when the whole stream has been accepted is Apply called.
type Stateful interface {
	// Model is the device model string, e.g. "qemu.org/devices/e1000e".
	Model() string
	// Params is the device's parameter list: the parameters whose values
	// differ from their off value.
	Params() []Param
	// Sections lists every section this build understands, with the rule
	// that says, from the stream's parameters, whether it must appear.
	Sections() []SectionSpec
	// SaveConfig writes the sections that are fixed for the life of the
	// device (the "config" section); it may be called while it runs.
	SaveConfig(w *SectionWriter) error
	// SaveState writes every other section. It is called with the device
	// quiesced, and also while it runs to estimate the state's size; the
	// device serialises with its own goroutines.
	SaveState(w *SectionWriter) error
	// BeginLoad is the compatibility callback: it sees the source's header
	// (model already matched) before any section is decoded and refuses a
	// configuration it cannot take, naming each offending parameter.
	BeginLoad(h Header) (Loader, error)
	// Quiesce stops the device: once it returns, no DMA and no interrupt
	// until Resume. Register accesses are still served.
	Quiesce()
	Resume()
}

// Loader collects one incoming state.
type Loader interface {
	// DecodeSection decodes and range-checks one known section into plain
	// state; it must not change the device.
	DecodeSection(s Section) error
	// Validate checks what spans sections, once all have been decoded.
	Validate() error
	// Apply installs the decoded state in the (quiesced) device. It is
	// called only after Validate succeeded and must not fail on state that
	// passed it.
	Apply() error
}

// Presence says whether a section must, may or must not appear.
type Presence int

// Presence values.
const (
	Optional Presence = iota
	Required
	Forbidden
)

func (p Presence) String() string {
	switch p {
	case Optional:
		return "optional"
	case Required:
		return "required"
	case Forbidden:
		return "forbidden"
	}
	return fmt.Sprintf("Presence(%d)", int(p))
}

// SectionSpec describes one section a device understands.
type SectionSpec struct {
	Name string
	// Rule decides, from the stream header's parameters, whether the
	// section must, may or must not appear; nil means Always(Required).
	Rule func(h Header) Presence
}

// Always returns a rule that ignores the parameters.
func Always(p Presence) func(Header) Presence {
	return func(Header) Presence { return p }
}

// When returns a rule that gives then when the named parameter is present
// in the header (that is, not at its off value) and otherwise else.
func When(param string, then, otherwise Presence) func(Header) Presence {
	return func(h Header) Presence {
		if _, ok := h.Param(param); ok {
			return then
		}
		return otherwise
	}
}

// Save produces a whole stream for dev: header, config, state, end marker
// and checksum, appended to dst.
func Save(dst []byte, dev Stateful, lim Limits) ([]byte, error) {
	b, err := saveHead(dst, dev, lim)
	if err != nil {
		return dst, err
	}
	return saveTail(b, dev, lim)
}

// saveHead appends the header and the configuration sections.
func saveHead(dst []byte, dev Stateful, lim Limits) ([]byte, error) {
	b, err := AppendHeader(dst, dev.Model(), dev.Params(), lim)
	if err != nil {
		return dst, err
	}
	w := NewSectionWriter(b, lim)
	if err := dev.SaveConfig(w); err != nil {
		return dst, fmt.Errorf("migration: saving configuration: %w", err)
	}
	return w.Bytes(), nil
}

// saveTail appends the state sections and closes the stream that starts at
// stream[0].
func saveTail(stream []byte, dev Stateful, lim Limits) ([]byte, error) {
	w := NewSectionWriter(stream, lim)
	if err := dev.SaveState(w); err != nil {
		return stream, fmt.Errorf("migration: saving state: %w", err)
	}
	out := AppendEnd(w.Bytes())
	if l := lim.withDefaults(); len(out) > l.MaxStreamSize {
		return stream, fmt.Errorf("migration: state of %d bytes exceeds the stream limit of %d", len(out), l.MaxStreamSize)
	}
	return out, nil
}

// CheckHeader parses the header at the start of b and runs the model check
// and dev's compatibility callback. It returns ErrShort while the header is
// incomplete.
func CheckHeader(b []byte, dev Stateful, lim Limits) (Header, int, Loader, error) {
	h, n, err := ParseHeader(b, lim)
	if err != nil {
		return Header{}, 0, nil, err
	}
	if h.Model != dev.Model() {
		return Header{}, 0, nil, fmt.Errorf("migration: stream is for model %s, this device is %s", h.Model, dev.Model())
	}
	ld, err := dev.BeginLoad(h)
	if err != nil {
		return Header{}, 0, nil, fmt.Errorf("migration: incompatible configuration: %w", err)
	}
	if ld == nil {
		return Header{}, 0, nil, fmt.Errorf("migration: device returned no loader")
	}
	return h, n, ld, nil
}

// Load checks a whole stream and, only if all of it is acceptable, applies
// it to dev. On any error dev is unchanged. The steps, in order: header and
// model; the compatibility callback; framing, limits and checksum; each
// section against dev's specs (unknown mandatory: refused, unknown
// optional: skipped and logged, forbidden by a parameter: refused), its
// msgpack checked for lengths and depth, then decoded and validated;
// required sections present; cross-section validation; apply.
func Load(b []byte, dev Stateful, lim Limits, log *slog.Logger) error {
	lim = lim.withDefaults()
	if len(b) > lim.MaxStreamSize {
		return fmt.Errorf("migration: stream of %d bytes exceeds the limit of %d", len(b), lim.MaxStreamSize)
	}
	h, n, ld, err := CheckHeader(b, dev, lim)
	if err == ErrShort {
		return fmt.Errorf("migration: stream truncated in its header")
	}
	if err != nil {
		return err
	}
	return loadBody(b, n, h, ld, dev, lim, log)
}

func loadBody(b []byte, hdrLen int, h Header, ld Loader, dev Stateful, lim Limits, log *slog.Logger) error {
	if err := checkBody(b, hdrLen, h, ld, dev, lim, log); err != nil {
		return err
	}
	if err := ld.Apply(); err != nil {
		return &ApplyError{Err: err}
	}
	return nil
}

// checkBody decodes and validates every section of a stream whose header
// was accepted, into ld, without applying anything to dev.
func checkBody(b []byte, hdrLen int, h Header, ld Loader, dev Stateful, lim Limits, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secs, err := splitStream(b, hdrLen, lim)
	if err != nil {
		return err
	}
	specs := dev.Sections()
	seen := make([]bool, len(specs))
	for _, s := range secs {
		idx := -1
		for i := range specs {
			if specs[i].Name == s.name {
				idx = i
				break
			}
		}
		if idx < 0 {
			if s.mandatory {
				return fmt.Errorf("migration: unknown mandatory section %s", s.name)
			}
			log.Info("migration: skipping unknown optional section", "section", s.name, "bytes", len(s.payload))
			continue
		}
		rule := presence(specs[idx], h)
		if rule == Forbidden {
			return fmt.Errorf("migration: section %s is not allowed with this configuration", s.name)
		}
		if err := checkMsgpack(s.payload, lim.MaxPayloadDepth); err != nil {
			return fmt.Errorf("migration: section %s: %w", s.name, err)
		}
		if err := ld.DecodeSection(Section{Name: s.name, Mandatory: s.mandatory, Payload: s.payload}); err != nil {
			return fmt.Errorf("migration: %w", err)
		}
		seen[idx] = true
	}
	for i, sp := range specs {
		if !seen[i] && presence(sp, h) == Required {
			return fmt.Errorf("migration: required section %s is missing", sp.Name)
		}
	}
	if err := ld.Validate(); err != nil {
		return fmt.Errorf("migration: invalid state: %w", err)
	}
	return nil
}

func presence(sp SectionSpec, h Header) Presence {
	if sp.Rule == nil {
		return Required
	}
	return sp.Rule(h)
}

// ApplyError reports that a Loader's Apply failed after validation passed:
// the device may be partly changed, so a Machine goes to ERROR.
type ApplyError struct{ Err error }

func (e *ApplyError) Error() string { return "migration: applying state: " + e.Err.Error() }
func (e *ApplyError) Unwrap() error { return e.Err }
