package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The stream protocol (QEMU's -netdev stream, also spoken by passt) carries
// each frame behind a 4-byte big-endian length.
const streamHeaderSize = 4

// errBadLength reports a length prefix above MaxFrameSize; the stream cannot
// be resynchronised after one, so the connection is dropped.
var errBadLength = errors.New("frame length above MaxFrameSize")

// maxEmptyReads bounds how many (0, nil) results a reader may return in a row
// before the decoder gives up, so a broken reader cannot spin it forever.
const maxEmptyReads = 100

// streamDecoder cuts a byte stream into frames. It reads into one buffer
// large enough for a maximal frame plus its header, so it allocates nothing
// after construction and usually needs one read for many small frames.
type streamDecoder struct {
	r          io.Reader
	buf        []byte
	start, end int // buf[start:end] is read but not yet decoded
}

func newStreamDecoder(r io.Reader) *streamDecoder {
	return &streamDecoder{r: r, buf: make([]byte, 2*(streamHeaderSize+MaxFrameSize))}
}

// reset points the decoder at a new stream, dropping anything buffered.
func (d *streamDecoder) reset(r io.Reader) {
	d.r = r
	d.start, d.end = 0, 0
}

// next returns the next frame, valid until the following call. A zero-length
// frame is returned as an empty slice. At a clean end of stream it returns
// io.EOF; a stream that ends inside a frame gives io.ErrUnexpectedEOF.
func (d *streamDecoder) next() ([]byte, error) {
	empty := 0
	for {
		avail := d.end - d.start
		need := streamHeaderSize
		if avail >= streamHeaderSize {
			n := binary.BigEndian.Uint32(d.buf[d.start:])
			if n > MaxFrameSize {
				return nil, fmt.Errorf("%w: %d", errBadLength, n)
			}
			need = streamHeaderSize + int(n)
			if avail >= need {
				frame := d.buf[d.start+streamHeaderSize : d.start+need]
				d.start += need
				return frame, nil
			}
		}
		// Not enough buffered: make room at the end for the rest of this
		// frame, moving the partial frame to the front if needed.
		if len(d.buf)-d.start < need {
			copy(d.buf, d.buf[d.start:d.end])
			d.start, d.end = 0, avail
		} else if d.start == d.end {
			d.start, d.end = 0, 0
		}
		n, err := d.r.Read(d.buf[d.end:])
		if n < 0 || n > len(d.buf)-d.end {
			return nil, fmt.Errorf("reader returned invalid count %d", n)
		}
		d.end += n
		if n > 0 {
			empty = 0
			continue // decode what arrived before looking at err
		}
		if err != nil {
			if err == io.EOF && d.end > d.start {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		empty++
		if empty >= maxEmptyReads {
			return nil, io.ErrNoProgress
		}
	}
}

// putStreamHeader writes the length prefix of a frame of n bytes.
func putStreamHeader(b []byte, n int) {
	binary.BigEndian.PutUint32(b, uint32(n))
}
