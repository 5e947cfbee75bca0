package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/migration"
	"e1000e-vfu/vfiouser"
)

// An abuser is one kind of hostile client. Its run connects, misbehaves,
// reads STATUS between its actions through session.read when its connection
// still allows, and disconnects; it returns an error only when the
// benchmark cannot go on (the server died, a setup step failed), never
// because the server refused the abuse.
type abuser struct {
	name string
	run  func(s *session) error
	// goal is the worst round trip allowed while it is connected, when
	// not goalRTT.
	goal time.Duration
}

var abusers = []abuser{
	{name: "garbage", run: garbage},
	{name: "truncated", run: truncated},
	{name: "fd-flood", run: fdFlood},
	{name: "map-churn", run: mapChurn},
	{name: "abandoned-migration", run: abandonedMigration},
	{name: "hostile-stream", run: hostileStream},
	// Each of its interrupts holds the NIC until the server empties the
	// eventfd.
	{name: "blocking-eventfd", run: blockingEventFD, goal: irqRelease + goalRTT},
	{name: "hostile-tx", run: hostileTX},
}

// session is one round of an abuser.
type session struct {
	b       *bench
	round   int
	own     []time.Duration
	refused int
	notes   []string
	closers []func() error
}

// notef records a line on what the round did, printed below the table.
func (s *session) notef(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf("round %d: ", s.round)+fmt.Sprintf(format, args...))
}

// rng is deterministic per round, so runs compare.
func (s *session) rng() *rand.Rand {
	return rand.New(rand.NewPCG(uint64(s.round), 0xe1000e))
}

// read times one STATUS read on the abuser's own connection. A refused read
// (the server has dropped the connection) is counted, not timed.
func (s *session) read(c *vfiouser.Client) { s.readReg(c, e1000e.STATUS) }

// timed times call as one of the abuser's own round trips, or counts it
// refused.
func (s *session) timed(call func() error) error {
	start := time.Now()
	if err := call(); err != nil {
		s.refused++
		return err
	}
	s.own = append(s.own, time.Since(start))
	return nil
}

// readReg times one read of register reg as read does, and returns its
// value and whether it was answered.
func (s *session) readReg(c *vfiouser.Client, reg uint32) (uint32, bool) {
	var v [4]byte
	err := s.timed(func() error { return c.ReadRegion(device.RegionBAR0, uint64(reg), v[:]) })
	return binary.LittleEndian.Uint32(v[:]), err == nil
}

// client connects; the round's end closes the connection.
func (s *session) client() (*vfiouser.Client, error) {
	c, err := s.b.connect(10 * time.Second)
	if err == nil {
		s.atEnd(c.Close)
	}
	return c, err
}

// memory is guest memory the round's end closes.
func (s *session) memory(size int) (*vfiouser.Memory, error) {
	m, err := vfiouser.NewMemory(size)
	if err == nil {
		s.atEnd(m.Close)
	}
	return m, err
}

// atEnd has the round's end call f, the last registered first.
func (s *session) atEnd(f func() error) { s.closers = append(s.closers, f) }

// end closes what the round opened: its run has returned, and the abuser
// disconnects.
func (s *session) end() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// hold keeps a connection open for a while, as an abuser that stalls.
const hold = 100 * time.Millisecond

// garbage: random bytes, either instead of VERSION or after it.
func garbage(s *session) error {
	r := s.rng()
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(r.Uint32())
	}
	if s.round%2 == 0 {
		c, err := net.DialTimeout("unix", s.b.srv.Socket, clientTimeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(clientTimeout))
		c.Write(junk) // the server may drop the connection before it is all sent
		drain(c)
		return nil
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	s.read(c)
	c.Send(vfiouser.Header{MsgID: 0xfff0, Command: vfiouser.Command(junk[0]), Size: 1 << 12}, junk[:1<<12-vfiouser.HeaderSize], nil)
	c.Send(vfiouser.Header{}, junk, nil) // a header of size 0: the stream breaks
	s.read(c)
	return nil
}

