package harness

import (
	"fmt"
	"io"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks an initramfs
// from: a 110-byte ASCII header, the name, the data, each padded to 4 bytes.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1000} }

func (c *cpioWriter) entry(name string, mode uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	rec := append([]byte(hdr), name...)
	rec = append(rec, 0)
	rec = append(rec, make([]byte, pad4(len(rec)))...)
	rec = append(rec, data...)
	rec = append(rec, make([]byte, pad4(len(data)))...)
	_, c.err = c.w.Write(rec)
	return c.err
}

// file adds a regular file with the given permission bits.
func (c *cpioWriter) file(name string, perm uint32, data []byte) error {
	return c.entry(name, 0o100000|perm&0o7777, data)
}

// close writes the trailer.
func (c *cpioWriter) close() error { return c.entry("TRAILER!!!", 0, nil) }

func pad4(n int) int { return (4 - n%4) % 4 }
