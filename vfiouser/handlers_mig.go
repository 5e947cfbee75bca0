package vfiouser

import (
	"fmt"
	"syscall"

	"e1000e-vfu/device"
)

// featureOps says which of GET and SET a feature supports, and whether it
// needs a device.Migratable.
type featureOps struct {
	get, set  bool
	migration bool
}

// featureOpsOf says what the server offers for a feature number.
func featureOpsOf(feat uint32) (featureOps, bool) {
	switch feat {
	case FeatMigration, FeatMigDataSize:
		return featureOps{get: true, migration: true}, true
	case FeatMigDeviceState:
		return featureOps{get: true, set: true, migration: true}, true
	case FeatDMALoggingStart, FeatDMALoggingStop:
		return featureOps{set: true}, true
	case FeatDMALoggingRep:
		return featureOps{get: true}, true
	}
	return featureOps{}, false
}

// handleDeviceFeature follows VFIO_DEVICE_FEATURE: PROBE answers whether the
// feature supports the methods named with it; otherwise exactly one of GET
// and SET is given. Migration features go to the device when it implements
// device.Migratable, DMA logging to the DMA table.
//
// The specification wants the reply to a SET or a PROBE to be the request
// payload itself, argsz and flags included; only a GET replies with the
// feature's data. A client may compare the two, so nothing of a SET's
// outcome is written into its reply: what a SET cannot honour exactly is
// refused instead.
func handleDeviceFeature(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeFeature(m.payload)
	if err != nil {
		return err
	}
	if in.Flags&^(FeatureMask|FeatureGet|FeatureSet|FeatureProbe) != 0 {
		return fmt.Errorf("device feature: flags %#x: %w", in.Flags, syscall.EINVAL)
	}
	feat := in.Flags & FeatureMask
	get, set, probe := in.Flags&FeatureGet != 0, in.Flags&FeatureSet != 0, in.Flags&FeatureProbe != 0
	ops, ok := featureOpsOf(feat)
	if !ok || (ops.migration && c.mig == nil) {
		return fmt.Errorf("device feature %d: %w", feat, syscall.ENOTSUP)
	}
	if probe {
		if (get && !ops.get) || (set && !ops.set) {
			return fmt.Errorf("device feature %d: probe of an unsupported method: %w", feat, syscall.ENOTSUP)
		}
		echoRequest(c, m)
		return nil
	}
	if get == set {
		return fmt.Errorf("device feature %d: need exactly one of GET and SET: %w", feat, syscall.EINVAL)
	}
	if (get && !ops.get) || (set && !ops.set) {
		return fmt.Errorf("device feature %d: method not supported: %w", feat, syscall.ENOTSUP)
	}
	data := m.payload[FeatureSize:]
	if set {
		if err := setFeature(c, feat, data); err != nil {
			return err
		}
		echoRequest(c, m)
		return nil
	}
	// reply starts the reply to a GET with the fixed part, argsz covering
	// n data bytes.
	reply := func(n int) ([]byte, error) {
		need := uint64(FeatureSize + n)
		if uint64(in.Argsz) < need {
			return nil, fmt.Errorf("device feature %d: argsz %d, need %d: %w", feat, in.Argsz, need, syscall.EINVAL)
		}
		out := c.extend(int(need))
		Feature{Argsz: uint32(need), Flags: in.Flags}.Encode(out)
		return out[FeatureSize:], nil
	}
	switch feat {
	case FeatMigration:
		out, err := reply(8)
		if err != nil {
			return err
		}
		le.PutUint64(out, c.mig.MigrationFlags())
		return nil
	case FeatMigDeviceState:
		out, err := reply(MigStateSize)
		if err != nil {
			return err
		}
		le.PutUint32(out[0:], uint32(c.mig.MigrationState()))
		le.PutUint32(out[4:], noDataFD)
		return nil
	case FeatMigDataSize:
		n, err := c.mig.MigrationDataSize()
		if err != nil {
			return fmt.Errorf("mig data size: %w", err)
		}
		out, err := reply(8)
		if err != nil {
			return err
		}
		le.PutUint64(out, n)
		return nil
	case FeatDMALoggingRep:
		r, err := DecodeLoggingReport(data)
		if err != nil {
			return err
		}
		if r.PageSize == 0 {
			return fmt.Errorf("logging report: page size 0: %w", syscall.EINVAL)
		}
		n := BitmapBytes(r.Length, r.PageSize)
		if n > c.srv.opts.MaxBitmapSize {
			return fmt.Errorf("logging report: bitmap of %d bytes over %d: %w", n, c.srv.opts.MaxBitmapSize, syscall.E2BIG)
		}
		out, err := reply(LoggingReportSize + int(n))
		if err != nil {
			return err
		}
		r.Encode(out)
		return c.dma.Report(r.IOVA, r.Length, r.PageSize, out[LoggingReportSize:])
	}
	return fmt.Errorf("device feature %d: %w", feat, syscall.ENOTSUP)
}

