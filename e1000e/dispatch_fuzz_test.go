package e1000e_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/device/netdev"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/internal/leakcheck"
	"e1000e-vfu/vfiouser"
)

// The NIC as the server serves it, driven through the vfio-user dispatcher
// one message at a time. The fuzz target lives in the NIC's external tests:
// the NIC never imports the protocol, its tests may.

// How the harness attaches descriptors to the messages of an input
// (FuzzDispatchNIC's fds argument, a bit set).
const (
	fdsMemory  = 1 << 0 // a memfd of guest memory with every DMA_MAP
	fdsEvents  = 1 << 1 // eventfds with every SET_IRQS of DATA_EVENTFD
	fdsSwapped = 1 << 2 // each of the two kinds where the other belongs
)

const (
	// guestSize is the memfd behind DMA_MAPs: room for two rings and
	// their buffers, small enough to create per input.
	guestSize = 64 << 10
	// maxInput bounds an input's stream, as the vfio-user fuzz target does.
	maxInput = 1 << 16
	// maxIRQFDs is the most eventfds attached to one SET_IRQS: the
	// protocol's max_msg_fds.
	maxIRQFDs = vfiouser.MaxMsgFDs
	// stepBound is how long one input may keep the dispatcher: far beyond
	// what any input of maxInput bytes needs, so only a wedge (a handler
	// that never returns) reaches it.
	stepBound = 30 * time.Second
	// probeTimeout bounds the probe client's wait for each reply.
	probeTimeout = 10 * time.Second
	// msgDMATimeout bounds the server's wait for a reply to its own
	// DMA_READ/DMA_WRITE: the harness never answers them, and the
	// default of seconds per access would make message DMA inputs crawl.
	msgDMATimeout = 10 * time.Millisecond
)

// FuzzDispatchNIC streams an input, after a valid VERSION, to the real NIC
// served with migration v2 and the v1 migration region, through the real
// dispatcher over a socketpair, with memfds and eventfds attached as the
// fds argument says and guest memory filled from mem. Whatever the input:
//   - no handler panics, and the dispatcher ends the input with a reply to
//     each command or a refusal of the stream, never a hang;
//   - what the server sends is well formed: replies in the order of the
//     commands that want one, each with the command's id, an errno exactly
//     when flagged as an error; no other message than DMA_READ/DMA_WRITE;
//   - the next client is served: it negotiates and reads STATUS;
//   - once the NIC is closed, no descriptor is left open.
//
// The seed corpus (testdata/fuzz/FuzzDispatchNIC) is written by
// TestDispatchNICSeeds from dispatchSeeds.
func FuzzDispatchNIC(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte, fds uint8, mem []byte) {
		if len(stream) > maxInput {
			return
		}
		before := leakcheck.FDCount(t)
		h := newDispatchHarness(t, fds, mem)
		h.run(stream)
		h.probe()
		h.close()
		if after := leakcheck.FDCount(t); after != before {
			t.Fatalf("descriptors: %d before the input, %d after", before, after)
		}
	})
}

// dispatchHarness is one input's NIC, server and the descriptors it hands
// over.
type dispatchHarness struct {
	t     *testing.T
	dev   *e1000e.Migratable
	srv   *vfiouser.Server
	fds   uint8
	guest int // memfd of guest memory
	event int // eventfd
}

var quietLog = slog.New(slog.DiscardHandler)

