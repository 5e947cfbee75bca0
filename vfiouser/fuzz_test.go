package vfiouser

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"e1000e-vfu/internal/leakcheck"
)

// FuzzDecoders feeds arbitrary bytes to every decoder; what decodes must
// encode back to the same fields.
func FuzzDecoders(f *testing.F) {
	f.Add(qemuVersionPayload())
	var ri [RegionInfoSize]byte
	RegionInfo{Argsz: 32, Index: 2}.Encode(ri[:])
	f.Add(ri[:])
	var is [IRQSetSize]byte
	IRQSet{Argsz: 20, Flags: 4 | 32, Index: 2, Start: 0, Count: 1}.Encode(is[:])
	f.Add(is[:])
	f.Add(LoggingStart{PageSize: 4096, Ranges: []LoggingRange{{0, 1 << 20}}}.Encode(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := DecodeHeader(p); err == nil {
			b := make([]byte, HeaderSize)
			h.Encode(b)
			if !bytes.Equal(b, p[:HeaderSize]) {
				t.Fatalf("header round trip %x -> %x", p[:HeaderSize], b)
			}
		}
		if v, err := DecodeVersion(p); err == nil {
			b, err := v.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			v2, err := DecodeVersion(b)
			if err != nil || !reflect.DeepEqual(v, v2) {
				t.Fatalf("version round trip %+v -> %+v (%v)", v, v2, err)
			}
		}
		roundTrip := func(name string, dec func([]byte) (any, error), enc func(any) []byte, size int) {
			v, err := dec(p)
			if err != nil {
				return
			}
			b := enc(v)
			if !bytes.Equal(b[:size], p[:size]) {
				t.Fatalf("%s round trip %x -> %x", name, p[:size], b[:size])
			}
		}
		roundTrip("dma map", func(b []byte) (any, error) { return DecodeDMAMap(b) },
			func(v any) []byte { b := make([]byte, DMAMapSize); v.(DMAMap).Encode(b); return b }, DMAMapSize)
		roundTrip("dma unmap", func(b []byte) (any, error) { return DecodeDMAUnmap(b) },
			func(v any) []byte { b := make([]byte, DMAUnmapSize); v.(DMAUnmap).Encode(b); return b }, DMAUnmapSize)
		roundTrip("region info", func(b []byte) (any, error) { return DecodeRegionInfo(b) },
			func(v any) []byte { b := make([]byte, RegionInfoSize); v.(RegionInfo).Encode(b); return b }, RegionInfoSize)
		roundTrip("irq set", func(b []byte) (any, error) { return DecodeIRQSet(b) },
			func(v any) []byte { b := make([]byte, IRQSetSize); v.(IRQSet).Encode(b); return b }, IRQSetSize)
		roundTrip("region rw", func(b []byte) (any, error) { return DecodeRegionRW(b) },
			func(v any) []byte { b := make([]byte, RegionRWSize); v.(RegionRW).Encode(b); return b }, RegionRWSize)
		roundTrip("write multi", func(b []byte) (any, error) { return DecodeWriteMultiItem(b) },
			func(v any) []byte { b := make([]byte, WriteMultiItemSize); v.(WriteMultiItem).Encode(b); return b }, WriteMultiItemSize)
		roundTrip("dirty bitmap", func(b []byte) (any, error) { return DecodeDirtyBitmap(b) },
			func(v any) []byte { b := make([]byte, DirtyBitmapSize); v.(DirtyBitmap).Encode(b); return b }, DirtyBitmapSize)
		roundTrip("logging report", func(b []byte) (any, error) { return DecodeLoggingReport(b) },
			func(v any) []byte { b := make([]byte, LoggingReportSize); v.(LoggingReport).Encode(b); return b }, LoggingReportSize)
		roundTrip("dma rw", func(b []byte) (any, error) { return DecodeDMARW(b) },
			func(v any) []byte { b := make([]byte, DMARWSize); v.(DMARW).Encode(b); return b }, DMARWSize)
		if addr, count, data, err := decodeDMARW(p, true); err == nil && count <= 1<<20 {
			a2, c2, d2, err := decodeDMARW(encodeDMARW(addr, int(count), data), true)
			if err != nil || a2 != addr || c2 != count || !bytes.Equal(d2, data) {
				t.Fatalf("dma rw round trip: %v", err)
			}
		}
		if s, err := DecodeLoggingStart(p); err == nil {
			s2, err := DecodeLoggingStart(s.Encode(nil))
			if err != nil || s2.PageSize != s.PageSize || len(s2.Ranges) != len(s.Ranges) {
				t.Fatalf("logging start round trip: %v", err)
			}
		}
		if len(p) >= RegionInfoSize {
			ri, _ := DecodeRegionInfo(p)
			if caps, err := DecodeRegionCaps(p, ri.CapOffset); err == nil {
				b, first := encodeRegionCaps(make([]byte, RegionInfoSize), caps)
				caps2, err := DecodeRegionCaps(b, first)
				if err != nil || !reflect.DeepEqual(caps, caps2) {
					t.Fatalf("caps round trip %+v -> %+v (%v)", caps, caps2, err)
				}
			}
		}
	})
}

