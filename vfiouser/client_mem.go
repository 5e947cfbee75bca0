package vfiouser

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Memory is guest memory a client shares with the server: a memfd mapped
// into the client, as QEMU's memory-backend-memfd with share=on.
type Memory struct {
	fd   int
	Data []byte
}

// NewMemory creates size bytes of memfd-backed memory.
func NewMemory(size int) (*Memory, error) {
	fd, err := unix.MemfdCreate("vfio-user-guest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ftruncate memfd: %w", err)
	}
	data, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap memfd: %w", err)
	}
	return &Memory{fd: fd, Data: data}, nil
}

// FD is the memfd's descriptor (still owned by the Memory).
func (m *Memory) FD() int { return m.fd }

// Close unmaps and closes the memory.
func (m *Memory) Close() error {
	if m.Data != nil {
		unix.Munmap(m.Data)
		m.Data = nil
	}
	if m.fd >= 0 {
		unix.Close(m.fd)
		m.fd = -1
	}
	return nil
}

// Map shares [offset, offset+size) of m with the server at guest address
// addr, with flags DMAFlagRead|DMAFlagWrite or a part of them.
func (c *Client) Map(addr uint64, m *Memory, offset, size uint64, flags uint32) error {
	var p [DMAMapSize]byte
	DMAMap{Argsz: DMAMapSize, Flags: flags, Offset: offset, Addr: addr, Size: size}.Encode(p[:])
	_, err := c.Call(CmdDMAMap, p[:], []int{m.fd})
	return err
}

// MapMessage maps [addr, addr+len(data)) without fd: the server reaches it
// with DMA_READ/DMA_WRITE, which this client answers from data. It starts
// the client's reader goroutine.
func (c *Client) MapMessage(addr uint64, data []byte, flags uint32) error {
	c.startReader()
	c.memMu.Lock()
	c.mems = append(c.mems, &clientMem{addr: addr, data: data})
	c.memMu.Unlock()
	var p [DMAMapSize]byte
	DMAMap{Argsz: DMAMapSize, Flags: flags, Addr: addr, Size: uint64(len(data))}.Encode(p[:])
	_, err := c.Call(CmdDMAMap, p[:], nil)
	if err != nil {
		c.forgetMem(addr)
	}
	return err
}

func (c *Client) forgetMem(addr uint64) {
	c.memMu.Lock()
	defer c.memMu.Unlock()
	for i, m := range c.mems {
		if m.addr == addr {
			c.mems = append(c.mems[:i], c.mems[i+1:]...)
			return
		}
	}
}

// Unmap removes the mapping [addr, addr+size).
func (c *Client) Unmap(addr, size uint64) error {
	var p [DMAUnmapSize]byte
	DMAUnmap{Argsz: DMAUnmapSize, Addr: addr, Size: size}.Encode(p[:])
	_, err := c.Call(CmdDMAUnmap, p[:], nil)
	if err == nil {
		c.forgetMem(addr)
	}
	return err
}

// UnmapAll removes every mapping.
func (c *Client) UnmapAll() error {
	var p [DMAUnmapSize]byte
	DMAUnmap{Argsz: DMAUnmapSize, Flags: UnmapFlagAll}.Encode(p[:])
	_, err := c.Call(CmdDMAUnmap, p[:], nil)
	if err == nil {
		c.memMu.Lock()
		c.mems = nil
		c.memMu.Unlock()
	}
	return err
}

// UnmapDirty removes a mapping and returns its dirty bitmap at pgsize
// (legacy GET_DIRTY_BITMAP).
func (c *Client) UnmapDirty(addr, size, pgsize uint64) ([]byte, error) {
	n := BitmapBytes(size, pgsize)
	p := make([]byte, DMAUnmapSize+BitmapSize)
	DMAUnmap{Argsz: uint32(DMAUnmapSize + BitmapSize + n), Flags: UnmapFlagGetDirtyBitmap, Addr: addr, Size: size}.Encode(p)
	Bitmap{PgSize: pgsize, Size: n}.Encode(p[DMAUnmapSize:])
	r, err := c.Call(CmdDMAUnmap, p, nil)
	if err != nil {
		return nil, err
	}
	if uint64(len(r.Payload)) < DMAUnmapSize+BitmapSize+n {
		return nil, fmt.Errorf("dma unmap: reply of %d bytes: %w", len(r.Payload), syscall.EPROTO)
	}
	c.forgetMem(addr)
	return append([]byte(nil), r.Payload[DMAUnmapSize+BitmapSize:][:n]...), nil
}

// EventFD is an eventfd a test hands to the server for interrupts.
type EventFD struct {
	fd int
}

// NewEventFD creates a non-blocking eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventFD{fd: fd}, nil
}

// FD is the eventfd's descriptor (still owned by the EventFD).
func (e *EventFD) FD() int { return e.fd }

// Close closes the eventfd.
func (e *EventFD) Close() error { return unix.Close(e.fd) }

// Wait waits up to timeout for the eventfd to be signalled and returns the
// counter it read (0 on timeout).
func (e *EventFD) Wait(timeout time.Duration) (uint64, error) {
	pfd := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	// Each pass either reads, times out, or retries an interrupted poll.
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		n, err := unix.Poll(pfd, int(left/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("poll eventfd: %w", err)
		}
		if n == 0 {
			return 0, nil
		}
		var b [8]byte
		if _, err := unix.Read(e.fd, b[:]); err != nil {
			if err == unix.EAGAIN {
				continue
			}
			return 0, fmt.Errorf("read eventfd: %w", err)
		}
		return le.Uint64(b[:]), nil
	}
}

// SetIRQEventFDs assigns one eventfd per vector from start (TRIGGER).
func (c *Client) SetIRQEventFDs(index, start uint32, efds []*EventFD) error {
	fds := make([]int, len(efds))
	for i, e := range efds {
		fds[i] = e.fd
	}
	return c.SetIRQs(4|32, index, start, uint32(len(efds)), nil, fds)
}

// DisableIRQs disables every vector of an index (count 0, DATA_NONE|TRIGGER).
func (c *Client) DisableIRQs(index uint32) error {
	return c.SetIRQs(1|32, index, 0, 0, nil, nil)
}

// NewMemoryFile wraps m's fd in a new *os.File of its own (dup).
func (m *Memory) NewMemoryFile() (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(m.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	return os.NewFile(uintptr(fd), "memfd"), nil
}
