package netdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// encodeStream builds a stream from frames.
func encodeStream(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// decodeAll runs the decoder to its end, returning copies of the frames.
func decodeAll(r io.Reader) ([][]byte, error) {
	d := newStreamDecoder(r)
	var out [][]byte
	for i := 0; i < 1<<20; i++ {
		f, err := d.next()
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte(nil), f...))
	}
	return out, errors.New("too many frames")
}

func TestStreamDecoderReaders(t *testing.T) {
	frames := [][]byte{testFrame(60, 1), {}, testFrame(1514, 2), testFrame(MaxFrameSize, 3), testFrame(14, 4)}
	stream := encodeStream(frames...)
	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			got, err := decodeAll(mk())
			if err != io.EOF {
				t.Fatalf("end: %v, want io.EOF", err)
			}
			if len(got) != len(frames) {
				t.Fatalf("%d frames, want %d", len(got), len(frames))
			}
			for i := range frames {
				mustEqual(t, got[i], frames[i])
			}
		})
	}
}

func TestStreamDecoderErrors(t *testing.T) {
	tooLong := binary.BigEndian.AppendUint32(nil, MaxFrameSize+1)
	cases := []struct {
		name  string
		in    []byte
		want  error
		count int
	}{
		{"empty", nil, io.EOF, 0},
		{"short header", []byte{0, 0}, io.ErrUnexpectedEOF, 0},
		{"short body", append(encodeStream(testFrame(20, 0)), 0, 0, 0, 9, 1), io.ErrUnexpectedEOF, 1},
		{"length too large", append(encodeStream(testFrame(20, 0)), tooLong...), errBadLength, 1},
		{"length huge", []byte{0xff, 0xff, 0xff, 0xff}, errBadLength, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := decodeAll(bytes.NewReader(c.in))
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if len(got) != c.count {
				t.Fatalf("%d frames before the error, want %d", len(got), c.count)
			}
		})
	}
}

// zeroReader never makes progress.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestStreamDecoderNoProgress(t *testing.T) {
	if _, err := decodeAll(zeroReader{}); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("err %v, want io.ErrNoProgress", err)
	}
}

func TestStreamDecoderNoAllocs(t *testing.T) {
	one := encodeStream(testFrame(1514, 1))
	r := bytes.NewReader(one)
	d := newStreamDecoder(r)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(one)
		d.reset(r)
		if _, err := d.next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame, want 0", allocs)
	}
}

// modelDecode is a plain reading of the protocol to compare the decoder with.
func modelDecode(b []byte) (frames [][]byte, bad bool) {
	for len(b) >= 4 {
		n := binary.BigEndian.Uint32(b)
		if n > MaxFrameSize {
			return frames, true
		}
		if uint64(len(b)-4) < uint64(n) {
			return frames, false
		}
		frames = append(frames, b[4:4+n])
		b = b[4+n:]
	}
	return frames, false
}

func FuzzStreamDecoder(f *testing.F) {
	f.Add(encodeStream(testFrame(60, 1), testFrame(14, 2)), uint8(0))
	f.Add(encodeStream(testFrame(1514, 3)), uint8(7))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xaa}, uint8(1))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint8(3))
	f.Add([]byte{0, 1, 0x10, 0x01, 1, 2, 3}, uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		var r io.Reader = bytes.NewReader(in)
		switch mode % 3 {
		case 1:
			r = iotest.OneByteReader(r)
		case 2:
			r = iotest.HalfReader(r)
		}
		got, err := decodeAll(r)
		want, bad := modelDecode(in)
		if len(got) != len(want) {
			t.Fatalf("%d frames, model %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d differs from the model", i)
			}
		}
		switch {
		case bad:
			if !errors.Is(err, errBadLength) {
				t.Fatalf("err %v, want errBadLength", err)
			}
		case err != io.EOF && err != io.ErrUnexpectedEOF:
			t.Fatalf("err %v at end of input", err)
		}
	})
}
