package driver

import (
	"errors"
	"fmt"

	"e1000e-vfu/device"
	"e1000e-vfu/vfiouser"
)

// maxV2Data bounds the bytes one transfer moves: a source whose data never
// ends is an error, not a hang.
const maxV2Data = 64 << 20

// v2Transport is the migration v2 transport: DEVICE_FEATURE MIGRATION and
// MIG_DEVICE_STATE for the states, MIG_DATA_READ/WRITE for the data, and
// DMA_LOGGING_START/REPORT/STOP for dirty pages.
type v2Transport struct {
	src, dst Endpoint
	flags    uint64 // the source's migration feature flags
	buf      []byte
}

func openV2(src, dst Endpoint, opts Options) (transport, error) {
	flags, err := src.Client.MigrationFlags()
	if err != nil {
		return nil, fmt.Errorf("source migration feature: %w", err)
	}
	if flags&device.MigFlagStopCopy == 0 {
		return nil, errors.New("source does not offer STOP_COPY")
	}
	return &v2Transport{src: src, dst: dst, flags: flags, buf: make([]byte, opts.ChunkSize)}, nil
}

func setV2State(c *vfiouser.Client, s device.MigrationState) error {
	if _, err := c.SetMigrationState(s); err != nil {
		return fmt.Errorf("MIG_DEVICE_STATE %s: %w", s, err)
	}
	return nil
}

func (t *v2Transport) startLogging(pageSize uint64) (uint64, error) {
	return t.src.Client.DMALoggingStart(pageSize, []vfiouser.LoggingRange{{IOVA: t.src.IOVA, Length: uint64(len(t.src.Mem))}})
}

func (t *v2Transport) dirtyPages(pageSize uint64) ([]byte, error) {
	return t.src.Client.DMALoggingReport(t.src.IOVA, uint64(len(t.src.Mem)), pageSize)
}

func (t *v2Transport) stopLogging() error { return t.src.Client.DMALoggingStop() }

func (t *v2Transport) resuming() error { return setV2State(t.dst.Client, device.MigResuming) }

func (t *v2Transport) preCopy() (bool, error) {
	if t.flags&device.MigFlagPreCopy == 0 {
		return false, nil
	}
	return true, setV2State(t.src.Client, device.MigPreCopy)
}

func (t *v2Transport) stopCopy() (uint64, error) {
	if err := setV2State(t.src.Client, device.MigStopCopy); err != nil {
		return 0, err
	}
	// QEMU sizes its transfer with MIG_DATA_SIZE; a server without the
	// extension answers ENOTSUP, which is no reason to fail.
	if est, err := t.src.Client.MigDataSize(); err == nil {
		return est, nil
	}
	return 0, nil
}

// transfer reads until a read returns no data, which ends the data of the
// source's current state; each chunk is written to the destination as it
// comes.
func (t *v2Transport) transfer() (int, error) {
	total := 0
	for total <= maxV2Data {
		n, err := t.src.Client.MigDataRead(t.buf)
		if err != nil {
			return total, fmt.Errorf("reading migration data: %w", err)
		}
		if n == 0 {
			return total, nil
		}
		if err := t.dst.Client.MigDataWrite(t.buf[:n]); err != nil {
			return total, fmt.Errorf("writing migration data: %w", err)
		}
		total += n
	}
	return total, errors.New("migration data does not end")
}

// resume loads the state on RESUMING→STOP, then runs the device.
func (t *v2Transport) resume() error {
	if err := setV2State(t.dst.Client, device.MigStop); err != nil {
		return err
	}
	return setV2State(t.dst.Client, device.MigRunning)
}

func (t *v2Transport) stopSource() error { return setV2State(t.src.Client, device.MigStop) }

func (t *v2Transport) close() {}
