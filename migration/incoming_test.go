package migration

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// chunkedLoad feeds stream to a fresh resuming machine in writes of chunk
// bytes, then loads it (RESUMING→STOP). It returns the offset of the byte
// whose write failed (-1 if none), the device and the load's error.
func chunkedLoad(stream []byte, chunk int, lim Limits) (int, *fakeDev, error) {
	d := newFakeDev(0, true)
	m := NewMachine(d, Options{Limits: lim})
	if err := m.SetMigrationState(sResuming); err != nil {
		panic(err)
	}
	failedAt := -1
	for off := 0; off < len(stream); off += chunk {
		end := min(off+chunk, len(stream))
		if err := m.WriteMigrationData(stream[off:end]); err != nil {
			failedAt = end - 1
			break
		}
	}
	return failedAt, d, m.SetMigrationState(sStop)
}

// A stream delivered in writes of any size, down to one byte, loads
// exactly as when it comes in one write; and a bad stream is refused by the
// write that completes the bad part, whatever the size of the writes.
func TestIncomingChunkingLoadsTheSame(t *testing.T) {
	src := newFakeDev(0, true)
	src.st = busyState(0)
	src.st.Blob = bytes.Repeat([]byte("0123456789abcdef"), 300)
	h, secs, err := Split(mustSave(t, src), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// Unknown optional sections between known ones are skipped.
	secs = append(secs[:2], append([]Section{{Name: "later-x", Payload: mustPack(t, []int{1, 2, 3})}}, secs[2:]...)...)
	good, err := Assemble(h, secs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, whole, err := chunkedLoad(good, len(good), Limits{})
	if err != nil {
		t.Fatalf("load in one write: %v", err)
	}
	if dump(whole.state()) != dump(src.state()) {
		t.Fatal("load in one write lost state")
	}
	for _, chunk := range []int{1, 2, 7, 64, 1000, len(good) - 1} {
		at, d, err := chunkedLoad(good, chunk, Limits{})
		if at >= 0 || err != nil {
			t.Fatalf("writes of %d bytes: write at %d failed, load: %v", chunk, at, err)
		}
		if dump(d.state()) != dump(whole.state()) || d.applyCalls != 1 {
			t.Fatalf("writes of %d bytes load a different state (%d applies)", chunk, d.applyCalls)
		}
	}

	sec := bytes.Index(good, []byte("later-x")) - 3 // the unknown section's tag
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 1
	badTag := bytes.Clone(good)
	badTag[sec] = 'Q'
	for _, tc := range []struct {
		name   string
		stream []byte
		at     int // the byte whose write is refused
		want   string
	}{
		{"checksum", badCRC, len(good) - 1, "checksum mismatch"},
		{"stray byte", append(bytes.Clone(good), 0), len(good), "stray bytes"},
		{"unknown tag", badTag, sec, "unknown record tag"},
	} {
		for _, chunk := range []int{1, 3, 64} {
			at, d, err := chunkedLoad(tc.stream, chunk, Limits{})
			if want := min(tc.at/chunk*chunk+chunk, len(tc.stream)) - 1; at != want {
				t.Errorf("%s in writes of %d: write ending at %d refused, want %d", tc.name, chunk, at, want)
			}
			if err == nil || d.applyCalls != 0 {
				t.Errorf("%s in writes of %d: loaded (%d applies)", tc.name, chunk, d.applyCalls)
			}
		}
		if _, _, err := chunkedLoad(tc.stream, len(tc.stream), Limits{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s in one write: load error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// manyRecords is a header and n empty optional sections, no end: the
// shape that made the old scan quadratic.
func manyRecords(tb testing.TB, n int) []byte {
	b, err := AppendHeader(nil, fakeModel, nil, Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < n; i++ {
		b = appendSection(b, "x", false, nil)
	}
	return b
}

// A stream of more sections than the limit is refused by the write that
// brings the first one too many, not buffered up to the stream limit; and
// so is a section longer than the section limit, as soon as its length
// has arrived.
func TestIncomingRefusedAtTheRecordOverTheLimit(t *testing.T) {
	lim := DefaultLimits()
	hdr := len(manyRecords(t, 0))
	rec := len(manyRecords(t, 1)) - hdr
	stream := manyRecords(t, 100_000)
	at, _, err := chunkedLoad(stream, 64, Limits{})
	tooMany := hdr + lim.MaxSections*rec + rec - 1 // the last byte of section MaxSections+1's length
	if want := tooMany/64*64 + 63; at != want {
		t.Fatalf("%d sections in writes of 64 bytes: write ending at %d refused, want %d", 100_000, at, want)
	}
	if err == nil {
		t.Fatal("loaded")
	}
	big := manyRecords(t, 0)
	big = appendSection(big, "x", false, make([]byte, lim.MaxSectionSize+1))[:len(big)+8]
	if at, _, _ := chunkedLoad(big, 1, Limits{}); at != len(big)-1 {
		t.Fatalf("oversized section refused at byte %d, want %d", at, len(big)-1)
	}
	// A refused stream refuses later writes at once, with the same error.
	m := NewMachine(newFakeDev(0, true), Options{})
	setState(t, m, sResuming)
	first := m.WriteMigrationData(stream)
	if again := m.WriteMigrationData(stream[:8]); first == nil || again == nil || !errors.Is(again, syscall.EINVAL) || again.Error() != first.Error() {
		t.Fatalf("first write: %v; next: %v", first, again)
	}
}

// FuzzIncomingChunked: a stream fed in writes of any size is accepted by
// the machine exactly when Load accepts it whole.
func FuzzIncomingChunked(f *testing.F) {
	good := mustSave(f, sampleDev(0))
	for _, b := range mutations(f, good) {
		f.Add(b, uint8(1))
		f.Add(b, uint8(13))
	}
	f.Add(good, uint8(0))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		if len(stream) > 1<<16 {
			return
		}
		n := max(int(chunk), 1)
		if chunk == 0 {
			n = max(len(stream), 1)
		}
		_, d, err := chunkedLoad(stream, n, Limits{})
		werr := Load(stream, newFakeDev(0, true), Limits{}, nil)
		if (err == nil) != (werr == nil) {
			t.Fatalf("writes of %d bytes: load %v; whole-stream Load: %v", n, err, werr)
		}
		if bytes.Equal(stream, good) && (err != nil || dump(d.state()) != dump(sampleDev(0).state())) {
			t.Fatalf("the sample stream in writes of %d bytes: %v", n, err)
		}
	})
}

// BenchmarkIncomingSmallWrites sends a stream of many small records in
// 64-byte writes (with the section limit lifted, so it is scanned to the
// end) and reports the time per write: flat as the stream grows, since
// each write scans only what it brought.
func BenchmarkIncomingSmallWrites(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20, 3 << 20} {
		b.Run(fmt.Sprintf("stream=%dKiB", size>>10), func(b *testing.B) {
			rec := len(manyRecords(b, 1)) - len(manyRecords(b, 0))
			stream := manyRecords(b, size/rec)
			lim := Limits{MaxSections: 1 << 30}
			m := NewMachine(newFakeDev(0, true), Options{Limits: lim})
			writes := 0
			for b.Loop() {
				m.Reset()
				if err := m.SetMigrationState(sResuming); err != nil {
					b.Fatal(err)
				}
				for off := 0; off < len(stream); off += 64 {
					if err := m.WriteMigrationData(stream[off:min(off+64, len(stream))]); err != nil {
						b.Fatal(err)
					}
					writes++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(writes), "ns/write")
		})
	}
}

// The scan of an incoming stream costs the stream's size, however small
// the writes that bring it: the record-header bytes it looks at, counted
// again each time a write leaves a header incomplete, stay within a few
// times the stream's length. A scan that started over at every write
// would look at the whole stream received so far each time: hundreds of
// times its length here.
func TestIncomingScanLinear(t *testing.T) {
	stream := manyRecords(t, 20_000)
	for _, chunk := range []int{7, 64, 1000} {
		m := NewMachine(newFakeDev(0, true), Options{Limits: Limits{MaxSections: 1 << 30}})
		if err := m.SetMigrationState(sResuming); err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(stream); off += chunk {
			if err := m.WriteMigrationData(stream[off:min(off+chunk, len(stream))]); err != nil {
				t.Fatalf("writes of %d bytes, at %d: %v", chunk, off, err)
			}
		}
		if looked, bound := m.inLooked, 4*len(stream)+1024; looked > bound {
			t.Errorf("writes of %d bytes: the scan looked at %d bytes of a %d-byte stream, over %d", chunk, looked, len(stream), bound)
		}
		if m.inSections != 20_000 {
			t.Errorf("writes of %d bytes: %d sections scanned, want 20000", chunk, m.inSections)
		}
	}
}

// A loaded stream is forgotten with the state change that loaded it: its
// buffer is released and a second stream starts from nothing.
func TestIncomingForgottenAfterLoad(t *testing.T) {
	src := newFakeDev(0, true)
	src.st = busyState(0)
	stream := mustSave(t, src)
	d := newFakeDev(0, true)
	m := NewMachine(d, Options{})
	for round := range 2 {
		setState(t, m, sResuming)
		writeAll(t, m, stream, 100)
		setState(t, m, sStop)
		if m.in != nil || m.inHdr != 0 || m.loader != nil || m.inScan != 0 || m.inEnd != 0 {
			t.Fatalf("round %d: %d bytes kept, header %d, scan at %d after the load", round, cap(m.in), m.inHdr, m.inScan)
		}
		if d.applyCalls != round+1 || dump(d.state()) != dump(src.state()) {
			t.Fatalf("round %d: %d loads", round, d.applyCalls)
		}
	}
}