// drain reads until the server closes the connection or the deadline.
func drain(c net.Conn) {
	buf := make([]byte, 4096)
	// Each pass reads at least a byte; the deadline bounds them.
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// truncated: a message cut short, then silence, then the disconnect: in
// the body of a message whose header promised more, or in the header.
func truncated(s *session) error {
	if s.round%2 == 1 {
		c, err := rawNegotiated(s.b.srv.Socket)
		if err != nil {
			return err
		}
		defer c.Close()
		var h [vfiouser.HeaderSize]byte
		vfiouser.Header{MsgID: 0xfff1, Command: vfiouser.CmdRegionRead, Size: 32}.Encode(h[:])
		c.Write(h[:vfiouser.HeaderSize/2])
		time.Sleep(hold)
		return nil
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	s.read(c)
	body := make([]byte, vfiouser.RegionRWSize+4)
	vfiouser.RegionRW{Offset: e1000e.IMS, Region: device.RegionBAR0, Count: 4096 - vfiouser.HeaderSize - vfiouser.RegionRWSize}.Encode(body)
	if err := c.Send(vfiouser.Header{MsgID: 0xfff1, Command: vfiouser.CmdRegionWrite, Size: 4096}, body, nil); err != nil {
		return err
	}
	time.Sleep(hold)
	return nil
}

// rawNegotiated is a connection past VERSION, for abusers that write
// what the client cannot (less than a header).
func rawNegotiated(path string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", path, clientTimeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(clientTimeout))
	p, err := vfiouser.Version{Major: 0, Minor: 1, Caps: vfiouser.DefaultCapabilities()}.Encode(nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	msg := make([]byte, vfiouser.HeaderSize+len(p))
	vfiouser.Header{MsgID: 1, Command: vfiouser.CmdVersion, Size: uint32(len(msg))}.Encode(msg)
	copy(msg[vfiouser.HeaderSize:], p)
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return nil, fmt.Errorf("VERSION: %w", err)
	}
	var hb [vfiouser.HeaderSize]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("VERSION reply: %w", err)
	}
	h, err := vfiouser.DecodeHeader(hb[:])
	if err == nil && h.Flags&vfiouser.FlagError != 0 {
		err = fmt.Errorf("refused with errno %d", h.Error)
	}
	if err == nil {
		_, err = io.CopyN(io.Discard, c, int64(h.Size)-vfiouser.HeaderSize)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("VERSION reply: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// fdFlood: descriptors where none belong, the most a message may carry,
// and finally more than the server receives at once (which ends the
// connection). Every descriptor the server got must be closed again.
func fdFlood(s *session) error {
	mem, err := s.memory(4096)
	if err != nil {
		return err
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	fds := func(n int) []int {
		f := make([]int, n)
		for i := range f {
			f[i] = mem.FD()
		}
		return f
	}
	var rw [vfiouser.RegionRWSize]byte
	vfiouser.RegionRW{Offset: e1000e.STATUS, Region: device.RegionBAR0, Count: 4}.Encode(rw[:])
	var dm [vfiouser.DMAMapSize]byte
	vfiouser.DMAMap{Argsz: vfiouser.DMAMapSize, Flags: vfiouser.DMAFlagRead, Addr: 0x100000, Size: 4096}.Encode(dm[:])
	// 100 messages of 16 descriptors, refused one by one.
	for i := range 100 {
		if i%2 == 0 {
			c.Call(vfiouser.CmdRegionRead, rw[:], fds(vfiouser.MaxMsgFDs))
		} else {
			c.Call(vfiouser.CmdDMAMap, dm[:], fds(vfiouser.MaxMsgFDs))
		}
		if i%10 == 9 {
			s.read(c)
		}
	}
	// Beyond the kernel's own limit of one message (SCM_MAX_FD) nothing
	// is sent; 250 is more than the server's receive buffer holds.
	c.Send(vfiouser.Header{MsgID: 0xfff2, Command: vfiouser.CmdRegionRead, Size: uint32(vfiouser.HeaderSize + len(rw))}, rw[:], fds(250))
	s.read(c)
	return nil
}

// mapChurn: a memfd mapped and unmapped again and again, then a thousand
// maps left for the server to undo at the disconnect.
func mapChurn(s *session) error {
	const size = 1 << 20
	mem, err := s.memory(size)
	if err != nil {
		return err
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	const iova = 0x1_0000_0000
	rw := vfiouser.DMAFlagRead | vfiouser.DMAFlagWrite
	for i := range s.b.o.churn {
		if err := c.Map(iova, mem, 0, size, rw); err != nil {
			return fmt.Errorf("map %d: %w", i, err)
		}
		if err := c.Unmap(iova, size); err != nil {
			return fmt.Errorf("unmap %d: %w", i, err)
		}
		if i%100 == 99 {
			s.read(c)
		}
	}
	for i := range uint64(1000) {
		if err := c.Map(iova+i*4096, mem, (i%256)*4096, 4096, rw); err != nil {
			return fmt.Errorf("map page %d: %w", i, err)
		}
		if i%100 == 99 {
			s.read(c)
		}
	}
	return nil
}

// abandonedMigration: a migration started and left: a v2 save, a v2
// resume and a v1 save, each dropped halfway by the client's disconnect.
func abandonedMigration(s *session) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	s.read(c)
	switch s.round % 3 {
	case 0:
		if _, err := c.SetMigrationState(device.MigStopCopy); err != nil {
			return fmt.Errorf("STOP_COPY: %w", err)
		}
		s.read(c)
		buf := make([]byte, 100)
		if _, err := c.MigDataRead(buf); err != nil {
			return fmt.Errorf("MIG_DATA_READ: %w", err)
		}
	case 1:
		if _, err := c.SetMigrationState(device.MigResuming); err != nil {
			return fmt.Errorf("RESUMING: %w", err)
		}
		if err := c.MigDataWrite(s.b.good[:len(s.b.good)/2]); err != nil {
			return fmt.Errorf("MIG_DATA_WRITE: %w", err)
		}
	case 2:
		// v1: running|saving, then one chunk of data staged and half read.
		if err := c.WriteRegion(device.RegionMigration, 0, le32(3)); err != nil {
			return fmt.Errorf("v1 device_state: %w", err)
		}
		var pending [8]byte
		if err := c.ReadRegion(device.RegionMigration, 8, pending[:]); err != nil {
			return fmt.Errorf("v1 pending_bytes: %w", err)
		}
		half := make([]byte, 64)
		if err := c.ReadRegion(device.RegionMigration, migration.V1DataOffset, half); err != nil {
			return fmt.Errorf("v1 data: %w", err)
		}
	}
	s.read(c)
	return nil
}

// hostileStream: in RESUMING, random bytes; a saved stream cut short; a
// saved stream with a bit flipped; and the saved header followed by
// many empty sections in small posted writes, STATUS read between them.
func hostileStream(s *session) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	good := s.b.good
	_, hdr, err := migration.ParseHeader(good, migration.Limits{})
	if err != nil {
		return fmt.Errorf("the saved stream's header: %w", err)
	}
	resume := func() error {
		if err := c.Reset(); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		if _, err := c.SetMigrationState(device.MigResuming); err != nil {
			return fmt.Errorf("RESUMING: %w", err)
		}
		return nil
	}
	// The load is refused, by a write or by the move to STOP.
	finish := func() { c.SetMigrationState(device.MigStop) }

	if err := resume(); err != nil {
		return err
	}
	r := s.rng()
	chunk := make([]byte, 4096)
	for i := range 16 {
		for j := range chunk {
			chunk[j] = byte(r.Uint32())
		}
		c.MigDataWrite(chunk)
		if i%4 == 3 {
			s.read(c)
		}
	}
	finish()

	if err := resume(); err != nil {
		return err
	}
	c.MigDataWrite(good[:hdr+(len(good)-hdr)/2])
	s.read(c)
	finish()

	if err := resume(); err != nil {
		return err
	}
	flipped := append([]byte(nil), good...)
	flipped[hdr+r.IntN(len(good)-hdr)] ^= 1 << r.IntN(8)
	c.MigDataWrite(flipped)
	s.read(c)
	finish()

	if err := resume(); err != nil {
		return err
	}
	if err := s.manySections(c, good[:hdr]); err != nil {
		return err
	}
	finish()
	s.read(c)
	return nil
}

// manySections sends hdr, then empty sections up to o.streamKiB, in posted
// MIG_DATA_WRITEs of o.writeSize bytes, reading STATUS every 256 writes.
func (s *session) manySections(c *vfiouser.Client, hdr []byte) error {
	total := s.b.o.streamKiB << 10
	stream := make([]byte, 0, total)
	stream = append(stream, hdr...)
	empty := []byte{'S', 0, 1, 'x', 0, 0, 0, 0} // optional section "x", no payload
	for len(stream)+len(empty) <= total {
		stream = append(stream, empty...)
	}
	payload := make([]byte, vfiouser.MigDataSize+s.b.o.writeSize)
	for i := 0; len(stream) > 0; i++ {
		n := min(len(stream), s.b.o.writeSize)
		p := payload[:vfiouser.MigDataSize+n]
		vfiouser.MigData{Argsz: vfiouser.MigDataSize, Size: uint32(n)}.Encode(p)
		copy(p[vfiouser.MigDataSize:], stream[:n])
		stream = stream[n:]
		h := vfiouser.Header{MsgID: 0xfff3, Command: vfiouser.CmdMigDataWrite, Size: uint32(vfiouser.HeaderSize + len(p)), Flags: vfiouser.FlagNoReply}
		if err := c.Send(h, p, nil); err != nil {
			if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
				s.refused++
				return nil
			}
			return fmt.Errorf("posted MIG_DATA_WRITE: %w", err)
		}
		if i%256 == 255 {
			s.read(c)
		}
	}
	return nil
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
