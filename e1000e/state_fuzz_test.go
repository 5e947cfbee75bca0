package e1000e

import (
	"bytes"
	"testing"

	"e1000e-vfu/migration"
)

// fuzzSections are the sections FuzzStateSection feeds, by the selector's
// value.
var fuzzSections = []string{secConfig, secRegisters, secNVM, secPHY, secInterrupts, secRXRing, secTXRing,
	secTXInflight, secTXContext, secFilters, secLink, secStats, secPCI, secRXFIFO}

// FuzzStateLoad loads damaged whole streams into a quiesced NIC: a clean
// error and an unchanged NIC, or a state that saves back to a stream that
// loads again.
func FuzzStateLoad(f *testing.F) {
	busy, err := migration.Save(nil, busyNIC(f, -1), migration.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(busy)
	v1, err := migration.Save(nil, busyNIC(f, 0), migration.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v1)
	f.Add(busy[:len(busy)/2])
	n := newStateNIC(f, -1)
	before, err := migration.Save(nil, n, migration.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := migration.Load(b, n, migration.Limits{}, nil); err != nil {
			after, err := migration.Save(nil, n, migration.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, before) {
				t.Fatalf("a refused load changed the NIC")
			}
			return
		}
		// Accepted: the NIC's state must save and load again, and go
		// back to where it was for the next input.
		again, err := migration.Save(nil, n, migration.Limits{})
		if err != nil {
			t.Fatalf("an accepted state does not save: %v", err)
		}
		if err := migration.Load(again, n, migration.Limits{}, nil); err != nil {
			t.Fatalf("an accepted state does not load again: %v", err)
		}
		if err := migration.Load(before, n, migration.Limits{}, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzStateSection feeds arbitrary payloads to each section decoder, as
// mandatory and as optional sections: no panic, and decoding never touches
// the NIC.
func FuzzStateSection(f *testing.F) {
	busy, err := migration.Save(nil, busyNIC(f, -1), migration.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	_, secs, err := migration.Split(busy, migration.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range secs {
		for i, name := range fuzzSections {
			if name == s.Name {
				f.Add(uint8(i), s.Mandatory, s.Payload)
			}
		}
	}
	n := newStateNIC(f, -1)
	before, err := migration.Save(nil, n, migration.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	h := migration.Header{Model: n.Model(), Params: n.Params()}
	f.Fuzz(func(t *testing.T, sel uint8, mandatory bool, payload []byte) {
		ld, err := n.BeginLoad(h)
		if err != nil {
			t.Fatal(err)
		}
		// The stream reader checks payloads as msgpack before a loader
		// sees them; do the same, through a one-section stream.
		name := fuzzSections[int(sel)%len(fuzzSections)]
		b, err := migration.Assemble(h, []migration.Section{{Name: name, Mandatory: mandatory, Payload: payload}}, migration.Limits{})
		if err != nil {
			return
		}
		_, secs, err := migration.Split(b, migration.Limits{})
		if err != nil || len(secs) != 1 {
			return
		}
		_ = ld.DecodeSection(secs[0])
		after, err := migration.Save(nil, n, migration.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(after, before) {
			t.Fatal("decoding a section changed the NIC")
		}
	})
}
