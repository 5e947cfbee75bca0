package harness

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func FuzzParseReply(f *testing.F) {
	f.Add([]byte(`@@agent {"id":3,"ok":true,"code":0,"out":"x","data":{"bytes":"AAE="}}`))
	f.Add([]byte(`[ 1.0] noise @@agent {"id":0,"ok":true,"out":"ready"}`))
	f.Add([]byte(`@@agent {"id":`))
	f.Add([]byte("no reply here"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, ok := parseReply(line)
		if !ok && (r.ID != 0 || r.OK || r.Out != "") {
			t.Fatalf("rejected line yielded %+v", r)
		}
		if ok && !bytes.Contains(line, []byte("@@agent ")) {
			t.Fatal("accepted a line without the prefix")
		}
	})
}

func TestReadFrame(t *testing.T) {
	var s bytes.Buffer
	for _, f := range [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{7}, 100)} {
		binary.Write(&s, binary.BigEndian, uint32(len(f)))
		s.Write(f)
	}
	binary.Write(&s, binary.BigEndian, uint32(101)) // longer than the buffer
	buf := make([]byte, 100)
	for _, want := range []int{5, 0, 100} {
		f, err := readFrame(&s, buf)
		if err != nil || len(f) != want {
			t.Fatalf("frame: %d bytes, %v; want %d", len(f), err, want)
		}
	}
	if _, err := readFrame(&s, buf); err == nil {
		t.Error("a frame longer than the buffer was accepted")
	}
	if _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1}), buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, stream []byte) {
		rd := bytes.NewReader(stream)
		buf := make([]byte, 64)
		for i := 0; i <= len(stream); i++ { // each frame consumes ≥ 4 bytes
			f, err := readFrame(rd, buf)
			if err != nil {
				return
			}
			if len(f) > len(buf) {
				t.Fatalf("frame of %d bytes from a %d-byte buffer", len(f), len(buf))
			}
		}
		t.Fatal("readFrame did not consume its input")
	})
}
