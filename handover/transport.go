package handover

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/unixsock"
)

// readChunk is how much one receive asks for.
const readChunk = 64 << 10

// Peer is one end of a handover on a connected UNIX stream socket (the
// control connection). It reads with recvmsg throughout, so descriptors
// are never dropped by a plain read that happens to reach them, and it
// keeps what it received until a frame claims it.
//
// Ownership: descriptors received are the Peer's until ReadFrame returns
// them; Close closes the ones never claimed.
type Peer struct {
	c   *net.UnixConn
	buf []byte // received, not yet consumed
	fds []int  // received, not yet claimed
	oob []byte
	tmp []byte
}

// NewPeer wraps c. pending are bytes already read from c by someone else
// (a buffered reader), which come first.
func NewPeer(c *net.UnixConn, pending []byte) *Peer {
	return &Peer{c: c, buf: append([]byte(nil), pending...),
		oob: make([]byte, unix.CmsgSpace((MaxFDs+16)*4))}
}

// Close closes the descriptors received and not claimed. It does not
// close the connection.
func (p *Peer) Close() {
	unixsock.CloseFDs(p.fds)
	p.fds = nil
}

// SendFrame sends one frame; fds ride with its header, in one sendmsg.
// The caller keeps its descriptors (the kernel passes duplicates).
func (p *Peer) SendFrame(kind uint16, body []byte, fds []int) error {
	if len(fds) > MaxFDs {
		return fmt.Errorf("handover: %d descriptors, at most %d", len(fds), MaxFDs)
	}
	hdr := AppendHeader(make([]byte, 0, HeaderSize), kind, len(body))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := p.c.WriteMsgUnix(hdr, oob, nil)
	if err != nil {
		return fmt.Errorf("handover: sending frame %d: %w", kind, err)
	}
	if n != len(hdr) {
		// The descriptors went with the first byte; the rest follows.
		if _, err := p.c.Write(hdr[n:]); err != nil {
			return fmt.Errorf("handover: sending frame %d: %w", kind, err)
		}
	}
	if len(body) > 0 {
		if _, err := p.c.Write(body); err != nil {
			return fmt.Errorf("handover: sending frame %d body: %w", kind, err)
		}
	}
	return nil
}

// fill receives once.
func (p *Peer) fill() error {
	if p.tmp == nil {
		p.tmp = make([]byte, readChunk)
	}
	n, oobn, flags, _, err := p.c.ReadMsgUnix(p.tmp, p.oob)
	// A failed receive may report -1.
	n, oobn = max(n, 0), max(oobn, 0)
	if oobn > 0 {
		fds, perr := unixsock.Rights(p.oob[:oobn])
		if perr != nil {
			return fmt.Errorf("%w: %v", ErrFormat, perr)
		}
		p.fds = append(p.fds, fds...)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("%w: descriptors truncated (more than %d)", ErrFormat, MaxFDs)
	}
	if len(p.fds) > MaxFDs {
		return fmt.Errorf("%w: %d descriptors received, at most %d", ErrFormat, len(p.fds), MaxFDs)
	}
	p.buf = append(p.buf, p.tmp[:n]...)
	if err != nil {
		return err
	}
	if n == 0 {
		return io.EOF
	}
	return nil
}

// need makes sure n bytes are buffered; more than limit is refused.
func (p *Peer) need(n int) error {
	for len(p.buf) < n {
		if err := p.fill(); err != nil {
			if errors.Is(err, io.EOF) && len(p.buf) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// ReadLine reads one newline-terminated line of at most limit bytes,
// without its newline.
func (p *Peer) ReadLine(limit int) ([]byte, error) {
	for {
		if i := bytes.IndexByte(p.buf, '\n'); i >= 0 {
			line := append([]byte(nil), p.buf[:i]...)
			p.buf = p.buf[i+1:]
			return line, nil
		}
		if len(p.buf) > limit {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrFormat, limit)
		}
		if err := p.fill(); err != nil {
			return nil, err
		}
	}
}

// ReadFrame reads one frame. It returns the descriptors received up to its
// end, which are the caller's from then on (closed by it on every path).
// A frame that is not well formed is an error and its descriptors are
// closed.
func (p *Peer) ReadFrame() (Header, []byte, []int, error) {
	if err := p.need(HeaderSize); err != nil {
		return Header{}, nil, nil, err
	}
	h, err := DecodeHeader(p.buf)
	if err != nil {
		p.Close()
		return Header{}, nil, nil, err
	}
	total := HeaderSize + int(h.Len)
	if err := p.need(total); err != nil {
		p.Close()
		return Header{}, nil, nil, err
	}
	body := append([]byte(nil), p.buf[HeaderSize:total]...)
	p.buf = p.buf[total:]
	fds := p.fds
	p.fds = nil
	return h, body, fds, nil
}
