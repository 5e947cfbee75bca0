package main

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/vfiouser"
)

// Abusers that turn the device's own work against the server: its
// interrupts and its transmit ring.

// irqRelease is how often the server empties an interrupt eventfd a
// connected client has filled (vfiouser's irqWatchTick): the longest an
// interrupt write can be stuck, holding the NIC's lock, with the client
// still connected.
const irqRelease = 50 * time.Millisecond

// stuckIRQs is how many interrupts blockingEventFD makes on its full
// eventfd per round.
const stuckIRQs = 8

// blockingEventFD: an MSI-X eventfd handed over with SET_IRQS, switched
// back to blocking mode (the client shares its file description), filled
// to one short of full, and then an interrupt; again and again. Half the
// interrupts are a posted SET_IRQS software trigger (written on the
// connection's goroutine), half a posted ICS write (written by the NIC
// under its lock, which the control socket's query-stats waits for). Each
// write is stuck until the server empties the counter, every irqRelease;
// the abuser's next STATUS read waits behind it.
func blockingEventFD(s *session) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	e, err := vfiouser.NewEventFD()
	if err != nil {
		return err
	}
	s.atEnd(e.Close)
	msix, err := findCap(c, device.CapIDMSIX)
	if err != nil {
		return err
	}
	if err := c.WriteRegion(device.RegionConfig, uint64(msix+device.MSIXControl), le16(device.MSIXFlagEnable)); err != nil {
		return fmt.Errorf("MSI-X enable: %w", err)
	}
	// TX queue 0's cause on vector 0, unmasked.
	if err := writeRegs(c, e1000e.IVAR, ivarValid<<8, e1000e.IMS, e1000e.ICR_TXQ0); err != nil {
		return err
	}
	if err := c.SetIRQEventFDs(device.IRQMSIX, 0, []*vfiouser.EventFD{e}); err != nil {
		return fmt.Errorf("SET_IRQS: %w", err)
	}
	trigger := make([]byte, vfiouser.IRQSetSize)
	vfiouser.IRQSet{Argsz: vfiouser.IRQSetSize, Flags: uint32(device.IRQDataNone) | uint32(device.IRQActionTrigger),
		Index: device.IRQMSIX, Count: 1}.Encode(trigger)
	released := 0
	for i := range stuckIRQs {
		if err := fillBlocking(e.FD()); err != nil {
			return err
		}
		if i%2 == 0 {
			err = c.Send(vfiouser.Header{MsgID: 0xfff4, Command: vfiouser.CmdSetIRQs, Size: uint32(vfiouser.HeaderSize + len(trigger)), Flags: vfiouser.FlagNoReply}, trigger, nil)
		} else {
			err = c.WritePosted(device.RegionBAR0, e1000e.ICS, le32(e1000e.ICR_TXQ0))
		}
		if err != nil {
			return fmt.Errorf("interrupt %d: %w", i, err)
		}
		// Answered once the stuck write has finished.
		s.read(c)
		if n, err := e.Wait(0); err == nil && n >= 1 {
			released++
		}
	}
	s.notef("%d interrupts on a full blocking eventfd, %d written once the server emptied it", stuckIRQs, released)
	return nil
}

// ivarValid marks an IVAR field's vector valid.
const ivarValid = 0x8

// fillBlocking sets the counter of eventfd fd to one short of full and
// leaves it in blocking mode: a write of 1 to it blocks.
func fillBlocking(fd int) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	if _, err := device.ReadEventfd(fd); err != nil && err != unix.EAGAIN {
		return fmt.Errorf("emptying the eventfd: %w", err)
	}
	if _, err := unix.Write(fd, le64(0xfffffffffffffffe)); err != nil {
		return fmt.Errorf("filling the eventfd: %w", err)
	}
	return unix.SetNonblock(fd, false)
}

// findCap walks the configuration space's capability list for id.
func findCap(c *vfiouser.Client, id byte) (uint32, error) {
	var b [2]byte
	if err := c.ReadRegion(device.RegionConfig, device.CfgCapPtr, b[:1]); err != nil {
		return 0, fmt.Errorf("capability pointer: %w", err)
	}
	// At most 48 capabilities fit in the 192 bytes past the header.
	for off, n := uint32(b[0]), 0; off != 0 && n < 48; off, n = uint32(b[1]), n+1 {
		if err := c.ReadRegion(device.RegionConfig, uint64(off), b[:]); err != nil {
			return 0, fmt.Errorf("capability at %#x: %w", off, err)
		}
		if b[0] == id {
			return off, nil
		}
	}
	return 0, fmt.Errorf("no capability %#x", id)
}

// writeRegs writes BAR0 register, value pairs in order.
func writeRegs(c *vfiouser.Client, rv ...uint32) error {
	for i := 0; i+1 < len(rv); i += 2 {
		if err := c.WriteRegion(device.RegionBAR0, uint64(rv[i]), le32(rv[i+1])); err != nil {
			return fmt.Errorf("BAR0 write at %#x: %w", rv[i], err)
		}
	}
	return nil
}