func newDispatchHarness(t *testing.T, fds uint8, mem []byte) *dispatchHarness {
	t.Helper()
	// As serve builds it: no network, migration v2 with P2P, the v1
	// region without mmap (--migration-v1 on).
	nic, err := e1000e.New(e1000e.Config{Backend: netdev.None{}, RXFilterSize: -1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := e1000e.NewMigratable(nic, e1000e.MigrationOptions{Logger: quietLog, V1: true, P2P: true})
	if err != nil {
		nic.Close()
		t.Fatal(err)
	}
	h := &dispatchHarness{t: t, dev: dev, fds: fds, guest: -1, event: -1}
	h.srv = vfiouser.NewServer(dev, vfiouser.Options{
		Logger: quietLog, DMATimeout: msgDMATimeout,
	})
	if h.guest, err = unix.MemfdCreate("fuzz-guest", unix.MFD_CLOEXEC); err != nil {
		h.close()
		t.Fatal(err)
	}
	if err := unix.Ftruncate(h.guest, guestSize); err != nil {
		h.close()
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(h.guest, mem[:min(len(mem), guestSize)], 0); err != nil {
		h.close()
		t.Fatal(err)
	}
	if h.event, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		h.close()
		t.Fatal(err)
	}
	return h
}

// close releases the NIC and the harness's descriptors.
func (h *dispatchHarness) close() {
	h.dev.Close()
	for _, fd := range []int{h.guest, h.event} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	h.guest, h.event = -1, -1
}

// fdsFor is what the harness attaches to one message: a memfd with a
// DMA_MAP, Count eventfds with a SET_IRQS of DATA_EVENTFD, as the fds
// argument asks.
func (h *dispatchHarness) fdsFor(hdr vfiouser.Header, payload []byte) []int {
	mem, ev := h.guest, h.event
	if h.fds&fdsSwapped != 0 {
		mem, ev = ev, mem
	}
	switch hdr.Command {
	case vfiouser.CmdDMAMap:
		if h.fds&fdsMemory != 0 {
			return []int{mem}
		}
	case vfiouser.CmdSetIRQs:
		s, err := vfiouser.DecodeIRQSet(payload)
		if h.fds&fdsEvents == 0 || err != nil || s.Flags&uint32(device.IRQDataEventFD) == 0 || s.Count > maxIRQFDs {
			return nil
		}
		fds := make([]int, s.Count)
		for i := range fds {
			fds[i] = ev
		}
		return fds
	}
	return nil
}

// versionMsg is the VERSION every input starts with, as QEMU sends it.
func versionMsg() []byte {
	p, err := vfiouser.Version{Major: 0, Minor: 1, Caps: vfiouser.DefaultCapabilities()}.Encode(nil)
	if err != nil {
		panic(err)
	}
	return frame(0, vfiouser.CmdVersion, 0, p)
}

// frame is one message: a header for payload, then payload.
func frame(id uint16, cmd vfiouser.Command, flags uint32, payload []byte) []byte {
	b := make([]byte, vfiouser.HeaderSize+len(payload))
	vfiouser.Header{MsgID: id, Command: cmd, Size: uint32(len(b)), Flags: flags}.Encode(b)
	copy(b[vfiouser.HeaderSize:], payload)
	return b
}

// rawMsg is one complete message of an input.
type rawMsg struct {
	hdr   vfiouser.Header
	bytes []byte
}

// split cuts b into its complete messages as the server's reader does and
// returns them with what follows the last (a partial or malformed message).
// Each pass consumes a message of at least a header, so the loop is bounded
// by len(b).
func split(b []byte) ([]rawMsg, []byte) {
	var out []rawMsg
	for len(b) >= vfiouser.HeaderSize {
		h, err := vfiouser.DecodeHeader(b)
		if err != nil || uint64(h.Size) > uint64(len(b)) {
			break
		}
		out = append(out, rawMsg{h, b[:h.Size]})
		b = b[h.Size:]
	}
	return out, b
}

// wantsReply says whether the server owes msg a reply (if it reads it
// before the stream breaks): commands without NO_REPLY. Replies the client
// sends are taken as answers to the server's own DMA messages.
func wantsReply(h vfiouser.Header) bool {
	return !h.IsReply() && h.Flags&vfiouser.FlagNoReply == 0
}

// run sends VERSION and stream on a fresh connection, steps the dispatcher
// until the stream ends or breaks, and checks what came back.
func (h *dispatchHarness) run(stream []byte) {
	t := h.t
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := h.srv.NewConn(pair[0])
	if err != nil {
		unix.Close(pair[1])
		t.Fatal(err)
	}
	msgs, rest := split(append(versionMsg(), stream...))
	var expect []vfiouser.Header
	for _, m := range msgs {
		if wantsReply(m.hdr) {
			expect = append(expect, m.hdr)
		}
	}

	written := make(chan struct{})
	go func() {
		defer close(written)
		h.send(pair[1], msgs, rest)
		unix.Shutdown(pair[1], unix.SHUT_WR)
	}()
	checked := make(chan error, 1)
	go func() { checked <- checkReplies(pair[1], expect) }()

	stepped := make(chan error, 1)
	go func() {
		// Each step consumes at least one message of the bounded stream.
		for {
			if err := conn.Step(); err != nil {
				stepped <- err
				return
			}
		}
	}()
	timer := time.NewTimer(stepBound)
	defer timer.Stop()
	select {
	case err := <-stepped:
		if vfiouser.IsPanic(err) {
			t.Fatalf("dispatcher: %v", err)
		}
	case <-timer.C:
		t.Fatalf("the dispatcher has not finished %d messages within %v: a handler does not return", len(msgs), stepBound)
	}
	conn.Close()
	<-written
	if err := <-checked; err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[1])
}

// send writes each message in its own system call, with the descriptors
// that belong to it, then the rest. It stops at the first failed write:
// the server has dropped the connection.
func (h *dispatchHarness) send(fd int, msgs []rawMsg, rest []byte) {
	for _, m := range msgs {
		var oob []byte
		if fds := h.fdsFor(m.hdr, m.bytes[vfiouser.HeaderSize:]); len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if writeAll(fd, m.bytes, oob) != nil {
			return
		}
	}
	writeAll(fd, rest, nil)
}

// writeAll sends b, with oob on the first part. Each pass sends at least a
// byte or fails.
func writeAll(fd int, b, oob []byte) error {
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, oob = b[n:], nil
	}
	return nil
}

