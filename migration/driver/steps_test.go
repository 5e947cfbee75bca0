package driver_test

import (
	"slices"
	"strings"
	"testing"

	"e1000e-vfu/e1000e"
	"e1000e-vfu/migration/driver"
)

// TestBothProtocolsTakeTheSameSteps migrates a running NIC through v2 and
// through v1 (with the data area mapped and through region accesses) and
// records the steps each transport was asked for: they are the same
// steps, in the same order, with pre-copy.
func TestBothProtocolsTakeTheSameSteps(t *testing.T) {
	want := []string{
		"startLogging", "resuming",
		"preCopy", "transfer", "dirtyPages", "dirtyPages",
		"beforeStop", "stopCopy", "transfer", "dirtyPages", "stopLogging",
		"resume", "stopSource", "close",
	}
	for _, c := range []struct {
		name, protocol string
		nic            e1000e.MigrationOptions
		opts           driver.Options
	}{
		{"v2", "v2", e1000e.MigrationOptions{}, driver.Options{}},
		{"v1-mmap", "v1", e1000e.MigrationOptions{V1: true, V1MMap: true}, driver.Options{}},
		{"v1-region", "v1", e1000e.MigrationOptions{V1: true}, driver.Options{NoMMap: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, dst := newSide(t, c.nic), newSide(t, c.nic)
			g := &guest{t: t, s: src}
			g.init()
			rep, steps, err := driver.MigrateRecorded(c.protocol, src.endpoint(), dst.endpoint(), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(steps, want) {
				t.Errorf("steps\n %v\nwant\n %v", steps, want)
			}
			if rep.Protocol != c.protocol || rep.PreCopyBytes == 0 || rep.StateBytes <= rep.PreCopyBytes {
				t.Errorf("%s moved %d bytes, %d in pre-copy: want both stages to move state", rep.Protocol, rep.StateBytes, rep.PreCopyBytes)
			}
		})
	}
}

// TestV1WithoutTheRegion: a server without the v1 region is refused
// before anything starts, and the error says which side and why.
func TestV1WithoutTheRegion(t *testing.T) {
	src, dst := newSide(t, e1000e.MigrationOptions{}), newSide(t, e1000e.MigrationOptions{})
	_, steps, err := driver.MigrateRecorded("v1", src.endpoint(), dst.endpoint(), driver.Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "driver: v1: source: ") {
		t.Fatalf("err = %v, want the source's region refused", err)
	}
	if len(steps) != 0 {
		t.Errorf("steps %v taken on a server without the region", steps)
	}
}
