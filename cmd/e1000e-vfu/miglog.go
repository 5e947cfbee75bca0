package main

import (
	"log/slog"
	"sync/atomic"
	"time"

	"e1000e-vfu/device"
)

// migrationLog reports a served device's migration to the operator: each
// state change the client asks for, its outcome, and the device-state bytes
// that moved since the previous change.
type migrationLog struct {
	device.Migratable
	log         *slog.Logger
	read, wrote atomic.Uint64
}

// SetMigrationState also logs when the change began, to the microsecond,
// and how long the device took: a migration's downtime is the sum of such
// steps on two servers and QEMU's work between them, and the lines of both
// servers, on one host's clock, show where it goes.
func (m *migrationLog) SetMigrationState(target device.MigrationState) error {
	from := m.Migratable.MigrationState()
	began := time.Now()
	err := m.Migratable.SetMigrationState(target)
	took := time.Since(began)
	attrs := []any{"from", from.String(), "to", target.String()}
	if n := m.read.Swap(0); n > 0 {
		attrs = append(attrs, "state_bytes_sent", n)
	}
	if n := m.wrote.Swap(0); n > 0 {
		attrs = append(attrs, "state_bytes_received", n)
	}
	attrs = append(attrs, "began", began.Format(time.RFC3339Nano), "took", took)
	if err != nil {
		m.log.Warn("migration: state change refused", append(attrs, "now", m.Migratable.MigrationState().String(), "err", err)...)
		return err
	}
	if from != target {
		m.log.Info("migration: state change", attrs...)
	}
	return nil
}

func (m *migrationLog) ReadMigrationData(p []byte) (int, error) {
	n, err := m.Migratable.ReadMigrationData(p)
	m.read.Add(uint64(max(n, 0)))
	return n, err
}

func (m *migrationLog) WriteMigrationData(p []byte) error {
	err := m.Migratable.WriteMigrationData(p)
	if err == nil {
		m.wrote.Add(uint64(len(p)))
	}
	return err
}
