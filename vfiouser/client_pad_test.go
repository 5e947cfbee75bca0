package vfiouser

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// padServer answers a client the way libvfio-user does: every reply is as
// long as the request asked for, the fields inside saying how much of it
// means something, the rest padding. short makes it announce more data
// than it sends instead.
type padServer struct {
	state []byte // the migration data to hand out
	off   int
	short bool
}

const padByte = 0xee

// serve answers fd's requests until the client hangs up.
func (s *padServer) serve(fd int) {
	defer unix.Close(fd)
	rd := newReader(fd, 4096, 1<<22)
	defer rd.close()
	for {
		m, err := rd.next(1 << 22)
		if err != nil {
			return
		}
		m.closeFDs()
		var out []byte
		switch m.hdr.Command {
		case CmdMigDataRead:
			in, _ := DecodeMigData(m.payload)
			out = bytes.Repeat([]byte{padByte}, MigDataSize+int(in.Size))
			n := copy(out[MigDataSize:], s.state[s.off:])
			s.off += n
			size := uint32(n)
			if s.short {
				out = out[:MigDataSize+n]
				size++
			}
			MigData{Argsz: MigDataSize + size, Size: size}.Encode(out)
		case CmdDeviceFeature:
			// A GET of MIGRATION, in a reply padded to the request's argsz.
			in, _ := DecodeFeature(m.payload)
			out = bytes.Repeat([]byte{padByte}, int(in.Argsz))
			Feature{Argsz: FeatureSize + 8, Flags: in.Flags}.Encode(out)
			le.PutUint64(out[FeatureSize:], 0x7)
			if s.short {
				out = out[:FeatureSize+4]
			}
		case CmdRegionRead:
			in, _ := DecodeRegionRW(m.payload)
			out = bytes.Repeat([]byte{padByte}, RegionRWSize+int(in.Count)+16)
			in.Encode(out)
			for i := range int(in.Count) {
				out[RegionRWSize+i] = byte(i + 1)
			}
			if s.short {
				out = out[:RegionRWSize+int(in.Count)-1]
			}
		}
		h := Header{MsgID: m.hdr.MsgID, Command: m.hdr.Command, Flags: FlagTypeReply, Size: uint32(HeaderSize + len(out))}
		b := make([]byte, h.Size)
		h.Encode(b)
		copy(b[HeaderSize:], out)
		if writeMsg(fd, b, nil) != nil {
			return
		}
	}
}

func padPair(t *testing.T, s *padServer) *Client {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.serve(fds[0]); close(done) }()
	cl := NewClient(fds[1])
	t.Cleanup(func() { cl.Close(); <-done })
	return cl
}

// The client takes exactly the announced bytes out of a padded reply: the
// whole device state arrives, no padding with it, and the short last read
// still ends the data.
func TestClientTakesAnnouncedSizeFromPaddedReplies(t *testing.T) {
	state := make([]byte, 10000)
	for i := range state {
		state[i] = byte(i*13 + 1)
	}
	cl := padPair(t, &padServer{state: state})
	var got []byte
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatal("the data never ends")
		}
		n, err := cl.MigDataRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		if n < len(buf) {
			break
		}
	}
	if !bytes.Equal(got, state) {
		t.Fatalf("read %d bytes, want the %d of the state intact", len(got), len(state))
	}

	flags, err := cl.MigrationFlags() // argsz 16 asked, a 16-byte reply with argsz 16
	if err != nil || flags != 7 {
		t.Fatalf("MIGRATION: %#x %v", flags, err)
	}
	d, err := cl.DeviceFeature(FeatMigration|FeatureGet, nil, 64) // 64 bytes back, argsz 16
	if err != nil || len(d) != 8 || le.Uint64(d) != 7 {
		t.Fatalf("padded GET: %x %v, want the 8 bytes argsz covers", d, err)
	}

	p := make([]byte, 6)
	if err := cl.ReadRegion(0, 0x40, p); err != nil || !bytes.Equal(p, []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("padded region read: %x %v", p, err)
	}
}

// A reply shorter than what it announces is still a protocol error.
func TestClientRefusesRepliesShorterThanAnnounced(t *testing.T) {
	cl := padPair(t, &padServer{state: make([]byte, 100), short: true})
	if _, err := cl.MigDataRead(make([]byte, 4096)); err == nil || !errors.Is(err, syscall.EPROTO) {
		t.Errorf("MIG_DATA_READ announcing a byte more than it carries: %v, want EPROTO", err)
	}
	if _, err := cl.DeviceFeature(FeatMigration|FeatureGet, nil, 64); err == nil || !errors.Is(err, syscall.EPROTO) {
		t.Errorf("GET shorter than its argsz: %v, want EPROTO", err)
	}
	if err := cl.ReadRegion(0, 0, make([]byte, 8)); err == nil || !errors.Is(err, syscall.EPROTO) {
		t.Errorf("region read shorter than its count: %v, want EPROTO", err)
	}
}
