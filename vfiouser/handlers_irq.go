package vfiouser

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/unixsock"
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
	}
	// Trigger eventfds are tracked (see releaseIRQs); an unmask eventfd is
	// only read by the server, never written.
	track := device.IRQAction(action) == device.IRQActionTrigger &&
		(device.IRQData(data) == device.IRQDataEventFD || in.Count == 0)
	var dups []int
	if track && len(m.fds) > 0 {
		if dups, err = dupFDs(m.fds); err != nil {
			return fmt.Errorf("set irqs: %w", err)
		}
	}
	if device.IRQData(data) == device.IRQDataEventFD {
		// No fds de-assigns the vectors: nil entries.
		req.FDs = make([]*os.File, in.Count)
		for i := range m.fds {
			req.FDs[i] = os.NewFile(uintptr(m.fds[i]), "eventfd")
			m.fds[i] = -1 // the device owns it now
		}
	}
	// The INTx unmask eventfd is kept too, for a live upgrade to pass on.
	unmask := in.Index == device.IRQINTx && device.IRQAction(action) == device.IRQActionUnmask &&
		device.IRQData(data) == device.IRQDataEventFD && in.Count == 1
	var unmaskDup []int
	if unmask && len(req.FDs) == 1 && req.FDs[0] != nil {
		if unmaskDup, err = dupFDs([]int{int(req.FDs[0].Fd())}); err != nil {
			unixsock.CloseFDs(dups)
			req.FDs[0].Close()
			return fmt.Errorf("set irqs: %w", err)
		}
	}
	if err := c.dev.SetIRQs(req); err != nil {
		unixsock.CloseFDs(dups)
		unixsock.CloseFDs(unmaskDup)
		return err
	}
	if track {
		c.trackIRQs(in.Index, in.Start, in.Count, dups)
	}
	if unmask {
		fd := -1
		if len(unmaskDup) == 1 {
			fd = unmaskDup[0]
		}
		c.trackUnmask(fd)
	}
	// Disabling INTx drops the device's unmask eventfd too (QEMU does it
	// whenever the guest moves to MSI or MSI-X): a live upgrade must not
	// pass the old one on.
	if in.Index == device.IRQINTx && in.Count == 0 && device.IRQAction(action) == device.IRQActionTrigger &&
		device.IRQData(data) == device.IRQDataNone {
		c.trackUnmask(-1)
	}
	return nil
}

// trackUnmask keeps fd (-1: none) as the INTx unmask eventfd's
// duplicate, closing the one it replaces.
func (c *Conn) trackUnmask(fd int) {
	c.irqMu.Lock()
	defer c.irqMu.Unlock()
	if c.unmaskDup >= 0 {
		unix.Close(c.unmaskDup)
	}
	c.unmaskDup = -1
	if c.irqGone {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	c.unmaskDup = fd
}

// dupFDs duplicates fds; on error none is left open.
func dupFDs(fds []int) ([]int, error) {
	dups := make([]int, 0, len(fds))
	for _, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			unixsock.CloseFDs(dups)
			return nil, fmt.Errorf("dup eventfd: %w", err)
		}
		dups = append(dups, d)
	}
	return dups, nil
}

// trackIRQs mirrors a SET_IRQS TRIGGER the device accepted: vectors
// [start, start+count) of index now have the eventfds dups (nil:
// de-assigned), and count 0 disables the whole index. Replaced duplicates
// are closed.
func (c *Conn) trackIRQs(index, start, count uint32, dups []int) {
	c.irqMu.Lock()
	defer c.irqMu.Unlock()
	if c.irqDups == nil {
		if c.irqGone {
			unixsock.CloseFDs(dups) // torn down meanwhile
			return
		}
		c.irqDups = make(map[[2]uint32]int)
	}
	if count == 0 {
		for k, fd := range c.irqDups {
			if k[0] == index {
				unix.Close(fd)
				delete(c.irqDups, k)
			}
		}
		return
	}
	for i := uint32(0); i < count; i++ {
		k := [2]uint32{index, start + i}
		if old, ok := c.irqDups[k]; ok {
			unix.Close(old)
			delete(c.irqDups, k)
		}
		if i < uint32(len(dups)) {
			c.irqDups[k] = dups[i]
		}
	}
}

