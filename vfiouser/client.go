package vfiouser

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/unixsock"
)

// Client is the client side of the protocol, as QEMU speaks it: tests,
// tools, benchmarks and a migration driver use it to drive a server.
//
// Calls are synchronous and serialised. Until the client maps memory
// without fd, the calling goroutine reads its own reply (a round trip costs
// one write and one read); from then on a reader goroutine serves the
// server's DMA_READ/DMA_WRITE at any time and passes replies on.
type Client struct {
	fd      int
	rd      *reader
	timeout time.Duration

	callMu  sync.Mutex
	wmu     sync.Mutex
	wbuf    []byte
	nextID  uint16
	maxXfer uint32

	bgOnce  sync.Once
	bg      bool
	bgDone  chan struct{}
	replies chan clientReply
	bgErr   chan error

	memMu                sync.RWMutex
	mems                 []*clientMem // ranges mapped without fd, served from here
	headerOnlyWriteReply bool         // answer DMA_WRITE as QEMU does

	// holdDMA makes the reader hold the server's DMA messages while a call
	// waits for its reply (calling), as QEMU does.
	holdDMA atomic.Bool
	calling atomic.Bool
}

// maxHeldDMA bounds the DMA messages the reader holds during one call;
// beyond it they are served at once (a server this busy is misbehaving).
const maxHeldDMA = 1024

type clientReply struct {
	hdr     Header
	payload []byte
	fds     []int
}

type clientMem struct {
	addr uint64
	data []byte
}

// Reply is a decoded reply: its payload and any fds it carried (the caller
// owns them). The payload is valid until the next call.
type Reply struct {
	Header  Header
	Payload []byte
	FDs     []int
}

// DefaultCapabilities are what QEMU 11.1 offers in VERSION.
func DefaultCapabilities() *Capabilities {
	return &Capabilities{
		MaxMsgFDs:       ptr(uint32(16)),
		MaxDataXferSize: ptr(uint32(DefaultMaxDataXferSize)),
		MaxDMAMaps:      ptr(uint32(65535)),
		PgSizes:         ptr(uint64(4096)),
		WriteMultiple:   ptr(true),
		Migration:       &MigrationCaps{PgSize: 4096, MaxBitmapSize: 256 << 20},
	}
}

// Dial connects to a server socket.
func Dial(path string) (*Client, error) {
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vfio-user: dial %s: %w", path, err)
	}
	defer uc.Close()
	fd, err := dupBlocking(uc)
	if err != nil {
		return nil, fmt.Errorf("vfio-user: dial %s: %w", path, err)
	}
	return NewClient(fd), nil
}

// NewClient wraps a connected, blocking stream socket, which the client
// owns from then on. Replies are awaited for at most 10 s (SetTimeout).
func NewClient(fd int) *Client {
	c := &Client{
		fd:      fd,
		rd:      newReader(fd, readBufInitial, HeaderSize+maxMsgOverhead+64<<20+256<<20),
		wbuf:    make([]byte, 0, readBufInitial),
		maxXfer: DefaultMaxDataXferSize,
	}
	c.SetTimeout(10 * time.Second)
	return c
}

// SetHeaderOnlyWriteReplies makes the client answer DMA_WRITE with the
// header alone, as QEMU does, instead of the specification's address and
// count. Call it before mapping memory without fd.
func (c *Client) SetHeaderOnlyWriteReplies(on bool) {
	c.memMu.Lock()
	c.headerOnlyWriteReply = on
	c.memMu.Unlock()
}

// SetTimeout bounds the wait for each reply. While the caller reads its own
// replies this is the socket's receive timeout; with the reader goroutine
// it is a timer per call.
func (c *Client) SetTimeout(d time.Duration) {
	c.callMu.Lock()
	defer c.callMu.Unlock()
	c.timeout = d
	if !c.bg {
		setRecvTimeout(c.fd, d)
	}
}

