package e1000e

import (
	"testing"

	"e1000e-vfu/migration"
)

// BenchmarkStateSave saves an active NIC's whole state and reports its
// size (QEMU's own e1000e sends about 136 KiB).
func BenchmarkStateSave(b *testing.B) {
	n := busyNIC(b, -1)
	var buf []byte
	var err error
	b.ReportAllocs()
	for b.Loop() {
		buf, err = migration.Save(buf[:0], n, migration.Limits{})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "state-bytes")
}

// BenchmarkStateLoad checks and applies an active NIC's state.
func BenchmarkStateLoad(b *testing.B) {
	stream, err := migration.Save(nil, busyNIC(b, -1), migration.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	n := newStateNIC(b, -1)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		if err := migration.Load(stream, n, migration.Limits{}, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(stream)), "state-bytes")
}
