package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"e1000e-vfu/tests/agentproto"
)

// Transfer is what one end of a TCP transfer saw.
type Transfer struct {
	Bytes   int64
	SHA256  string
	Seconds float64
}

// SinkOnce accepts one connection on l, reads it to EOF while hashing, then
// closes it. It gives up after timeout.
func SinkOnce(l net.Listener, timeout time.Duration) (Transfer, error) {
	c, err := acceptWithin(l, timeout)
	if err != nil {
		return Transfer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	h := sha256.New()
	start := time.Now()
	n, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
	secs := time.Since(start).Seconds()
	if err != nil {
		return Transfer{Bytes: n}, fmt.Errorf("sink: after %d bytes: %w", n, err)
	}
	return Transfer{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil)), Seconds: secs}, nil
}

// SourceOnce accepts one connection on l and writes size bytes of
// agentproto.Stream(seed) to it, then closes it. It gives up after timeout.
func SourceOnce(l net.Listener, size int64, seed uint64, timeout time.Duration) (Transfer, error) {
	return SourcePaced(l, size, seed, 0, nil, timeout)
}

// SourcePaced is SourceOnce at no more than rate bytes a second (0: as fast
// as it goes), counting in sent, if not nil, what has been written so far:
// a stream that is sure to be still running a known time after it started,
// whatever the link's speed.
func SourcePaced(l net.Listener, size int64, seed uint64, rate int64, sent *atomic.Int64, timeout time.Duration) (Transfer, error) {
	c, err := acceptWithin(l, timeout)
	if err != nil {
		return Transfer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	h := sha256.New()
	src := io.LimitReader(agentproto.Stream(seed), size)
	buf := make([]byte, 256<<10)
	if rate > 0 {
		buf = buf[:64<<10] // finer steps for the pacing
	}
	start := time.Now()
	var n int64
	for {
		m, rerr := io.ReadFull(src, buf)
		if m > 0 {
			if _, err := c.Write(buf[:m]); err != nil {
				return Transfer{Bytes: n}, fmt.Errorf("source: after %d bytes: %w", n, err)
			}
			h.Write(buf[:m])
			n += int64(m)
			if sent != nil {
				sent.Store(n)
			}
			// Sleep until the bytes written so far are due.
			if rate > 0 {
				if wait := time.Until(start.Add(time.Duration(n * int64(time.Second) / rate))); wait > 0 {
					time.Sleep(wait)
				}
			}
		}
		if rerr != nil {
			break
		}
	}
	return Transfer{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil)), Seconds: time.Since(start).Seconds()}, nil
}

// StreamSHA256 is the hash of size bytes of agentproto.Stream(seed).
func StreamSHA256(size int64, seed uint64) string {
	h := sha256.New()
	io.CopyBuffer(h, io.LimitReader(agentproto.Stream(seed), size), make([]byte, 256<<10))
	return hex.EncodeToString(h.Sum(nil))
}

// UDPEcho echoes datagrams on c until it is closed.
func UDPEcho(c net.PacketConn) {
	b := make([]byte, 65536)
	for {
		n, addr, err := c.ReadFrom(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.WriteTo(b[:n], addr)
	}
}

func acceptWithin(l net.Listener, timeout time.Duration) (net.Conn, error) {
	type deadliner interface{ SetDeadline(time.Time) error }
	if d, ok := l.(deadliner); ok {
		d.SetDeadline(time.Now().Add(timeout))
	}
	c, err := l.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	return c, nil
}