// releaseIRQs empties every interrupt eventfd of the client whose counter
// is full, and returns how many it emptied.
//
// The device writes to these eventfds with its locks held, and makes each
// one non-blocking when it takes it, so that a full counter drops a signal
// instead of blocking. The file description is shared with the client,
// though, which can switch it back to blocking mode and fill the counter:
// the device's next write then waits, locks held, until the counter goes
// down. Emptying it lets that write finish. Signals never fill a counter
// (it takes 2^64-2 of them), so nothing a well-behaved client waits for is
// lost. The read never waits either (device.ReadEventfd).
func (c *Conn) releaseIRQs() int {
	c.irqMu.Lock()
	defer c.irqMu.Unlock()
	if len(c.irqDups) == 0 {
		return 0
	}
	// One poll for all of them: an eventfd is writable (POLLOUT) unless a
	// write of 1 would block, and only those that are not are emptied.
	c.irqPoll = c.irqPoll[:0]
	for _, fd := range c.irqDups {
		c.irqPoll = append(c.irqPoll, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
	}
	if k, err := unix.Poll(c.irqPoll, 0); err != nil || k == len(c.irqPoll) {
		return 0
	}
	n := 0
	for _, p := range c.irqPoll {
		if p.Revents&unix.POLLOUT != 0 {
			continue
		}
		if _, err := device.ReadEventfd(int(p.Fd)); err == nil {
			n++
		}
	}
	if n > 0 {
		// Once per connection at warn: a client refilling its counters
		// would otherwise log a line per release.
		level := slog.LevelDebug
		if !c.irqReleased {
			c.irqReleased, level = true, slog.LevelWarn
		}
		c.log.Log(context.Background(), level, "vfio-user: emptied interrupt eventfds the client had filled", "count", n)
	}
	return n
}

// How often releaseUntil releases, and for how long at most when not told
// to stop (a connection still stuck after that is beyond recovery by
// emptying counters: a client refilling them as fast as they are emptied).
// While a client is connected, watchIRQs releases every irqWatchTick: the
// longest a stuck write can hold the device's locks, and so delay the
// control socket or the backend, before it is released.
const (
	releaseTick  = 10 * time.Millisecond
	releaseBound = 5 * time.Second
	irqWatchTick = 50 * time.Millisecond
)

// watchIRQs releases full counters every irqWatchTick until the connection
// is closed. A write stuck on the connection's own goroutine would
// otherwise wait for the client to leave, and the goroutine that would see
// it leave is the stuck one; meanwhile the device's locks are held against
// the control socket and the backend. A well-behaved client never has a
// full counter, so this only ever touches a hostile one's; its cost is one
// poll per tick.
func (c *Conn) watchIRQs() {
	tick := time.NewTicker(irqWatchTick)
	defer tick.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-tick.C:
			c.releaseIRQs()
		}
	}
}

// releaseUntil calls releaseIRQs now and every releaseTick until done is
// closed or bound has passed: a write can get stuck just after a release,
// and a client can fill its counter again.
func (c *Conn) releaseUntil(done <-chan struct{}, bound time.Duration) {
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	tick := time.NewTicker(releaseTick)
	defer tick.Stop()
	// At most bound/releaseTick+1 passes: the deadline ends the loop.
	for {
		c.releaseIRQs()
		select {
		case <-done:
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// dropIRQs closes the tracked duplicates for good (teardown).
func (c *Conn) dropIRQs() {
	c.irqMu.Lock()
	defer c.irqMu.Unlock()
	for _, fd := range c.irqDups {
		unix.Close(fd)
	}
	c.irqDups = nil
	if c.unmaskDup >= 0 {
		unix.Close(c.unmaskDup)
		c.unmaskDup = -1
	}
	c.irqGone = true
}

// isEventFD says whether fd is an eventfd, as /proc names it.
func isEventFD(fd int) bool {
	var buf [64]byte
	n, err := syscall.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf[:])
	return err == nil && string(buf[:n]) == "anon_inode:[eventfd]"
}
