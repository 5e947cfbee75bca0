package main

import (
	"bytes"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"e1000e-vfu/device"
)

type fakeMig struct {
	state device.MigrationState
	data  []byte
}

func (f *fakeMig) MigrationFlags() uint64                { return device.MigFlagStopCopy }
func (f *fakeMig) MigrationState() device.MigrationState { return f.state }
func (f *fakeMig) SetMigrationState(t device.MigrationState) error {
	if t == device.MigPreCopyP2P {
		return syscall.EINVAL
	}
	f.state = t
	return nil
}
func (f *fakeMig) ReadMigrationData(p []byte) (int, error) {
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}
func (f *fakeMig) WriteMigrationData(p []byte) error  { return nil }
func (f *fakeMig) MigrationDataSize() (uint64, error) { return uint64(len(f.data)), nil }

func TestMigrationLogReportsStatesAndBytes(t *testing.T) {
	var buf bytes.Buffer
	f := &fakeMig{state: device.MigRunning, data: make([]byte, 1000)}
	m := &migrationLog{Migratable: f, log: slog.New(slog.NewTextHandler(&buf, nil))}
	if err := m.SetMigrationState(device.MigStopCopy); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 600)
	m.ReadMigrationData(p)
	m.ReadMigrationData(p)
	if err := m.SetMigrationState(device.MigStop); err != nil {
		t.Fatal(err)
	}
	m.WriteMigrationData(make([]byte, 77))
	if err := m.SetMigrationState(device.MigPreCopyP2P); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("err = %v", err)
	}
	out := buf.String()
	if !regexp.MustCompile(`to=STOP_COPY began=\d{4}-\d\d-\d\dT[0-9:.]+\S* took=\d`).MatchString(out) {
		t.Errorf("the state change has no began=TIME took=DURATION:\n%s", out)
	}
	for _, want := range []string{
		"from=RUNNING to=STOP_COPY",
		"from=STOP_COPY to=STOP state_bytes_sent=1000",
		"state change refused",
		"to=PRE_COPY_P2P state_bytes_received=77 ",
		"now=STOP",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
