package vfiouser

import (
	"fmt"
	"syscall"

	"e1000e-vfu/device"
)

// The migration features of DEVICE_FEATURE (see features); the server
// offers them only when the device implements device.Migratable.

func getMigration(g featureGet) error {
	out, err := g.reply(8)
	if err != nil {
		return err
	}
	le.PutUint64(out, g.c.mig.MigrationFlags())
	return nil
}

func getMigDeviceState(g featureGet) error {
	out, err := g.reply(MigStateSize)
	if err != nil {
		return err
	}
	le.PutUint32(out[0:], uint32(g.c.mig.MigrationState()))
	le.PutUint32(out[4:], noDataFD)
	return nil
}

func setMigDeviceState(c *Conn, data []byte) error {
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
}

// getMigDataSize answers VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: the bytes the
// device still has to send.
func getMigDataSize(g featureGet) error {
	n, err := g.c.mig.MigrationDataSize()
	if err != nil {
		return fmt.Errorf("mig data size: %w", err)
	}
	out, err := g.reply(8)
	if err != nil {
		return err
	}
	le.PutUint64(out, n)
	return nil
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
