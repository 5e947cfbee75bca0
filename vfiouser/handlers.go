package vfiouser

import (
	"fmt"
	"syscall"

	"e1000e-vfu/device"
)

// Our protocol version: 0.0, the only one the specification defines.
const (
	versionMajor = 0
	versionMinor = 0
)

func handleVersion(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	if c.negotiated {
		return fmt.Errorf("VERSION again after negotiation: %w", syscall.EINVAL)
	}
	v, err := DecodeVersion(m.payload)
	if err != nil {
		return err
	}
	if v.Major != versionMajor {
		c.fatal = true
		return fmt.Errorf("version %d.%d: only major %d is supported: %w", v.Major, v.Minor, versionMajor, syscall.ENOTSUP)
	}
	maxXfer := uint32(DefaultMaxDataXferSize)
	// The reply always carries a capabilities object, empty when the
	// client offered nothing: QEMU reads the JSON without checking that
	// there is any.
	reply := &Capabilities{}
	if in := v.Caps; in != nil {
		if in.PgSizes != nil {
			if *in.PgSizes&DMAPageSize == 0 {
				c.fatal = true
				return fmt.Errorf("version: pgsizes %#x lack 4 KiB: %w", *in.PgSizes, syscall.ENOTSUP)
			}
			reply.PgSizes = ptr(uint64(DMAPageSize))
		}
		if in.MaxDataXferSize != nil {
			if *in.MaxDataXferSize < 8 {
				return fmt.Errorf("version: max_data_xfer_size %d: %w", *in.MaxDataXferSize, syscall.EINVAL)
			}
			maxXfer = *in.MaxDataXferSize
		}
		if in.MaxMsgFDs != nil {
			reply.MaxMsgFDs = ptr(uint32(MaxMsgFDs))
		}
		if in.MaxDMAMaps != nil {
			reply.MaxDMAMaps = ptr(min(*in.MaxDMAMaps, uint32(c.srv.opts.DMALimits.MaxMaps)))
		}
		if in.WriteMultiple != nil && *in.WriteMultiple {
			reply.WriteMultiple = ptr(true)
		}
		if in.Migration != nil {
			if in.Migration.PgSize != 0 && in.Migration.PgSize&DMAPageSize == 0 {
				c.fatal = true
				return fmt.Errorf("version: migration pgsize %#x: %w", in.Migration.PgSize, syscall.ENOTSUP)
			}
			reply.Migration = &MigrationCaps{PgSize: DMAPageSize, MaxBitmapSize: c.srv.opts.MaxBitmapSize}
			if in.Migration.MaxBitmapSize != 0 {
				reply.Migration.MaxBitmapSize = min(in.Migration.MaxBitmapSize, c.srv.opts.MaxBitmapSize)
			}
		}
	}
	c.maxXfer = min(maxXfer, c.srv.opts.MaxDataXferSize)
	if v.Caps != nil && v.Caps.MaxDataXferSize != nil {
		reply.MaxDataXferSize = ptr(c.maxXfer)
	}
	out, err := Version{Major: versionMajor, Minor: min(v.Minor, versionMinor), Caps: reply}.Encode(c.wbuf)
	if err != nil {
		return err
	}
	c.wbuf = out
	c.negotiated = true
	// Room for the largest data transfer, and for control messages (SET_IRQS
	// bools, logging ranges) even when the client asked for tiny transfers.
	c.maxMsg = HeaderSize + maxMsgOverhead + max(c.maxXfer, 64<<10)
	c.rd.max = int(c.maxMsg)
	return nil
}

func ptr[T any](v T) *T { return &v }