// FuzzDispatch streams arbitrary bytes, after a valid VERSION, to a
// stepped connection with the fake device: the server must answer or drop
// the client, never panic, and leave no descriptor open.
func FuzzDispatch(f *testing.F) {
	msg := func(cmd Command, flags uint32, payload []byte) []byte {
		b := make([]byte, HeaderSize+len(payload))
		Header{MsgID: 3, Command: cmd, Size: uint32(len(b)), Flags: flags}.Encode(b)
		copy(b[HeaderSize:], payload)
		return b
	}
	var ri [RegionInfoSize]byte
	RegionInfo{Argsz: 32, Index: 2}.Encode(ri[:])
	f.Add(msg(CmdGetRegionInfo, 0, ri[:]), false)
	var is [IRQSetSize]byte
	IRQSet{Argsz: 20, Flags: 4 | 32, Index: 2, Start: 0, Count: 1}.Encode(is[:])
	f.Add(msg(CmdSetIRQs, 0, is[:]), true) // QEMU's MSI-X vector 0 with its eventfd
	f.Add(append(msg(CmdRegionWrite, FlagNoReply, regionWritePayload(0, 8, []byte{1, 2, 3, 4})),
		msg(CmdRegionRead, 0, regionWritePayload(0, 8, nil))...), false)
	var dm [DMAMapSize]byte
	DMAMap{Argsz: 32, Flags: 3, Addr: 0x1000, Size: 0x1000}.Encode(dm[:])
	f.Add(msg(CmdDMAMap, 0, dm[:]), false)
	f.Add(msg(CmdDMAMap, 0, dm[:]), true) // an eventfd where a memfd belongs
	f.Add(msg(CmdDeviceFeature, 0, []byte{8, 0, 0, 0, 1, 0, 1, 0}), false)
	f.Add(msg(CmdDeviceGetInfo, 0, make([]byte, 16)), true)
	f.Add([]byte{1, 0, 4, 0, 8, 0, 0, 0}, false)
	version := msg(CmdVersion, 0, qemuVersionPayload())
	f.Fuzz(func(t *testing.T, stream []byte, withFD bool) {
		if len(stream) > 1<<16 {
			return
		}
		before := leakcheck.FDCount(t)
		efd := -1
		if withFD {
			var err error
			if efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
				t.Fatal(err)
			}
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		dev := &fakeMigDevice{fakeDevice: newFakeDevice(t)}
		srv := newServer(t, dev, Options{Logger: slog.New(slog.DiscardHandler)})
		conn, err := srv.NewConn(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		written := make(chan struct{})
		go func() {
			defer close(written)
			unix.Write(fds[1], version)
			b := stream
			if efd >= 0 && len(b) > 0 {
				// The first bytes carry the descriptor, as a header would.
				n, err := unix.SendmsgN(fds[1], b, unix.UnixRights(efd), nil, 0)
				if err == nil {
					b = b[n:]
				}
			}
			for len(b) > 0 {
				n, err := unix.Write(fds[1], b)
				if err != nil {
					break
				}
				b = b[n:]
			}
			unix.Shutdown(fds[1], unix.SHUT_WR)
			if efd >= 0 {
				unix.Close(efd)
			}
		}()
		drained := make(chan struct{})
		go func() {
			buf := make([]byte, 1<<16)
			for {
				n, err := unix.Read(fds[1], buf)
				if n <= 0 || err != nil {
					close(drained)
					return
				}
			}
		}()
		// Each step consumes at least one message of the bounded stream.
		for {
			err := conn.Step()
			if errors.Is(err, errPanic) {
				t.Fatal(err)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errStream) {
					t.Fatalf("step: %v", err)
				}
				break
			}
		}
		conn.Close()
		<-written
		<-drained
		unix.Close(fds[1])
		dev.mmap.Close()
		if after := leakcheck.FDCount(t); after != before+1 { // the fake's region file closes at cleanup
			t.Fatalf("descriptors: %d before, %d after", before, after)
		}
	})
}