// checkReplies reads what the server sends until it closes the socket and
// checks each message against the commands that want a reply.
func checkReplies(fd int, expect []vfiouser.Header) error {
	var (
		acc      []byte
		next     int
		firstErr error
	)
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4*vfiouser.MaxMsgFDs))
	fail := func(format string, args ...any) {
		if firstErr == nil {
			firstErr = fmt.Errorf(format, args...)
		}
	}
	// Each pass reads at least a byte, until EOF or an error.
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if oobn > 0 {
			closeRights(oob[:oobn])
		}
		if err != nil || n == 0 {
			break
		}
		acc = append(acc, buf[:n]...)
		// Each pass consumes one whole message.
		for len(acc) >= vfiouser.HeaderSize {
			h, err := vfiouser.DecodeHeader(acc)
			if err != nil {
				fail("server sent a malformed header %x: %v", acc[:vfiouser.HeaderSize], err)
				acc = nil
				break
			}
			if uint64(h.Size) > uint64(len(acc)) {
				break
			}
			acc = acc[h.Size:]
			if !h.IsReply() {
				if h.Command != vfiouser.CmdDMARead && h.Command != vfiouser.CmdDMAWrite {
					fail("server sent command %s", h.Command)
				}
				continue
			}
			if next >= len(expect) {
				fail("server sent a reply %d/%s beyond the %d commands that want one", h.MsgID, h.Command, len(expect))
				continue
			}
			want := expect[next]
			next++
			if h.MsgID != want.MsgID || h.Command != want.Command {
				fail("reply %d is %d/%s, want %d/%s", next, h.MsgID, h.Command, want.MsgID, want.Command)
			}
			switch {
			case h.Flags&^vfiouser.FlagError != vfiouser.FlagTypeReply:
				fail("reply %d/%s has flags %#x", h.MsgID, h.Command, h.Flags)
			case h.Flags&vfiouser.FlagError != 0 && (h.Error == 0 || h.Size != vfiouser.HeaderSize):
				fail("error reply %d/%s with errno %d and %d bytes", h.MsgID, h.Command, h.Error, h.Size)
			case h.Flags&vfiouser.FlagError == 0 && h.Error != 0:
				fail("reply %d/%s carries errno %d without the error flag", h.MsgID, h.Command, h.Error)
			}
		}
	}
	if len(acc) != 0 {
		fail("server ended with %d bytes of a partial message", len(acc))
	}
	return firstErr
}

// closeRights closes the descriptors of received control messages.
func closeRights(oob []byte) {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, cm := range cms {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// probe is the next client: it must be served whatever the input left
// behind, down to a register read.
func (h *dispatchHarness) probe() {
	t := h.t
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := h.srv.NewConn(pair[0])
	if err != nil {
		unix.Close(pair[1])
		t.Fatalf("the next client is refused: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- conn.Serve() }()
	cl := vfiouser.NewClient(pair[1])
	cl.SetTimeout(probeTimeout)
	_, nerr := cl.Negotiate(nil)
	var status [4]byte
	rerr := cl.ReadRegion(device.RegionBAR0, e1000e.STATUS, status[:])
	cl.Close()
	if err := <-served; vfiouser.IsPanic(err) {
		t.Fatalf("serving the next client: %v", err)
	}
	if nerr != nil || rerr != nil {
		t.Fatalf("the next client is not served: version: %v, STATUS read: %v", nerr, rerr)
	}
}
