package netdev

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"e1000e-vfu/internal/leakcheck"
)

func TestPcapRecordsBothDirections(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "cap.pcap")
	a, b := NewPair()
	defer b.Close()
	pb, err := WithPcap(a, path)
	if err != nil {
		t.Fatal(err)
	}
	p := pb.(*Pcap)
	rx, rb := newCollector(), newCollector()
	if err := p.Start(rx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	out, in := testFrame(1514, 1), testFrame(60, 2)
	if err := p.Send(out); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, rb.next(t), out)
	if err := b.Send(in); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, rx.next(t), in)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// Nothing is recorded after Close.
	if err := p.Send(out); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("link type %v", r.LinkType())
	}
	if r.Snaplen() < MaxFrameSize {
		t.Fatalf("snaplen %d below MaxFrameSize", r.Snaplen())
	}
	for i, want := range [][]byte{out, in} {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		mustEqual(t, data, want)
		if ci.Length != len(want) || ci.Timestamp.Before(before) || ci.Timestamp.After(time.Now()) {
			t.Fatalf("record %d: bad capture info %+v", i, ci)
		}
	}
	if _, _, err := r.ReadPacketData(); err != io.EOF {
		t.Fatalf("after the records: %v, want EOF", err)
	}
}

func TestPcapHeaderWrittenAtOpen(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "cap.pcap")
	p, err := OpenPcap(None{}, path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 24 {
		t.Fatalf("file of %d bytes before any frame, want the 24-byte header", fi.Size())
	}
	if err := p.Send(testFrame(60, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 24+16+60 {
		t.Fatalf("file of %d bytes after one flushed frame", fi.Size())
	}
}

func TestPcapOpenErrors(t *testing.T) {
	leakcheck.Check(t)
	if _, err := WithPcap(None{}, filepath.Join(t.TempDir(), "no", "such", "dir.pcap")); err == nil {
		t.Fatal("opened a file in a missing directory")
	}
	if _, err := WithPcap(nil, filepath.Join(t.TempDir(), "x.pcap")); err == nil {
		t.Fatal("wrapped a nil backend")
	}
}

func TestPcapRecordNoAllocs(t *testing.T) {
	p, err := OpenPcap(None{}, filepath.Join(t.TempDir(), "cap.pcap"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f := testFrame(1514, 0)
	allocs := testing.AllocsPerRun(100, func() {
		if err := p.Send(f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per recorded frame, want 0", allocs)
	}
}
