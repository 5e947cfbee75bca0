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
// interrupts.

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

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