// The hostile transmit ring: in guest memory at txBase, the ring, then one
// frame all its packets send.
const (
	txBase    = 0x2000_0000
	txPayload = 65000 // TCP payload of each packet, cut at MSS 1
	txHeaders = 54    // Ethernet, IPv4 and TCP headers
)

// hostileTX: guest memory mapped from a memfd, a transmit ring of
// o.txPackets TSO packets of 64 KiB asking for MSS 1 (a context and a data
// descriptor each), and one doorbell (TDT) for all of it. The NIC cuts at
// its minimum MSS and does one budget of work per doorbell, the rest on
// its own goroutine; the abuser reads TDH until the ring is done, and
// GPTC for the frames sent. The server's backend (--netdev none) drops the
// frames once made, so all the NIC's work is done and counted.
func hostileTX(s *session) error {
	descs := 2 * uint32(s.b.o.txPackets)
	ringLen := ((descs + 8) &^ 7) * 16 // a multiple of 128 bytes, longer than descs
	frameAt := (ringLen + 4095) &^ 4095
	size := int(frameAt) + (txHeaders+txPayload+4095)&^4095
	mem, err := s.memory(size)
	if err != nil {
		return err
	}
	fillTXRing(mem.Data, descs, frameAt)
	c, err := s.client()
	if err != nil {
		return err
	}
	if err := c.Map(txBase, mem, 0, uint64(size), vfiouser.DMAFlagRead|vfiouser.DMAFlagWrite); err != nil {
		return fmt.Errorf("DMA map: %w", err)
	}
	var cmd [2]byte
	if err := c.ReadRegion(device.RegionConfig, device.CfgCommand, cmd[:]); err != nil {
		return fmt.Errorf("command register: %w", err)
	}
	if err := c.WriteRegion(device.RegionConfig, device.CfgCommand, le16(binary.LittleEndian.Uint16(cmd[:])|device.CmdMemory|device.CmdBusMaster)); err != nil {
		return fmt.Errorf("bus master: %w", err)
	}
	if err := writeRegs(c, e1000e.CTRL, e1000e.CTRL_RST|e1000e.CTRL_SLU,
		e1000e.TDBAL0, txBase, e1000e.TDBAH0, 0, e1000e.TDLEN0, ringLen,
		e1000e.TDH0, 0, e1000e.TDT0, 0, e1000e.TCTL, e1000e.TCTL_EN); err != nil {
		return err
	}
	start := time.Now()
	if err := s.timed(func() error { return c.WriteRegion(device.RegionBAR0, e1000e.TDT0, le32(descs)) }); err != nil {
		return nil // refused: the server dropped the connection
	}
	deadline := start.Add(2 * time.Minute)
	// Each pass is one read; the deadline bounds them.
	for {
		tdh, ok := s.readReg(c, e1000e.TDH0)
		if !ok {
			return nil
		}
		if tdh == descs {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("TDH %d of %d after %v", tdh, descs, time.Since(start))
		}
		time.Sleep(s.b.o.pollPeriod)
	}
	took := time.Since(start)
	frames, _ := s.readReg(c, e1000e.GPTC)
	s.notef("%d descriptors (%d packets), %d frames sent in %.2f s", descs, s.b.o.txPackets, frames, took.Seconds())
	return nil
}

// fillTXRing writes descs/2 TSO packets into mem's ring, each a context
// descriptor (IPv4/TCP, MSS 1) and a data descriptor for the one frame at
// frameAt.
func fillTXRing(mem []byte, descs, frameAt uint32) {
	const (
		dext, tse, eop, ifcs, rs = 1 << 29, 1 << 26, 1 << 24, 1 << 25, 1 << 27
		dtypData, cmdIP, cmdTCP  = 1 << 20, 1 << 25, 1 << 24
		ixsm, txsm               = 1, 2
	)
	frame := mem[frameAt : frameAt+txHeaders+txPayload]
	copy(frame, []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	frame[14], frame[22], frame[23] = 0x45, 64, 6 // IPv4, TTL, TCP
	frame[46], frame[47] = 5<<4, 0x10             // data offset, ACK

	var ctx, data [16]byte
	ctx[0], ctx[1] = 14, 24 // IP checksum start and offset
	binary.LittleEndian.PutUint16(ctx[2:], 33)
	ctx[4], ctx[5] = 34, 50 // TCP checksum start and offset
	binary.LittleEndian.PutUint32(ctx[8:], dext|tse|cmdIP|cmdTCP|txPayload)
	ctx[13] = txHeaders
	binary.LittleEndian.PutUint16(ctx[14:], 1) // MSS
	binary.LittleEndian.PutUint64(data[:], txBase+uint64(frameAt))
	binary.LittleEndian.PutUint32(data[8:], dext|dtypData|tse|eop|rs|ifcs|uint32(len(frame)))
	data[13] = ixsm | txsm
	for d := uint32(0); d+1 < descs; d += 2 {
		copy(mem[16*d:], ctx[:])
		copy(mem[16*(d+1):], data[:])
	}
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
