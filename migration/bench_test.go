package migration

import (
	"encoding/binary"
	"testing"
	"time"
)

// typicalDev has a state of about 4 KiB, the goal for an active e1000e:
// registers, a ring, a 64-entry filter table, statistics and 3 KiB of
// further state.
func typicalDev() *fakeDev {
	d := newFakeDev(64, true)
	d.st = busyState(64)
	d.st.Blob = make([]byte, 3<<10)
	for i := range d.st.Blob {
		d.st.Blob[i] = byte(i * 7)
	}
	return d
}

func BenchmarkSave(b *testing.B) {
	d := typicalDev()
	buf, _ := Save(nil, d, Limits{})
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = Save(buf[:0], d, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "state-bytes")
}

func BenchmarkLoad(b *testing.B) {
	stream := mustSave(b, typicalDev())
	d := newFakeDev(64, true)
	b.ReportAllocs()
	for b.Loop() {
		if err := Load(stream, d, Limits{}, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(stream)), "state-bytes")
}

// v1Bench is a source machine holding an 8 MiB saved stream in
// STOP_COPY, rewound before each pass of the save loop so the loop alone
// is measured.
type v1Bench struct {
	m      *Machine
	r      *V1Region
	c      *v1Client
	dst    []byte // the client's copy of the stream
	reply  []byte // one REGION_READ reply payload
	stream int
}

func newV1Bench(b *testing.B) *v1Bench {
	d := newFakeDev(0, true)
	d.st.Blob = make([]byte, 8<<20)
	m, r := newV1(b, d, DefaultV1AreaSize, Limits{MaxSectionSize: 16 << 20, MaxStreamSize: 32 << 20})
	c := newV1Client(b, r, true)
	if err := c.setState(0, v1Saving); err != nil {
		b.Fatal(err)
	}
	return &v1Bench{m: m, r: r, c: c, dst: make([]byte, 0, 9<<20), reply: make([]byte, 1<<20), stream: len(m.out)}
}

// passMmap is one whole v1 save loop with the data taken from the
// client's mapping of the data area.
func (v *v1Bench) passMmap() {
	v.m.outRead = 0
	v.dst = v.dst[:0]
	var b [8]byte
	for {
		v.r.ReadRegion(V1OffPending, b[:])
		if binary.LittleEndian.Uint64(b[:]) == 0 {
			return
		}
		v.r.ReadRegion(V1OffDataOffset, b[:])
		off := binary.LittleEndian.Uint64(b[:]) - V1DataOffset
		v.r.ReadRegion(V1OffDataSize, b[:])
		n := binary.LittleEndian.Uint64(b[:])
		v.dst = append(v.dst, v.c.mapped[off:off+n]...)
	}
}

// passRead is the same loop with the data fetched by region reads of
// max_data_xfer_size (1 MiB): V1Region.Read fills a reply buffer, which is
// then copied out as a client would from the message. The socket itself is
// not in this measurement; the server's message benchmarks cover it.
func (v *v1Bench) passRead() {
	v.m.outRead = 0
	v.dst = v.dst[:0]
	var b [8]byte
	for {
		v.r.ReadRegion(V1OffPending, b[:])
		if binary.LittleEndian.Uint64(b[:]) == 0 {
			return
		}
		v.r.ReadRegion(V1OffDataOffset, b[:])
		off := binary.LittleEndian.Uint64(b[:])
		v.r.ReadRegion(V1OffDataSize, b[:])
		n := binary.LittleEndian.Uint64(b[:])
		for done := uint64(0); done < n; {
			k := min(n-done, uint64(len(v.reply)))
			v.r.ReadRegion(off+done, v.reply[:k])
			v.dst = append(v.dst, v.reply[:k]...)
			done += k
		}
	}
}

func BenchmarkV1SaveLoop(b *testing.B) {
	for _, arm := range []struct {
		name string
		pass func(*v1Bench)
	}{{"mmap", (*v1Bench).passMmap}, {"region-read", (*v1Bench).passRead}} {
		b.Run(arm.name, func(b *testing.B) {
			v := newV1Bench(b)
			b.SetBytes(int64(v.stream))
			b.ReportAllocs()
			for b.Loop() {
				arm.pass(v)
			}
			if len(v.dst) != v.stream {
				b.Fatalf("moved %d bytes of %d", len(v.dst), v.stream)
			}
		})
	}
}

// BenchmarkV1SaveLoopRatio runs both arms alternately in one run, so the
// two figures share the machine's conditions, and reports their ratio.
func BenchmarkV1SaveLoopRatio(b *testing.B) {
	v := newV1Bench(b)
	var tm, tr time.Duration
	for b.Loop() {
		t0 := time.Now()
		v.passMmap()
		t1 := time.Now()
		v.passRead()
		tr += time.Since(t1)
		tm += t1.Sub(t0)
	}
	mb := float64(v.stream) * float64(b.N) / 1e6
	b.ReportMetric(mb/tm.Seconds(), "mmap-MB/s")
	b.ReportMetric(mb/tr.Seconds(), "read-MB/s")
	b.ReportMetric(tr.Seconds()/tm.Seconds(), "mmap-speedup")
}

// BenchmarkV2Read is the v2 data path for comparison: MIG_DATA_READ of
// 1 MiB at a time from the same 8 MiB stream.
func BenchmarkV2Read(b *testing.B) {
	v := newV1Bench(b)
	b.SetBytes(int64(v.stream))
	b.ReportAllocs()
	for b.Loop() {
		v.m.outRead = 0
		v.dst = v.dst[:0]
		for {
			n, err := v.m.ReadMigrationData(v.reply)
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
			v.dst = append(v.dst, v.reply[:n]...)
		}
	}
}
