package vfiouser

import (
	"errors"
	"fmt"
	"syscall"
)

func handleDMAMap(c *Conn, m *message) error {
	in, err := DecodeDMAMap(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < DMAMapSize {
		return fmt.Errorf("dma map: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	if len(m.fds) > 1 {
		return fmt.Errorf("dma map: %d fds: %w", len(m.fds), syscall.EINVAL)
	}
	fd := -1
	if len(m.fds) == 1 {
		fd = m.fds[0] // stays owned by the message: the mapping outlives it
	} else {
		in.Offset = 0 // meaningless without a file
	}
	err = c.dma.Map(in, fd)
	if errors.Is(err, ErrDMAFile) && !c.warnedDMAFile {
		// The client only sees EPERM: say once, where the operator looks,
		// what was refused and what would allow it.
		c.warnedDMAFile = true
		c.log.Warn("vfio-user: refusing guest memory that is not shared memory; use memory-backend-memfd or a file on tmpfs or hugetlbfs, or serve with --dma-fd any",
			"err", err)
	}
	return err
}

func handleDMAUnmap(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeDMAUnmap(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < DMAUnmapSize {
		return fmt.Errorf("dma unmap: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	switch in.Flags {
	case 0:
		if err := c.dma.Unmap(in.Addr, in.Size, 0, nil); err != nil {
			return err
		}
	case UnmapFlagAll:
		if in.Addr != 0 || in.Size != 0 {
			return fmt.Errorf("dma unmap all: addr %#x size %#x must be 0: %w", in.Addr, in.Size, syscall.EINVAL)
		}
		c.dma.UnmapAll()
	case UnmapFlagGetDirtyBitmap:
		// Legacy migration: the bitmap of the range comes back with the reply.
		bm, err := DecodeBitmap(m.payload[DMAUnmapSize:])
		if err != nil {
			return fmt.Errorf("dma unmap: %w", err)
		}
		if bm.Size != BitmapBytes(in.Size, bm.PgSize) || bm.Size > c.srv.opts.MaxBitmapSize {
			return fmt.Errorf("dma unmap: bitmap of %d bytes for %#x at page size %#x: %w", bm.Size, in.Size, bm.PgSize, syscall.EINVAL)
		}
		need := uint64(DMAUnmapSize + BitmapSize + bm.Size)
		if uint64(in.Argsz) < need {
			return fmt.Errorf("dma unmap: argsz %d, need %d: %w", in.Argsz, need, syscall.EINVAL)
		}
		out := c.extend(int(need))
		DMAUnmap{Argsz: uint32(need), Flags: in.Flags, Addr: in.Addr, Size: in.Size}.Encode(out)
		bm.Encode(out[DMAUnmapSize:])
		return c.dma.Unmap(in.Addr, in.Size, bm.PgSize, out[DMAUnmapSize+BitmapSize:])
	default:
		return fmt.Errorf("dma unmap: flags %#x: %w", in.Flags, syscall.EINVAL)
	}
	DMAUnmap{Argsz: DMAUnmapSize, Flags: in.Flags, Addr: in.Addr, Size: in.Size}.Encode(c.extend(DMAUnmapSize))
	return nil
}

// handleDirtyPages serves the legacy DIRTY_PAGES command with the same
// dirty log as DMA_LOGGING.
func handleDirtyPages(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	if len(m.payload) < DirtyPagesSize {
		return fmt.Errorf("dirty pages: payload %d bytes: %w", len(m.payload), syscall.EINVAL)
	}
	argsz, flags := le.Uint32(m.payload[0:]), le.Uint32(m.payload[4:])
	switch flags {
	case DirtyPagesStart:
		_, err := c.dma.StartLogging(DMAPageSize, nil)
		return err
	case DirtyPagesStop:
		c.dma.StopLogging()
		return nil
	case DirtyPagesGetBitmap:
		d, err := DecodeDirtyBitmap(m.payload[DirtyPagesSize:])
		if err != nil {
			return err
		}
		if d.Bitmap.Size != BitmapBytes(d.Size, d.Bitmap.PgSize) || d.Bitmap.Size > c.srv.opts.MaxBitmapSize {
			return fmt.Errorf("dirty pages: bitmap of %d bytes for %#x at page size %#x: %w", d.Bitmap.Size, d.Size, d.Bitmap.PgSize, syscall.EINVAL)
		}
		need := uint64(DirtyPagesSize + DirtyBitmapSize + d.Bitmap.Size)
		if uint64(argsz) < need {
			return fmt.Errorf("dirty pages: argsz %d, need %d: %w", argsz, need, syscall.EINVAL)
		}
		out := c.extend(int(need))
		le.PutUint32(out[0:], uint32(need))
		le.PutUint32(out[4:], flags)
		d.Encode(out[DirtyPagesSize:])
		return c.dma.Report(d.IOVA, d.Size, d.Bitmap.PgSize, out[DirtyPagesSize+DirtyBitmapSize:])
	default:
		return fmt.Errorf("dirty pages: flags %#x: %w", flags, syscall.EINVAL)
	}
}
