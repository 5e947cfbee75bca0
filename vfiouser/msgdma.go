package vfiouser

import (
	"fmt"
	"syscall"
	"time"
)

// Message DMA: guest memory the client mapped without fd (QEMU's RAM when
// it is not share=on, and its ROM always) is reached by sending DMA_READ
// and DMA_WRITE to the client and waiting for its reply, which the
// goroutine serving the connection reads and hands to the waiter.
//
// The client answers such a message only when it is not itself waiting for
// a reply of ours: QEMU handles it under its big lock, which a vCPU holds
// while it waits for a register read. Two rules follow, so that no reply of
// ours ever depends on a message DMA completing:
//
//   - A request's handler never sends message DMA. The table the device is
//     given in Connect, which is what code running in a handler reaches,
//     refuses an access to memory mapped without fd at once with EDEADLK,
//     from whichever goroutine. Only the accessor DMATable.Worker sends
//     messages and waits, and a device hands it to its own goroutines alone.
//   - A device sends message DMA only from goroutines of its own and never
//     while holding a lock that a handler may wait for (e1000e lets its
//     lock go around each such access). Messaged tells it when an access
//     may be a message.

// Messaged reports whether some guest memory is mapped without fd, so an
// access may be a message that waits for the client (it implements
// e1000e's optional interface of that name).
func (t *DMATable) Messaged() bool { return t.noFD.Load() > 0 }

// DMATimeouts counts the server's DMA_READ/DMA_WRITE that got no reply
// within Options.DMATimeout on this connection.
func (c *Conn) DMATimeouts() uint64 { return c.dmaTimeouts.Load() }

// dmaWaiter is a device goroutine waiting for the reply to a DMA_READ or
// DMA_WRITE the server sent. The reader fills buf (for reads) under c.pmu, so
// a waiter that timed out and removed itself is never written to later.
type dmaWaiter struct {
	cmd  Command
	addr uint64
	buf  []byte
	done chan error
}

// dmaRead and dmaWrite reach guest memory that the client mapped without
// fd, in chunks of at most max_data_xfer_size. Only DMATable.Worker calls
// them, from the device's own goroutines: from the goroutine that handles
// client messages the reply could never be read, and QEMU would itself wait
// for our reply meanwhile.
func (c *Conn) dmaRead(addr uint64, p []byte) error  { return c.dmaChunks(CmdDMARead, addr, p) }
func (c *Conn) dmaWrite(addr uint64, p []byte) error { return c.dmaChunks(CmdDMAWrite, addr, p) }

func (c *Conn) dmaChunks(cmd Command, addr uint64, p []byte) error {
	chunk := int(c.maxXfer)
	for len(p) > 0 {
		n := min(len(p), chunk)
		if err := c.dmaOne(cmd, addr, p[:n]); err != nil {
			return err
		}
		addr += uint64(n)
		p = p[n:]
	}
	return nil
}

func (c *Conn) dmaOne(cmd Command, addr uint64, p []byte) error {
	w := &dmaWaiter{cmd: cmd, addr: addr, buf: p, done: make(chan error, 1)}
	var data []byte
	if cmd == CmdDMAWrite {
		data = p
	}
	payload := encodeDMARW(addr, len(p), data)
	size := HeaderSize + len(payload)
	msg := make([]byte, size)
	copy(msg[HeaderSize:], payload)
	c.pmu.Lock()
	for c.dmaHeld != nil && !c.isClosed() {
		held := c.dmaHeld
		c.pmu.Unlock()
		select {
		case <-held:
		case <-c.closed:
		}
		c.pmu.Lock()
	}
	if c.isClosed() || c.dmaGone {
		c.pmu.Unlock()
		return fmt.Errorf("%s: connection closed: %w", cmd, syscall.ENOTCONN)
	}
	// Find a free id; at most 65536 tries, far fewer in practice.
	var id uint16
	for range 1 << 16 {
		id = uint16(c.nextID.Add(1))
		if _, busy := c.pending[id]; !busy {
			break
		}
	}
	c.pending[id] = w
	c.pmu.Unlock()

	Header{MsgID: id, Command: cmd, Size: uint32(size), Flags: FlagTypeCommand}.Encode(msg)
	c.wmu.Lock()
	err := writeMsg(c.fd, msg, nil)
	c.wmu.Unlock()
	if err != nil {
		c.forget(id, w)
		return fmt.Errorf("%s: %w", cmd, err)
	}
	t := time.NewTimer(c.srv.opts.DMATimeout)
	defer t.Stop()
	select {
	case err := <-w.done:
		return err
	case <-t.C:
		if c.forget(id, w) {
			c.dmaTimeouts.Add(1)
			return fmt.Errorf("%s [%#x+%#x]: no reply within %v: %w", cmd, addr, len(p), c.srv.opts.DMATimeout, syscall.ETIMEDOUT)
		}
		return <-w.done // the reply won the race
	}
}

// holdDMA makes DMA messages wait while Serve is paused for a handover:
// the state exported holds the next message id and the successor reads
// the client's replies, so this process may send nothing more. A device
// goroutine waits, rather than fail, so that a pause that ends in a
// resume costs it nothing; once released, it fails, and the NIC, quiesced
// by then, commits nothing of that access.
func (c *Conn) holdDMA() {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.dmaHeld == nil {
		c.dmaHeld = make(chan struct{})
	}
}

// releaseDMA ends holdDMA's wait, for good when released is true.
func (c *Conn) releaseDMA(released bool) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if released {
		c.dmaGone = true
	}
	if c.dmaHeld != nil {
		close(c.dmaHeld)
		c.dmaHeld = nil
	}
}

// forget removes w unless a reply already claimed it.
func (c *Conn) forget(id uint16, w *dmaWaiter) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.pending[id] == w {
		delete(c.pending, id)
		return true
	}
	return false
}

// routeReply hands a reply to the waiter with its id.
func (c *Conn) routeReply(m *message) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	w := c.pending[m.hdr.MsgID]
	if w == nil || w.cmd != m.hdr.Command {
		// Late replies (after a timeout) land here; Debug, because a client
		// could send many.
		c.log.Debug("vfio-user: reply nobody waits for", "cmd", m.hdr.Command, "id", m.hdr.MsgID)
		return
	}
	delete(c.pending, m.hdr.MsgID)
	w.done <- c.replyResult(w, m)
}

func (c *Conn) replyResult(w *dmaWaiter, m *message) error {
	if m.hdr.Flags&FlagError != 0 {
		e := syscall.Errno(m.hdr.Error)
		if e == 0 {
			e = syscall.EIO
		}
		return fmt.Errorf("%s [%#x+%#x]: client replied: %w", w.cmd, w.addr, len(w.buf), e)
	}
	if w.cmd == CmdDMARead {
		// The count in the reply is not trusted: the data must cover what
		// was asked.
		off := DMARWSize
		if len(m.payload) < off+len(w.buf) {
			return fmt.Errorf("DMA_READ reply of %d bytes for %d: %w", len(m.payload), len(w.buf), syscall.EIO)
		}
		copy(w.buf, m.payload[off:off+len(w.buf)])
	}
	return nil
}

// failPending wakes every waiter when the connection ends.
func (c *Conn) failPending() {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for id, w := range c.pending {
		delete(c.pending, id)
		w.done <- fmt.Errorf("%s: connection closed: %w", w.cmd, syscall.ENOTCONN)
	}
}
