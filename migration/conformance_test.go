package migration_test

import (
	"fmt"
	"strings"
	"testing"

	"e1000e-vfu/migration"
	"e1000e-vfu/migration/migrationtest"
)

func TestConformance(t *testing.T) {
	for _, n := range []int{0, 16} {
		t.Run(fmt.Sprintf("rx-filter-size=%d", n), func(t *testing.T) {
			migrationtest.Run(t, migrationtest.Device{
				New:  func() migration.Stateful { return migration.NewFakeDev(n, false, false) },
				Busy: func() migration.Stateful { return migration.NewFakeDev(n, true, false) },
			})
		})
	}
}

// The kit catches a loader that changes the device before the whole
// stream has been accepted.
func TestConformanceCatchesEagerLoader(t *testing.T) {
	errs := migrationtest.Check(migrationtest.Device{
		New:  func() migration.Stateful { return migration.NewFakeDev(0, false, true) },
		Busy: func() migration.Stateful { return migration.NewFakeDev(0, true, true) },
	})
	found := false
	for _, err := range errs {
		if strings.Contains(err.Error(), "changed the device") {
			found = true
		}
	}
	if !found {
		t.Fatalf("eager loader not caught; problems: %v", errs)
	}
}