func setRecvTimeout(fd int, d time.Duration) {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// HoldDMAWhileWaiting makes the client serve the server's
// DMA_READ/DMA_WRITE only while none of its calls waits for a reply, as
// QEMU does: it handles them under its big lock, which a vCPU holds while
// it waits for the reply to a register access. A server whose reply
// depends on a message DMA then stalls as it would with QEMU. It takes
// effect once memory is mapped without fd.
func (c *Client) HoldDMAWhileWaiting(on bool) { c.holdDMA.Store(on) }

// Close closes the socket.
func (c *Client) Close() error {
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	if !c.bg {
		c.rd.close()
		return unix.Close(c.fd)
	}
	// The reader goroutine sees EOF and closes the socket.
	<-c.bgDone
	return nil
}

// Send writes one message as given, for tests that speak raw protocol.
func (c *Client) Send(h Header, payload []byte, fds []int) error {
	b := make([]byte, HeaderSize+len(payload))
	h.Encode(b)
	copy(b[HeaderSize:], payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeMsg(c.fd, b, fds)
}

// Call sends a command and waits for its reply. A reply with the error flag
// becomes a *ReplyError.
func (c *Client) Call(cmd Command, payload []byte, fds []int) (Reply, error) {
	return c.call(cmd, 0, payload, fds)
}

func (c *Client) call(cmd Command, flags uint32, payload []byte, fds []int) (Reply, error) {
	c.callMu.Lock()
	defer c.callMu.Unlock()
	if flags&FlagNoReply == 0 {
		// From before the request is out, as a vCPU takes QEMU's lock
		// before it sends.
		c.calling.Store(true)
		defer c.calling.Store(false)
	}
	c.nextID++
	id := c.nextID
	size := HeaderSize + len(payload)
	if cap(c.wbuf) < size {
		c.wbuf = make([]byte, size)
	}
	b := c.wbuf[:size]
	Header{MsgID: id, Command: cmd, Size: uint32(size), Flags: FlagTypeCommand | flags}.Encode(b)
	copy(b[HeaderSize:], payload)
	c.wmu.Lock()
	err := writeMsg(c.fd, b, fds)
	c.wmu.Unlock()
	if err != nil {
		return Reply{}, fmt.Errorf("%s: %w", cmd, err)
	}
	if flags&FlagNoReply != 0 {
		return Reply{}, nil
	}
	r, err := c.wait(id)
	if err != nil {
		return Reply{}, fmt.Errorf("%s: %w", cmd, err)
	}
	if r.hdr.Command != cmd {
		unixsock.CloseFDs(r.fds)
		return Reply{}, fmt.Errorf("%s: reply for %s: %w", cmd, r.hdr.Command, syscall.EPROTO)
	}
	if r.hdr.Flags&FlagError != 0 {
		unixsock.CloseFDs(r.fds)
		return Reply{}, &ReplyError{Command: cmd, Errno: syscall.Errno(r.hdr.Error)}
	}
	return Reply{Header: r.hdr, Payload: r.payload, FDs: r.fds}, nil
}

func (c *Client) wait(id uint16) (clientReply, error) {
	if c.bg {
		t := time.NewTimer(c.timeout)
		defer t.Stop()
		for {
			select {
			case r := <-c.replies:
				if r.hdr.MsgID != id {
					unixsock.CloseFDs(r.fds)
					continue // a late reply to a call that timed out
				}
				return r, nil
			case err := <-c.bgErr:
				c.bgErr <- err
				return clientReply{}, err
			case <-t.C:
				return clientReply{}, fmt.Errorf("no reply within %v: %w", c.timeout, syscall.ETIMEDOUT)
			}
		}
	}
	// Each pass consumes one message.
	for {
		m, err := c.rd.next(uint32(c.rd.max))
		if errors.Is(err, syscall.EAGAIN) {
			// The receive timeout; a late reply is skipped by its id.
			return clientReply{}, fmt.Errorf("no reply within %v: %w", c.timeout, syscall.ETIMEDOUT)
		}
		if err != nil {
			return clientReply{}, err
		}
		if !m.hdr.IsReply() {
			c.serveDMA(&m)
			m.closeFDs()
			continue
		}
		fds := append([]int(nil), m.fds...)
		m.fds = m.fds[:0]
		if m.hdr.MsgID != id {
			unixsock.CloseFDs(fds)
			continue
		}
		return clientReply{hdr: m.hdr, payload: m.payload, fds: fds}, nil
	}
}

// startReader switches to a reader goroutine, so server-initiated DMA is
// served while the caller is idle.
func (c *Client) startReader() {
	c.bgOnce.Do(func() {
		c.callMu.Lock()
		defer c.callMu.Unlock()
		c.replies = make(chan clientReply, 1)
		c.bgErr = make(chan error, 1)
		c.bgDone = make(chan struct{})
		c.bg = true
		setRecvTimeout(c.fd, 0) // the reader goroutine waits for as long as it takes
		go c.readLoop()
	})
}

func (c *Client) readLoop() {
	defer func() {
		c.rd.close()
		unix.Close(c.fd)
		close(c.bgDone)
	}()
	var held []message
	for {
		m, err := c.rd.next(uint32(c.rd.max))
		if err != nil {
			c.bgErr <- err
			return
		}
		if !m.hdr.IsReply() {
			if c.holdDMA.Load() && c.calling.Load() && len(held) < maxHeldDMA {
				held = append(held, message{hdr: m.hdr, payload: append([]byte(nil), m.payload...)})
			} else {
				c.serveDMA(&m)
			}
			m.closeFDs()
			continue
		}
		r := clientReply{hdr: m.hdr, payload: append([]byte(nil), m.payload...), fds: append([]int(nil), m.fds...)}
		m.fds = m.fds[:0]
		select {
		case c.replies <- r:
		default: // nobody waits (a call timed out): drop it
			unixsock.CloseFDs(r.fds)
		}
		// The call is answered: what it held up is served now.
		for i := range held {
			c.serveDMA(&held[i])
		}
		held = held[:0]
	}
}

// serveDMA answers the server's DMA_READ/DMA_WRITE from memory mapped
// without fd.
func (c *Client) serveDMA(m *message) {
	reply := func(payload []byte, errno syscall.Errno) {
		h := Header{MsgID: m.hdr.MsgID, Command: m.hdr.Command, Flags: FlagTypeReply}
		if errno != 0 {
			h.Flags |= FlagError
			h.Error = uint32(errno)
			payload = nil
		}
		h.Size = uint32(HeaderSize + len(payload))
		b := make([]byte, h.Size)
		h.Encode(b)
		copy(b[HeaderSize:], payload)
		c.wmu.Lock()
		writeMsg(c.fd, b, nil)
		c.wmu.Unlock()
	}
	c.memMu.Lock()
	defer c.memMu.Unlock()
	write := m.hdr.Command == CmdDMAWrite
	addr, count, data, err := decodeDMARW(m.payload, write)
	if err != nil || (m.hdr.Command != CmdDMARead && !write) {
		reply(nil, syscall.EINVAL)
		return
	}
	if count > uint64(c.maxXfer) {
		reply(nil, syscall.EINVAL)
		return
	}
	var mem []byte
	for _, cm := range c.mems {
		if addr >= cm.addr && addr-cm.addr <= uint64(len(cm.data)) && count <= uint64(len(cm.data))-(addr-cm.addr) {
			mem = cm.data[addr-cm.addr : addr-cm.addr+count]
			break
		}
	}
	if mem == nil {
		reply(nil, syscall.EFAULT)
		return
	}
	if !write {
		reply(encodeDMARW(addr, len(mem), mem), 0)
		return
	}
	copy(mem, data)
	if c.headerOnlyWriteReply {
		reply(nil, 0)
		return
	}
	reply(encodeDMARW(addr, len(mem), nil), 0)
}

// Negotiate sends VERSION with caps (DefaultCapabilities when nil) and
// returns the server's answer.
func (c *Client) Negotiate(caps *Capabilities) (Version, error) {
	if caps == nil {
		caps = DefaultCapabilities()
	}
	p, err := Version{Major: 0, Minor: 0, Caps: caps}.Encode(nil)
	if err != nil {
		return Version{}, err
	}
	r, err := c.Call(CmdVersion, p, nil)
	if err != nil {
		return Version{}, err
	}
	v, err := DecodeVersion(r.Payload)
	if err != nil {
		return Version{}, err
	}
	if v.Caps != nil && v.Caps.MaxDataXferSize != nil {
		c.maxXfer = *v.Caps.MaxDataXferSize
	}
	return v, nil
}

// GetInfo asks for the device info.
func (c *Client) GetInfo() (DeviceInfo, error) {
	var p [DeviceInfoSize]byte
	DeviceInfo{Argsz: DeviceInfoSize}.Encode(p[:])
	r, err := c.Call(CmdDeviceGetInfo, p[:], nil)
	if err != nil {
		return DeviceInfo{}, err
	}
	return DecodeDeviceInfo(r.Payload)
}

// RegionInfo asks for a region's info the way QEMU does: argsz 32 first,
// then again with the argsz the server needs for the capability chain. The
// returned file (nil when the region is not mappable) belongs to the caller.
func (c *Client) RegionInfo(index uint32) (RegionInfo, RegionCaps, *os.File, error) {
	argsz := uint32(RegionInfoSize)
	for try := 0; try < 2; try++ {
		var p [RegionInfoSize]byte
		RegionInfo{Argsz: argsz, Index: index}.Encode(p[:])
		r, err := c.Call(CmdGetRegionInfo, p[:], nil)
		if err != nil {
			return RegionInfo{}, RegionCaps{}, nil, err
		}
		ri, err := DecodeRegionInfo(r.Payload)
		if err != nil {
			unixsock.CloseFDs(r.FDs)
			return RegionInfo{}, RegionCaps{}, nil, err
		}
		if ri.Argsz > argsz {
			unixsock.CloseFDs(r.FDs)
			argsz = ri.Argsz
			continue
		}
		caps, err := DecodeRegionCaps(r.Payload, ri.CapOffset)
		if err != nil {
			unixsock.CloseFDs(r.FDs)
			return ri, caps, nil, err
		}
		var f *os.File
		if len(r.FDs) > 0 {
			f = os.NewFile(uintptr(r.FDs[0]), "region")
			unixsock.CloseFDs(r.FDs[1:])
		}
		return ri, caps, f, nil
	}
	return RegionInfo{}, RegionCaps{}, nil, fmt.Errorf("region info %d: argsz keeps growing: %w", index, syscall.EPROTO)
}

// RegionIOFDs asks for a region's io fds.
func (c *Client) RegionIOFDs(index uint32) (RegionIOFDs, error) {
	var p [RegionIOFDsSize]byte
	RegionIOFDs{Argsz: RegionIOFDsSize, Index: index}.Encode(p[:])
	r, err := c.Call(CmdGetRegionIOFDs, p[:], nil)
	if err != nil {
		return RegionIOFDs{}, err
	}
	unixsock.CloseFDs(r.FDs)
	return DecodeRegionIOFDs(r.Payload)
}

// IRQInfo asks for an IRQ index's info.
func (c *Client) IRQInfo(index uint32) (IRQInfo, error) {
	var p [IRQInfoSize]byte
	IRQInfo{Argsz: IRQInfoSize, Index: index}.Encode(p[:])
	r, err := c.Call(CmdGetIRQInfo, p[:], nil)
	if err != nil {
		return IRQInfo{}, err
	}
	return DecodeIRQInfo(r.Payload)
}

// SetIRQs sends DEVICE_SET_IRQS with flags (data kind | action), Count
// bools or fds.
func (c *Client) SetIRQs(flags, index, start, count uint32, bools []bool, fds []int) error {
	p := make([]byte, IRQSetSize+len(bools))
	IRQSet{Argsz: uint32(len(p)), Flags: flags, Index: index, Start: start, Count: count}.Encode(p)
	for i, b := range bools {
		if b {
			p[IRQSetSize+i] = 1
		}
	}
	_, err := c.Call(CmdSetIRQs, p, fds)
	return err
}

// ReadRegion reads len(p) bytes of a region at off.
func (c *Client) ReadRegion(index uint32, off uint64, p []byte) error {
	var q [RegionRWSize]byte
	RegionRW{Offset: off, Region: index, Count: uint32(len(p))}.Encode(q[:])
	r, err := c.Call(CmdRegionRead, q[:], nil)
	if err != nil {
		return err
	}
	// The reply's count says how much is data; a longer payload is padding.
	if len(r.Payload) < RegionRWSize || int(le.Uint32(r.Payload[12:])) != len(p) || len(r.Payload) < RegionRWSize+len(p) {
		return fmt.Errorf("region read: reply of %d bytes for %d: %w", len(r.Payload), len(p), syscall.EPROTO)
	}
	copy(p, r.Payload[RegionRWSize:RegionRWSize+len(p)])
	return nil
}

func regionWritePayload(index uint32, off uint64, p []byte) []byte {
	q := make([]byte, RegionRWSize+len(p))
	RegionRW{Offset: off, Region: index, Count: uint32(len(p))}.Encode(q)
	copy(q[RegionRWSize:], p)
	return q
}

// WriteRegion writes p to a region at off and waits for the reply.
func (c *Client) WriteRegion(index uint32, off uint64, p []byte) error {
	_, err := c.call(CmdRegionWrite, 0, regionWritePayload(index, off, p), nil)
	return err
}

// WritePosted writes p with NO_REPLY, as QEMU posts writes.
func (c *Client) WritePosted(index uint32, off uint64, p []byte) error {
	_, err := c.call(CmdRegionWrite, FlagNoReply, regionWritePayload(index, off, p), nil)
	return err
}

// WriteMulti sends REGION_WRITE_MULTI and returns the count of writes done.
func (c *Client) WriteMulti(items []WriteMultiItem) (uint64, error) {
	p := make([]byte, writeMultiHdrSize+len(items)*WriteMultiItemSize)
	le.PutUint64(p, uint64(len(items)))
	for i, w := range items {
		w.Encode(p[writeMultiHdrSize+i*WriteMultiItemSize:])
	}
	r, err := c.Call(CmdRegionWriteMulti, p, nil)
	if err != nil {
		return 0, err
	}
	if len(r.Payload) < 8 {
		return 0, fmt.Errorf("write multi: short reply: %w", syscall.EPROTO)
	}
	return le.Uint64(r.Payload), nil
}

// Reset sends DEVICE_RESET.
func (c *Client) Reset() error {
	_, err := c.Call(CmdDeviceReset, nil, nil)
	return err
}
