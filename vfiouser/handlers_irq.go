package vfiouser

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"e1000e-vfu/device"
)

// handleSetIRQs validates the request completely, then hands it to the
// device, which owns the eventfds from then on.
func handleSetIRQs(c *Conn, m *message) error {
	in, err := DecodeIRQSet(m.payload)
	if err != nil {
		return err
	}
	if in.Argsz < IRQSetSize {
		return fmt.Errorf("set irqs: argsz %d: %w", in.Argsz, syscall.EINVAL)
	}
	if in.Flags&^(irqSetDataMask|irqSetActionMask) != 0 {
		return fmt.Errorf("set irqs: flags %#x: %w", in.Flags, syscall.EINVAL)
	}
	data, action := in.Flags&irqSetDataMask, in.Flags&irqSetActionMask
	if data == 0 || data&(data-1) != 0 || action == 0 || action&(action-1) != 0 {
		return fmt.Errorf("set irqs: flags %#x need one data kind and one action: %w", in.Flags, syscall.EINVAL)
	}
	if uint64(in.Index) >= uint64(len(c.info.IRQs)) || c.info.IRQs[in.Index].Count == 0 {
		return fmt.Errorf("set irqs: index %d: %w", in.Index, syscall.EINVAL)
	}
	info := c.info.IRQs[in.Index]
	req := device.SetIRQs{Index: in.Index, Start: in.Start, Count: in.Count,
		Action: device.IRQAction(action), Data: device.IRQData(data)}
	if device.IRQAction(action) != device.IRQActionTrigger && info.Flags&device.IRQMaskable == 0 {
		return fmt.Errorf("set irqs: index %d is not maskable: %w", in.Index, syscall.EINVAL)
	}
	if in.Count == 0 {
		// Count 0 (with start 0) and DATA_NONE disables the whole index.
		if data != uint32(device.IRQDataNone) || in.Start != 0 || device.IRQAction(action) != device.IRQActionTrigger {
			return fmt.Errorf("set irqs: count 0 needs start 0, DATA_NONE and TRIGGER: %w", syscall.EINVAL)
		}
	} else if uint64(in.Start)+uint64(in.Count) > uint64(info.Count) {
		return fmt.Errorf("set irqs: [%d+%d] outside %d vectors: %w", in.Start, in.Count, info.Count, syscall.EINVAL)
	}
	extra := m.payload[IRQSetSize:]
	switch device.IRQData(data) {
	case device.IRQDataNone:
		if len(m.fds) != 0 {
			return fmt.Errorf("set irqs: DATA_NONE with fds: %w", syscall.EINVAL)
		}
	case device.IRQDataBool:
		if len(m.fds) != 0 || uint64(len(extra)) != uint64(in.Count) {
			return fmt.Errorf("set irqs: DATA_BOOL needs %d bytes, got %d and %d fds: %w", in.Count, len(extra), len(m.fds), syscall.EINVAL)
		}
		req.Bools = make([]bool, in.Count)
		for i := range req.Bools {
			req.Bools[i] = extra[i] != 0
		}
	case device.IRQDataEventFD:
		if len(m.fds) != 0 && uint64(len(m.fds)) != uint64(in.Count) {
			return fmt.Errorf("set irqs: %d fds for %d vectors: %w", len(m.fds), in.Count, syscall.EINVAL)
		}
		for _, fd := range m.fds {
			if !isEventFD(fd) {
				return fmt.Errorf("set irqs: fd is not an eventfd: %w", syscall.EINVAL)
			}
		}
		// No fds de-assigns the vectors: nil entries.
		req.FDs = make([]*os.File, in.Count)
		for i := range m.fds {
			req.FDs[i] = os.NewFile(uintptr(m.fds[i]), "eventfd")
			m.fds[i] = -1 // the device owns it now
		}
	}
	return c.dev.SetIRQs(req)
}

// isEventFD says whether fd is an eventfd, as /proc names it.
func isEventFD(fd int) bool {
	var buf [64]byte
	n, err := syscall.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf[:])
	return err == nil && string(buf[:n]) == "anon_inode:[eventfd]"
}
