package e1000e

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"e1000e-vfu/migration"
)

var updateStreams = flag.Bool("update-streams", false, "rewrite the sample state streams in testdata")

// TestStateSampleStreams keeps one sample stream per model version: each
// must keep loading, and must save back to the same bytes, so a change of
// the state's representation cannot slip in without a new parameter
// (FORMAT.md, compatibility rules).
func TestStateSampleStreams(t *testing.T) {
	for _, c := range []struct {
		file string
		cfg  Config
	}{
		{"state-e1000e-version1.bin", Config{}},
		{"state-e1000e-version2.bin", Config{RXFilterSize: -1}},
		{"state-e1000e-version3.bin", Config{RXFilterSize: -1, Caps82574L: true}},
	} {
		path := filepath.Join("testdata", c.file)
		if *updateStreams {
			b, err := migration.Save(nil, busyNICConfig(t, c.cfg), migration.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := newStateNICConfig(t, c.cfg)
		if err := migration.Load(want, n, migration.Limits{}, nil); err != nil {
			t.Errorf("%s no longer loads: %v", c.file, err)
			continue
		}
		got, err := migration.Save(nil, n, migration.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s saves back to different bytes (%d, was %d): the state representation changed; put the change behind a model parameter, or rewrite the samples with -update-streams if no stream was ever released", c.file, len(got), len(want))
		}
	}
}
