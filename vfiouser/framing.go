package vfiouser

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/unixsock"
)

// maxRecvFDs is the most descriptors one receive accepts; a message with more
// than the negotiated max_msg_fds (but no more than this) gets an error reply,
// one with still more is truncated by the kernel and ends the connection.
const maxRecvFDs = 32

// maxPendingFDSets bounds descriptor sets received ahead of their message.
const maxPendingFDSets = 8

// errStream marks errors after which the byte stream cannot be parsed further.
var errStream = errors.New("vfio-user stream broken")

// errPanic marks a panic recovered while handling a message: a bug, which
// only ends the connection.
var errPanic = errors.New("panic while handling a message")

// IsPanic says whether err, returned by Conn.Step or Conn.Serve, ended the
// connection because handling a message panicked: a bug, where any other
// error is the client's. Harnesses outside the package (fuzz targets that
// drive a real device) tell the two apart with it.
func IsPanic(err error) bool { return errors.Is(err, errPanic) }

// message is one received message. Payload points into the reader's buffer
// and is valid until the next call to next. The message owns its fds: a
// handler that keeps one sets its entry to -1, and closeFDs closes the rest.
type message struct {
	hdr     Header
	payload []byte
	fds     []int
}

func (m *message) closeFDs() {
	for i, fd := range m.fds {
		if fd >= 0 {
			unix.Close(fd)
			m.fds[i] = -1
		}
	}
	m.fds = m.fds[:0]
}

type pendingFDs struct {
	pos int // buffer offset of the header the fds arrived with
	fds []int
}

// reader splits a SOCK_STREAM byte stream into messages. It reads as much as
// the socket has in one recvmsg, so a small request costs one system call,
// and gives each set of received descriptors to the message whose header
// arrived with it: Linux ends a read after the segment that carried
// descriptors, and that segment starts with the header of its message, so
// the descriptors belong to the last header that starts in the same read.
type reader struct {
	fd   int
	buf  []byte
	r, w int
	max  int // largest buffer the reader will grow to
	oob  []byte
	pend []pendingFDs
	fds  []int // reused for the current message's fds
	// wake, when not -1, is an eventfd that ends a wait for the client
	// with errPaused: a live upgrade stops reading between messages.
	wake int

	hdr unix.Msghdr
	iov unix.Iovec
}

func newReader(fd int, initial, max int) *reader {
	return &reader{
		fd:   fd,
		buf:  make([]byte, initial),
		max:  max,
		oob:  make([]byte, unix.CmsgSpace(maxRecvFDs*4)),
		fds:  make([]int, 0, maxRecvFDs),
		wake: -1,
	}
}

// errPaused ends a read that was asked to stop (reader.wake): the bytes
// and descriptors read so far stay in the reader.
var errPaused = errors.New("vfio-user: reading paused")

