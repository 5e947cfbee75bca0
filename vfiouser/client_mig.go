package vfiouser

import (
	"fmt"
	"syscall"

	"e1000e-vfu/device"
)

// DeviceFeature sends DEVICE_FEATURE with flags (feature | GET/SET/PROBE)
// and data; argsz is the largest reply payload accepted (0: the request's
// size). It returns the reply's data after argsz and flags.
//
// The reply's argsz bounds what is taken: a server may pad its reply
// beyond it. The reply to a GET must hold all argsz bytes; that of a SET
// or PROBE echoes the request, whose argsz is the largest reply accepted,
// not a size, so a shorter payload is taken as it is.
func (c *Client) DeviceFeature(flags uint32, data []byte, argsz uint32) ([]byte, error) {
	p := make([]byte, FeatureSize+len(data))
	if argsz == 0 {
		argsz = uint32(len(p))
	}
	Feature{Argsz: argsz, Flags: flags}.Encode(p)
	copy(p[FeatureSize:], data)
	r, err := c.Call(CmdDeviceFeature, p, nil)
	if err != nil {
		return nil, err
	}
	out, err := DecodeFeature(r.Payload)
	if err != nil {
		return nil, fmt.Errorf("device feature: short reply: %w", syscall.EPROTO)
	}
	got := r.Payload
	switch {
	case out.Argsz >= FeatureSize && uint64(out.Argsz) <= uint64(len(got)):
		got = got[:out.Argsz]
	case flags&(FeatureGet|FeatureProbe) == FeatureGet:
		return nil, fmt.Errorf("device feature: reply argsz %d in %d bytes: %w", out.Argsz, len(got), syscall.EPROTO)
	}
	return got[FeatureSize:], nil
}

// ProbeFeature says whether the server supports feature with the methods in
// methods (FeatureGet and/or FeatureSet).
func (c *Client) ProbeFeature(feature, methods uint32) (bool, error) {
	_, err := c.DeviceFeature(feature|methods|FeatureProbe, nil, 0)
	if err == nil {
		return true, nil
	}
	if re, ok := err.(*ReplyError); ok && re.Errno == syscall.ENOTSUP {
		return false, nil
	}
	return false, err
}

func (c *Client) getU64(feat uint32) (uint64, error) {
	d, err := c.DeviceFeature(feat|FeatureGet, nil, FeatureSize+8)
	if err != nil {
		return 0, err
	}
	if len(d) < 8 {
		return 0, fmt.Errorf("feature %d: short reply: %w", feat, syscall.EPROTO)
	}
	return le.Uint64(d), nil
}

// MigrationFlags gets the MIGRATION feature (STOP_COPY, P2P, PRE_COPY).
func (c *Client) MigrationFlags() (uint64, error) { return c.getU64(FeatMigration) }

// MigDataSize gets the MIG_DATA_SIZE extension: bytes left to read.
func (c *Client) MigDataSize() (uint64, error) { return c.getU64(FeatMigDataSize) }

// MigrationState gets the device's migration state.
func (c *Client) MigrationState() (device.MigrationState, error) {
	d, err := c.DeviceFeature(FeatMigDeviceState|FeatureGet, nil, FeatureSize+MigStateSize)
	if err != nil {
		return 0, err
	}
	if len(d) < MigStateSize {
		return 0, fmt.Errorf("mig device state: short reply: %w", syscall.EPROTO)
	}
	return device.MigrationState(le.Uint32(d)), nil
}

// SetMigrationState moves the device to s and returns the state it reports.
func (c *Client) SetMigrationState(s device.MigrationState) (device.MigrationState, error) {
	var p [MigStateSize]byte
	le.PutUint32(p[0:], uint32(s))
	le.PutUint32(p[4:], noDataFD)
	d, err := c.DeviceFeature(FeatMigDeviceState|FeatureSet, p[:], 0)
	if err != nil {
		return 0, err
	}
	if len(d) < MigStateSize {
		return 0, fmt.Errorf("mig device state: short reply: %w", syscall.EPROTO)
	}
	return device.MigrationState(le.Uint32(d)), nil
}

