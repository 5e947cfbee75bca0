package vfiouser

import (
	"bytes"
	"syscall"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

func TestFeaturesWithoutMigration(t *testing.T) {
	leakcheck.FDs(t)
	_, cl := negotiated(t, newFakeDevice(t))
	_, err := cl.MigrationFlags()
	wantErrno(t, err, syscall.ENOTSUP)
	_, err = cl.SetMigrationState(device.MigStop)
	wantErrno(t, err, syscall.ENOTSUP)
	_, err = cl.MigDataRead(make([]byte, 16))
	wantErrno(t, err, syscall.ENOTSUP)
	wantErrno(t, cl.MigDataWrite([]byte{1}), syscall.ENOTSUP)
	ok, err := cl.ProbeFeature(FeatMigration, FeatureGet)
	if err != nil || ok {
		t.Fatalf("probe migration: %v %v", ok, err)
	}
	_, err = cl.DeviceFeature(77|FeatureGet, nil, 64)
	wantErrno(t, err, syscall.ENOTSUP)
}

// TestMigrationRoundTrip moves BAR0 from one device to another through
// the v2 protocol, as a migration driver would.
func TestMigrationRoundTrip(t *testing.T) {
	leakcheck.FDs(t)
	src := &fakeMigDevice{fakeDevice: newFakeDevice(t), state: device.MigRunning, chunkSz: 1000}
	dst := &fakeMigDevice{fakeDevice: newFakeDevice(t), state: device.MigRunning}
	for i := range src.mem[0] {
		src.mem[0][i] = byte(i * 7)
	}
	_, scl := negotiated(t, src)
	_, dcl := negotiated(t, dst)
	flags, err := scl.MigrationFlags()
	if err != nil || flags != device.MigFlagStopCopy|device.MigFlagPreCopy {
		t.Fatalf("flags %#x %v", flags, err)
	}
	for _, f := range []uint32{FeatMigration, FeatMigDeviceState, FeatMigDataSize} {
		if ok, err := scl.ProbeFeature(f, FeatureGet); !ok || err != nil {
			t.Fatalf("probe %d: %v %v", f, ok, err)
		}
	}
	if ok, _ := scl.ProbeFeature(FeatMigration, FeatureSet); ok {
		t.Fatal("MIGRATION SET probed as supported")
	}
	if s, err := scl.SetMigrationState(device.MigStopCopy); err != nil || s != device.MigStopCopy {
		t.Fatalf("stop copy: %v %v", s, err)
	}
	if n, err := scl.MigDataSize(); err != nil || n != fakeBAR0Size {
		t.Fatalf("data size %d %v", n, err)
	}
	if _, err := dcl.SetMigrationState(device.MigResuming); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 40000)
	total := 0
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("migration data does not end")
		}
		n, err := scl.MigDataRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			if err := dcl.MigDataWrite(buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
		total += n
		if n < len(buf) {
			break
		}
	}
	if total != fakeBAR0Size {
		t.Fatalf("moved %d bytes", total)
	}
	if n, err := scl.MigDataRead(buf); err != nil || n != 0 {
		t.Fatalf("read after the end: %d %v", n, err)
	}
	if s, err := dcl.SetMigrationState(device.MigStop); err != nil || s != device.MigStop {
		t.Fatalf("resuming -> stop: %v %v", s, err)
	}
	if s, err := dcl.MigrationState(); err != nil || s != device.MigStop {
		t.Fatalf("state %v %v", s, err)
	}
	if !bytes.Equal(dst.peek(0, 0, fakeBAR0Size), src.peek(0, 0, fakeBAR0Size)) {
		t.Fatal("destination BAR0 differs")
	}
	// Errors from the device and the message layer.
	dst.failWith(syscall.EIO)
	_, err = dcl.SetMigrationState(device.MigRunning)
	wantErrno(t, err, syscall.EIO)
	_, err = dcl.SetMigrationState(9)
	wantErrno(t, err, syscall.EINVAL)
	_, err = scl.DeviceFeature(FeatMigration|FeatureGet|FeatureSet, nil, 64)
	wantErrno(t, err, syscall.EINVAL)
	_, err = scl.DeviceFeature(FeatMigration|FeatureGet, nil, 8) // argsz too small
	wantErrno(t, err, syscall.EINVAL)
	_, err = scl.DeviceFeature(FeatMigration|FeatureGet|1<<20, nil, 64)
	wantErrno(t, err, syscall.EINVAL)
	var q [MigDataSize]byte
	MigData{Argsz: 8 + 2<<20, Size: 2 << 20}.Encode(q[:])
	_, err = scl.Call(CmdMigDataRead, q[:], nil)
	wantErrno(t, err, syscall.EINVAL)
	MigData{Argsz: 8, Size: 100}.Encode(q[:])
	_, err = scl.Call(CmdMigDataRead, q[:], nil) // argsz cannot hold the data
	wantErrno(t, err, syscall.EINVAL)
	_, err = scl.Call(CmdMigDataWrite, append(q[:], 1, 2), nil) // size disagrees
	wantErrno(t, err, syscall.EINVAL)
}