// wait blocks until the client's socket is readable, or returns errPaused
// once wake is signalled. The signal stays set until the pause ends, so
// every later wait returns at once too.
func (rd *reader) wait() error {
	pfd := [2]unix.PollFd{{Fd: int32(rd.fd), Events: unix.POLLIN}, {Fd: int32(rd.wake), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if pfd[1].Revents != 0 {
			return errPaused
		}
		return nil
	}
}

// next returns the next message whose size is at most maxSize. Any error
// other than a clean EOF at a message boundary means the stream is lost.
func (rd *reader) next(maxSize uint32) (message, error) {
	if err := rd.need(HeaderSize); err != nil {
		return message{}, err
	}
	h, err := DecodeHeader(rd.buf[rd.r:])
	if err != nil {
		return message{}, fmt.Errorf("%w: %v", errStream, err)
	}
	if h.Size > maxSize {
		return message{}, fmt.Errorf("%w: %s message of %d bytes exceeds %d", errStream, h.Command, h.Size, maxSize)
	}
	if err := rd.need(int(h.Size)); err != nil {
		return message{}, err
	}
	m := message{hdr: h, payload: rd.buf[rd.r+HeaderSize : rd.r+int(h.Size)], fds: rd.fds[:0]}
	// Hand over the fds that arrived with this header; close any that
	// arrived for a position already passed (a sender that split a header).
	keep := rd.pend[:0]
	for _, p := range rd.pend {
		switch {
		case p.pos == rd.r:
			m.fds = append(m.fds, p.fds...)
		case p.pos < rd.r:
			unixsock.CloseFDs(p.fds)
		default:
			keep = append(keep, p)
		}
	}
	rd.pend = keep
	rd.r += int(h.Size)
	return m, nil
}

// need makes sure n bytes from rd.r are buffered.
func (rd *reader) need(n int) error {
	for rd.w-rd.r < n {
		if n > len(rd.buf) {
			if n > rd.max {
				return fmt.Errorf("%w: message of %d bytes exceeds buffer limit %d", errStream, n, rd.max)
			}
			nb := make([]byte, max(n, min(2*len(rd.buf), rd.max)))
			rd.shift(nb)
		} else if n > len(rd.buf)-rd.r {
			rd.shift(rd.buf)
		}
		if err := rd.fill(); err != nil {
			if err == io.EOF && rd.w != rd.r {
				return fmt.Errorf("%w: %w", errStream, io.ErrUnexpectedEOF)
			}
			return err
		}
	}
	return nil
}

// shift moves the unread bytes to the start of dst (which may be rd.buf).
func (rd *reader) shift(dst []byte) {
	copy(dst, rd.buf[rd.r:rd.w])
	for i := range rd.pend {
		rd.pend[i].pos -= rd.r
	}
	rd.w -= rd.r
	rd.r = 0
	rd.buf = dst
}

// fill does one recvmsg into the free part of the buffer.
func (rd *reader) fill() error {
	if rd.wake >= 0 {
		if err := rd.wait(); err != nil {
			return err
		}
	}
	space := rd.buf[rd.w:]
	rd.iov.Base = &space[0]
	rd.iov.SetLen(len(space))
	rd.hdr.Iov = &rd.iov
	rd.hdr.Iovlen = 1
	rd.hdr.Control = &rd.oob[0]
	rd.hdr.SetControllen(len(rd.oob))
	rd.hdr.Flags = 0
	var n uintptr
	for {
		var errno syscall.Errno
		n, _, errno = unix.Syscall(unix.SYS_RECVMSG, uintptr(rd.fd), uintptr(unsafe.Pointer(&rd.hdr)), unix.MSG_CMSG_CLOEXEC)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("recvmsg: %w", errno)
		}
		break
	}
	start := rd.w
	rd.w += int(n)
	if oobn := int(rd.hdr.Controllen); oobn > 0 {
		fds, err := unixsock.Rights(rd.oob[:oobn])
		if rd.hdr.Flags&unix.MSG_CTRUNC != 0 {
			unixsock.CloseFDs(fds)
			return fmt.Errorf("%w: control data truncated (too many fds)", errStream)
		}
		if err != nil {
			unixsock.CloseFDs(fds)
			return fmt.Errorf("%w: %v", errStream, err)
		}
		if len(fds) > 0 {
			if len(rd.pend) >= maxPendingFDSets {
				unixsock.CloseFDs(fds)
				return fmt.Errorf("%w: too many descriptor sets ahead of their messages", errStream)
			}
			rd.pend = append(rd.pend, pendingFDs{pos: rd.lastHeaderIn(start), fds: fds})
		}
	} else if rd.hdr.Flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("%w: control data truncated", errStream)
	}
	if n == 0 {
		return io.EOF
	}
	return nil
}

// lastHeaderIn walks message boundaries from rd.r and returns the last one
// at or after start that lies inside the buffered bytes; start when the walk
// cannot reach one. The walk is bounded by the buffered bytes.
func (rd *reader) lastHeaderIn(start int) int {
	found := -1
	p := rd.r
	for p+HeaderSize <= rd.w {
		if p >= start {
			found = p
		}
		size := int(le.Uint32(rd.buf[p+4:]))
		if size < HeaderSize {
			break
		}
		p += size
	}
	if found < 0 && p >= start && p < rd.w {
		found = p
	}
	if found < 0 {
		return start
	}
	return found
}

// close closes any descriptors still waiting for their message.
func (rd *reader) close() {
	for _, p := range rd.pend {
		unixsock.CloseFDs(p.fds)
	}
	rd.pend = nil
}

// writeMsg sends b (a whole message) and fds in one sendmsg when possible;
// the remainder of a partial write follows without fds.
func writeMsg(fd int, b []byte, fds []int) error {
	if len(fds) > 0 {
		n, err := unix.SendmsgN(fd, b, unix.UnixRights(fds...), nil, 0)
		for err == unix.EINTR {
			n, err = unix.SendmsgN(fd, b, unix.UnixRights(fds...), nil, 0)
		}
		if err != nil {
			return fmt.Errorf("sendmsg: %w", err)
		}
		b = b[n:]
	}
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return nil
}