func handleGetInfo(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeDeviceInfo(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < DeviceInfoSize {
		return fmt.Errorf("device info: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	var flags uint32
	if c.info.Resettable {
		flags |= DeviceFlagReset
	}
	if c.info.PCI {
		flags |= DeviceFlagPCI
	}
	DeviceInfo{Argsz: DeviceInfoSize, Flags: flags,
		NumRegions: uint32(len(c.info.Regions)), NumIRQs: uint32(len(c.info.IRQs))}.Encode(c.extend(DeviceInfoSize))
	return nil
}

func (c *Conn) region(index uint32) (*device.RegionInfo, error) {
	if uint64(index) >= uint64(len(c.info.Regions)) {
		return nil, fmt.Errorf("region %d of %d: %w", index, len(c.info.Regions), syscall.EINVAL)
	}
	return &c.info.Regions[index], nil
}

// handleGetRegionInfo answers with the region info and its capability
// chain. When argsz is too small for the chain, the reply holds the fixed
// part with the argsz needed and no fd, and the client asks again.
func handleGetRegionInfo(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeRegionInfo(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < RegionInfoSize {
		return fmt.Errorf("region info: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	r, err := c.region(in.Index)
	if err != nil {
		return err
	}
	out := RegionInfo{Index: in.Index, Size: r.Size, Flags: uint32(r.Flags) & uint32(device.RegionRead|device.RegionWrite)}
	var caps RegionCaps
	mmapFD := -1
	if r.Flags&device.RegionMMap != 0 && r.MMapFile != nil {
		out.Flags |= uint32(device.RegionMMap)
		out.Offset = r.MMapOffset
		mmapFD = int(r.MMapFile.Fd())
		if len(r.MMapAreas) > 0 {
			if len(r.MMapAreas) > maxSparseAreas {
				return fmt.Errorf("region %d: %d sparse areas: %w", in.Index, len(r.MMapAreas), syscall.EINVAL)
			}
			caps.Sparse = make([]SparseArea, len(r.MMapAreas))
			for i, a := range r.MMapAreas {
				caps.Sparse[i] = SparseArea{Offset: a.Offset, Size: a.Size}
			}
		}
	}
	if r.Type != 0 {
		caps.HasType, caps.Type, caps.Subtype = true, r.Type, r.Subtype
	}
	full, first := encodeRegionCaps(make([]byte, RegionInfoSize, 128), caps)
	if first != 0 {
		out.Flags |= RegionFlagCaps
	}
	out.Argsz = uint32(len(full))
	if in.Argsz < out.Argsz {
		out.Encode(c.extend(RegionInfoSize))
		return nil
	}
	out.CapOffset = first
	out.Encode(full)
	copy(c.extend(len(full)), full)
	if mmapFD >= 0 {
		c.replyFDs = append(c.replyFDs, mmapFD)
	}
	return nil
}

// handleGetRegionIOFDs answers that no region has io fds: count 0.
func handleGetRegionIOFDs(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeRegionIOFDs(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < RegionIOFDsSize {
		return fmt.Errorf("region io fds: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	if _, err := c.region(in.Index); err != nil {
		return err
	}
	RegionIOFDs{Argsz: RegionIOFDsSize, Index: in.Index}.Encode(c.extend(RegionIOFDsSize))
	return nil
}

func handleGetIRQInfo(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeIRQInfo(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < IRQInfoSize {
		return fmt.Errorf("irq info: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	if uint64(in.Index) >= uint64(len(c.info.IRQs)) {
		return fmt.Errorf("irq index %d of %d: %w", in.Index, len(c.info.IRQs), syscall.EINVAL)
	}
	q := c.info.IRQs[in.Index]
	IRQInfo{Argsz: IRQInfoSize, Flags: uint32(q.Flags), Index: in.Index, Count: q.Count}.Encode(c.extend(IRQInfoSize))
	return nil
}

// checkAccess validates a region access against the region's size and
// permissions and the negotiated transfer size.
func (c *Conn) checkAccess(rw RegionRW, need device.RegionFlags) error {
	r, err := c.region(rw.Region)
	if err != nil {
		return err
	}
	if r.Size == 0 || r.Flags&need == 0 {
		return fmt.Errorf("region %d does not allow this access: %w", rw.Region, syscall.EINVAL)
	}
	if rw.Count > c.maxXfer {
		return fmt.Errorf("region %d: count %d over max_data_xfer_size %d: %w", rw.Region, rw.Count, c.maxXfer, syscall.EINVAL)
	}
	if rw.Offset > r.Size || uint64(rw.Count) > r.Size-rw.Offset {
		return fmt.Errorf("region %d: [%#x+%#x] outside %#x bytes: %w", rw.Region, rw.Offset, rw.Count, r.Size, syscall.EINVAL)
	}
	return nil
}

var errRegionRWSize = fmt.Errorf("region access: payload size does not match count: %w", syscall.EINVAL)

func handleRegionRead(c *Conn, m *message) error {
	if len(m.payload) != RegionRWSize || len(m.fds) != 0 {
		return errRegionRWSize
	}
	rw, _ := DecodeRegionRW(m.payload)
	if err := c.checkAccess(rw, device.RegionRead); err != nil {
		return err
	}
	out := c.extend(RegionRWSize + int(rw.Count))
	copy(out, m.payload[:RegionRWSize])
	return c.dev.ReadRegion(int(rw.Region), rw.Offset, out[RegionRWSize:])
}

func handleRegionWrite(c *Conn, m *message) error {
	rw, err := DecodeRegionRW(m.payload)
	if err != nil {
		return err
	}
	if uint64(len(m.payload)) != RegionRWSize+uint64(rw.Count) || len(m.fds) != 0 {
		return errRegionRWSize
	}
	if err := c.checkAccess(rw, device.RegionWrite); err != nil {
		return err
	}
	if err := c.dev.WriteRegion(int(rw.Region), rw.Offset, m.payload[RegionRWSize:]); err != nil {
		return err
	}
	copy(c.extend(RegionRWSize), m.payload[:RegionRWSize])
	return nil
}

// handleWriteMulti checks every write first, then performs them in order.
func handleWriteMulti(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	if len(m.payload) < writeMultiHdrSize {
		return fmt.Errorf("write multi: payload %d bytes: %w", len(m.payload), syscall.EINVAL)
	}
	n := le.Uint64(m.payload)
	items := m.payload[writeMultiHdrSize:]
	if n == 0 || uint64(len(items))%WriteMultiItemSize != 0 || uint64(len(items))/WriteMultiItemSize != n {
		return fmt.Errorf("write multi: wr_cnt %d in %d bytes: %w", n, len(items), syscall.EINVAL)
	}
	for i := uint64(0); i < n; i++ {
		w, err := DecodeWriteMultiItem(items[i*WriteMultiItemSize:])
		if err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
		if err := c.checkAccess(RegionRW{Offset: w.Offset, Region: w.Region, Count: w.Count}, device.RegionWrite); err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
	}
	for i := uint64(0); i < n; i++ {
		e := items[i*WriteMultiItemSize:]
		off, region, count := le.Uint64(e[0:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		if err := c.dev.WriteRegion(int(region), off, e[16:16+count]); err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
	}
	le.PutUint64(c.extend(8), n)
	return nil
}

func handleReset(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	if !c.info.Resettable {
		return fmt.Errorf("device reset: device is not resettable: %w", syscall.ENOTSUP)
	}
	return c.dev.Reset()
}
