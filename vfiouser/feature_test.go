package vfiouser

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

// featureRequest builds a raw DEVICE_FEATURE payload.
func featureRequest(argsz, flags uint32, data []byte) []byte {
	p := make([]byte, FeatureSize, FeatureSize+len(data))
	Feature{Argsz: argsz, Flags: flags}.Encode(p)
	return append(p, data...)
}

func migStateData(s device.MigrationState) []byte {
	var d [MigStateSize]byte
	le.PutUint32(d[0:], uint32(s))
	le.PutUint32(d[4:], noDataFD)
	return d[:]
}

// Every SET and PROBE the server takes is answered with the request payload
// itself, byte for byte (argsz, flags and data), as the specification asks;
// the SET has still done its work.
func TestFeatureSetAndProbeEchoTheRequest(t *testing.T) {
	leakcheck.FDs(t)
	dev := &fakeMigDevice{fakeDevice: newFakeDevice(t), state: device.MigRunning}
	_, cl := negotiated(t, dev)
	mem, err := NewMemory(16 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := cl.Map(0x100000, mem, 0, 16*4096, DMAFlagRead|DMAFlagWrite); err != nil {
		t.Fatal(err)
	}
	start := LoggingStart{PageSize: 4096, Ranges: []LoggingRange{{IOVA: 0x100000, Length: 16 * 4096}}}.Encode(nil)
	var report [LoggingReportSize]byte
	LoggingReport{IOVA: 0x100000, Length: 16 * 4096, PageSize: 4096}.Encode(report[:])
	for _, tc := range []struct {
		name  string
		req   []byte
		after func() error // checks that a SET took effect
	}{
		{name: "probe MIGRATION get", req: featureRequest(FeatureSize, FeatMigration|FeatureGet|FeatureProbe, nil)},
		// A probe may carry data and an argsz larger than itself: all of
		// it comes back.
		{name: "probe MIGRATION get with data", req: featureRequest(64, FeatMigration|FeatureGet|FeatureProbe, []byte{1, 2, 3, 4, 5, 6, 7, 8})},
		{name: "probe MIG_DEVICE_STATE get+set", req: featureRequest(FeatureSize, FeatMigDeviceState|FeatureGet|FeatureSet|FeatureProbe, nil)},
		{name: "probe MIG_DATA_SIZE get", req: featureRequest(FeatureSize+8, FeatMigDataSize|FeatureGet|FeatureProbe, nil)},
		{name: "probe DMA_LOGGING_START set", req: featureRequest(FeatureSize, FeatDMALoggingStart|FeatureSet|FeatureProbe, nil)},
		{name: "probe DMA_LOGGING_STOP set", req: featureRequest(FeatureSize, FeatDMALoggingStop|FeatureSet|FeatureProbe, nil)},
		{name: "probe DMA_LOGGING_REPORT get", req: featureRequest(FeatureSize+LoggingReportSize, FeatDMALoggingRep|FeatureGet|FeatureProbe, report[:])},
		{
			name: "set MIG_DEVICE_STATE STOP",
			req:  featureRequest(FeatureSize+MigStateSize, FeatMigDeviceState|FeatureSet, migStateData(device.MigStop)),
			after: func() error {
				if s := dev.MigrationState(); s != device.MigStop {
					return fmt.Errorf("device in %d", s)
				}
				return nil
			},
		},
		{
			// argsz is the largest reply accepted; the echo keeps it.
			name: "set MIG_DEVICE_STATE RUNNING, large argsz",
			req:  featureRequest(256, FeatMigDeviceState|FeatureSet, migStateData(device.MigRunning)),
			after: func() error {
				if s := dev.MigrationState(); s != device.MigRunning {
					return fmt.Errorf("device in %d", s)
				}
				return nil
			},
		},
		{
			name: "set DMA_LOGGING_START",
			req:  featureRequest(uint32(FeatureSize+len(start)), FeatDMALoggingStart|FeatureSet, start),
			after: func() error {
				if !loggingOn(cl) {
					return fmt.Errorf("logging is off")
				}
				return nil
			},
		},
		{
			name: "set DMA_LOGGING_STOP",
			req:  featureRequest(FeatureSize, FeatDMALoggingStop|FeatureSet, nil),
			after: func() error {
				if loggingOn(cl) {
					return fmt.Errorf("logging is on")
				}
				return nil
			},
		},
		{
			name: "set DMA_LOGGING_START at 16 KiB",
			req: featureRequest(FeatureSize+LoggingStartSize, FeatDMALoggingStart|FeatureSet,
				LoggingStart{PageSize: 16384}.Encode(nil)),
		},
	} {
		r, err := cl.Call(CmdDeviceFeature, tc.req, nil)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !bytes.Equal(r.Payload, tc.req) {
			t.Errorf("%s: reply payload\n%x\nwant the request\n%x", tc.name, r.Payload, tc.req)
		}
		if tc.after != nil {
			if err := tc.after(); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	}

	// A GET still answers with the feature's data, argsz its size.
	r, err := cl.Call(CmdDeviceFeature, featureRequest(64, FeatMigration|FeatureGet, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := featureRequest(FeatureSize+8, FeatMigration|FeatureGet, []byte{byte(dev.MigrationFlags()), 0, 0, 0, 0, 0, 0, 0})
	if !bytes.Equal(r.Payload, want) {
		t.Errorf("GET MIGRATION: %x, want %x", r.Payload, want)
	}
}

// loggingOn tells from the server whether dirty logging is on: a report is
// refused while it is off.
func loggingOn(c *Client) bool {
	_, err := c.DMALoggingReport(0x100000, 4096, 4096)
	return err == nil
}

// A page finer than the table's cannot be echoed truthfully: refused, and
// logging stays off.
func TestFeatureLoggingStartRefusesFinePages(t *testing.T) {
	leakcheck.FDs(t)
	_, cl := negotiated(t, &fakeMigDevice{fakeDevice: newFakeDevice(t)})
	_, err := cl.DMALoggingStart(512, nil)
	wantErrno(t, err, syscall.EINVAL)
	if pg, err := cl.DMALoggingStart(4096, nil); err != nil || pg != 4096 {
		t.Fatalf("start at 4 KiB after a refusal: %d %v", pg, err)
	}
}

// TestFeatureTable walks every feature number a probe can name and
// compares the server's answers with what the specification's features
// the server documents (README) offer: GET and SET as listed, migration
// features only for a device that migrates, nothing else.
func TestFeatureTable(t *testing.T) {
	type methods struct{ get, set bool }
	offered := map[uint32]methods{
		FeatMigration:       {get: true},
		FeatMigDeviceState:  {get: true, set: true},
		FeatDMALoggingStart: {set: true},
		FeatDMALoggingStop:  {set: true},
		FeatDMALoggingRep:   {get: true},
		FeatMigDataSize:     {get: true},
	}
	migration := map[uint32]bool{FeatMigration: true, FeatMigDeviceState: true, FeatMigDataSize: true}
	for _, migrates := range []bool{false, true} {
		var dev device.Device = newFakeDevice(t)
		if migrates {
			dev = &fakeMigDevice{fakeDevice: newFakeDevice(t), state: device.MigRunning}
		}
		_, cl := negotiated(t, dev)
		for feat := uint32(0); feat < 64; feat++ {
			want := offered[feat]
			if migration[feat] && !migrates {
				want = methods{}
			}
			for _, m := range []struct {
				flag uint32
				want bool
			}{{FeatureGet, want.get}, {FeatureSet, want.set}} {
				ok, err := cl.ProbeFeature(feat, m.flag)
				if err != nil || ok != m.want {
					t.Errorf("migrates %v: probe of feature %d with %#x: %v %v, want %v", migrates, feat, m.flag, ok, err, m.want)
				}
			}
		}
	}
}
