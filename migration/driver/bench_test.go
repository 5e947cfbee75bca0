package driver_test

import (
	"testing"

	"e1000e-vfu/e1000e"
	"e1000e-vfu/migration/driver"
)

// benchMigrate migrates an active NIC (rings programmed, frames waiting in
// its receive FIFO) back and forth between two servers and reports the
// state size and the downtime.
func benchMigrate(b *testing.B, opts e1000e.MigrationOptions, migrate migrateFunc, dopts driver.Options) {
	sides := [2]*side{newSide(b, opts), newSide(b, opts)}
	g := &guest{t: b, s: sides[0]}
	g.init()
	mac := sides[0].nic.MAC()
	for i := 0; i < 80; i++ {
		sides[0].nic.Receive(frame(mac, uint32(i), 1000))
	}
	var rep driver.Report
	var down int64
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		var err error
		rep, err = migrate(sides[i%2].endpoint(), sides[(i+1)%2].endpoint(), dopts)
		if err != nil {
			b.Fatal(err)
		}
		down += int64(rep.Downtime)
		i++
	}
	b.ReportMetric(float64(rep.StateBytes), "state-bytes")
	b.ReportMetric(float64(down)/float64(i), "downtime-ns/op")
}

func BenchmarkMigrateV2(b *testing.B) {
	benchMigrate(b, e1000e.MigrationOptions{}, driver.MigrateV2, driver.Options{})
}

func BenchmarkMigrateV1MMap(b *testing.B) {
	benchMigrate(b, e1000e.MigrationOptions{V1: true, V1MMap: true}, driver.MigrateV1, driver.Options{})
}

func BenchmarkMigrateV1RegionAccess(b *testing.B) {
	benchMigrate(b, e1000e.MigrationOptions{V1: true}, driver.MigrateV1, driver.Options{})
}