// MigDataRead reads up to len(p) bytes of migration data (at most the
// negotiated transfer size); fewer than asked means the end of the data.
// The reply's size field says how many bytes are data: libvfio-user sends
// a reply as long as the request asked for and pads what it did not fill.
func (c *Client) MigDataRead(p []byte) (int, error) {
	if uint64(len(p)) > uint64(c.maxXfer) {
		p = p[:c.maxXfer]
	}
	var q [MigDataSize]byte
	MigData{Argsz: uint32(MigDataSize + len(p)), Size: uint32(len(p))}.Encode(q[:])
	r, err := c.Call(CmdMigDataRead, q[:], nil)
	if err != nil {
		return 0, err
	}
	in, err := DecodeMigData(r.Payload)
	if err != nil {
		return 0, err
	}
	if uint64(in.Size) > uint64(len(p)) || uint64(len(r.Payload)) < MigDataSize+uint64(in.Size) {
		return 0, fmt.Errorf("mig data read: %d bytes in a reply of %d: %w", in.Size, len(r.Payload), syscall.EPROTO)
	}
	return copy(p, r.Payload[MigDataSize:MigDataSize+in.Size]), nil
}

// MigDataWrite sends p (at most the negotiated transfer size) as migration
// data.
func (c *Client) MigDataWrite(p []byte) error {
	q := make([]byte, MigDataSize+len(p))
	MigData{Argsz: MigDataSize, Size: uint32(len(p))}.Encode(q)
	copy(q[MigDataSize:], p)
	_, err := c.Call(CmdMigDataWrite, q, nil)
	return err
}

// DMALoggingStart starts dirty logging of ranges (none: everything) and
// returns the page size the server's reply names: the one asked for, since
// a SET's reply echoes the request.
func (c *Client) DMALoggingStart(pageSize uint64, ranges []LoggingRange) (uint64, error) {
	data := LoggingStart{PageSize: pageSize, Ranges: ranges}.Encode(nil)
	d, err := c.DeviceFeature(FeatDMALoggingStart|FeatureSet, data, 0)
	if err != nil {
		return 0, err
	}
	if len(d) < 8 {
		return 0, fmt.Errorf("logging start: short reply: %w", syscall.EPROTO)
	}
	return le.Uint64(d), nil
}

// DMALoggingStop stops dirty logging.
func (c *Client) DMALoggingStop() error {
	_, err := c.DeviceFeature(FeatDMALoggingStop|FeatureSet, nil, 0)
	return err
}

// DMALoggingReport returns (and clears) the dirty bitmap of [iova,
// iova+length) at pageSize: bit i of the little-endian u64 words is the page
// at iova + i*pageSize.
func (c *Client) DMALoggingReport(iova, length, pageSize uint64) ([]byte, error) {
	var p [LoggingReportSize]byte
	LoggingReport{IOVA: iova, Length: length, PageSize: pageSize}.Encode(p[:])
	n := BitmapBytes(length, pageSize)
	d, err := c.DeviceFeature(FeatDMALoggingRep|FeatureGet, p[:], uint32(FeatureSize+LoggingReportSize+n))
	if err != nil {
		return nil, err
	}
	if uint64(len(d)) < LoggingReportSize+n {
		return nil, fmt.Errorf("logging report: reply of %d bytes: %w", len(d), syscall.EPROTO)
	}
	return append([]byte(nil), d[LoggingReportSize:LoggingReportSize+n]...), nil
}

// DirtyPages sends the legacy DIRTY_PAGES START or STOP.
func (c *Client) DirtyPages(flags uint32) error {
	var p [DirtyPagesSize]byte
	le.PutUint32(p[0:], DirtyPagesSize)
	le.PutUint32(p[4:], flags)
	_, err := c.Call(CmdDirtyPages, p[:], nil)
	return err
}

// DirtyPagesBitmap sends the legacy DIRTY_PAGES GET_BITMAP.
func (c *Client) DirtyPagesBitmap(iova, size, pgsize uint64) ([]byte, error) {
	n := BitmapBytes(size, pgsize)
	p := make([]byte, DirtyPagesSize+DirtyBitmapSize)
	le.PutUint32(p[0:], uint32(DirtyPagesSize+DirtyBitmapSize+n))
	le.PutUint32(p[4:], DirtyPagesGetBitmap)
	DirtyBitmap{IOVA: iova, Size: size, Bitmap: Bitmap{PgSize: pgsize, Size: n}}.Encode(p[DirtyPagesSize:])
	r, err := c.Call(CmdDirtyPages, p, nil)
	if err != nil {
		return nil, err
	}
	if uint64(len(r.Payload)) < DirtyPagesSize+DirtyBitmapSize+n {
		return nil, fmt.Errorf("dirty pages: reply of %d bytes: %w", len(r.Payload), syscall.EPROTO)
	}
	return append([]byte(nil), r.Payload[DirtyPagesSize+DirtyBitmapSize:][:n]...), nil
}