// setFeature performs a SET of feat with the data after argsz and flags.
func setFeature(c *Conn, feat uint32, data []byte) error {
	switch feat {
	case FeatMigDeviceState:
		if len(data) < MigStateSize {
			return fmt.Errorf("mig device state: %d bytes: %w", len(data), syscall.EINVAL)
		}
		target := device.MigrationState(le.Uint32(data))
		if target > device.MigPreCopyP2P {
			return fmt.Errorf("mig device state: state %d: %w", target, syscall.EINVAL)
		}
		if err := c.mig.SetMigrationState(target); err != nil {
			return fmt.Errorf("mig device state %d: %w", target, err)
		}
		return nil
	case FeatDMALoggingStart:
		s, err := DecodeLoggingStart(data)
		if err != nil {
			return err
		}
		// The kernel lets a device log at a coarser page than asked and
		// say so in page_size, but the reply must equal the request here:
		// a page finer than the table's 4 KiB is refused rather than
		// silently coarsened, so the client learns it now and not at its
		// first report.
		if s.PageSize < DMAPageSize {
			return fmt.Errorf("logging start: page size %#x below %#x: %w", s.PageSize, DMAPageSize, syscall.EINVAL)
		}
		_, err = c.dma.StartLogging(s.PageSize, s.Ranges)
		return err
	case FeatDMALoggingStop:
		c.dma.StopLogging()
		return nil
	}
	return fmt.Errorf("device feature %d: SET: %w", feat, syscall.ENOTSUP)
}

// echoRequest replies with the request's payload, as a SET or PROBE reply must.
func echoRequest(c *Conn, m *message) {
	copy(c.extend(len(m.payload)), m.payload)
}

// handleMigDataRead reads up to size bytes of the device's saved state; a
// reply shorter than asked ends the data of the current state.
func handleMigDataRead(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	if c.mig == nil {
		return fmt.Errorf("mig data read: device does not migrate: %w", syscall.ENOTSUP)
	}
	in, err := DecodeMigData(m.payload)
	if err != nil {
		return err
	}
	if in.Size > c.maxXfer {
		return fmt.Errorf("mig data read: size %d over %d: %w", in.Size, c.maxXfer, syscall.EINVAL)
	}
	if uint64(in.Argsz) < MigDataSize+uint64(in.Size) {
		return fmt.Errorf("mig data read: argsz %d for %d bytes: %w", in.Argsz, in.Size, syscall.EINVAL)
	}
	out := c.extend(MigDataSize + int(in.Size))
	buf := out[MigDataSize:]
	got := 0
	// Each pass either makes progress or ends the loop.
	for got < len(buf) {
		n, err := c.mig.ReadMigrationData(buf[got:])
		if err != nil {
			return fmt.Errorf("mig data read: %w", err)
		}
		if n <= 0 || n > len(buf)-got {
			break
		}
		got += n
	}
	c.wbuf = c.wbuf[:len(c.wbuf)-len(buf)+got]
	MigData{Argsz: uint32(MigDataSize + got), Size: uint32(got)}.Encode(out)
	return nil
}

func handleMigDataWrite(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	if c.mig == nil {
		return fmt.Errorf("mig data write: device does not migrate: %w", syscall.ENOTSUP)
	}
	in, err := DecodeMigData(m.payload)
	if err != nil {
		return err
	}
	if in.Size > c.maxXfer || uint64(len(m.payload)) != MigDataSize+uint64(in.Size) {
		return fmt.Errorf("mig data write: size %d in %d bytes: %w", in.Size, len(m.payload), syscall.EINVAL)
	}
	return c.mig.WriteMigrationData(m.payload[MigDataSize:])
}
