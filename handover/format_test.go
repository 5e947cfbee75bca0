package handover

import (
	"bytes"
	"errors"
	"hash/crc32"
	"testing"
)

// sample is a state as a server with a client, a TAP and an MSI-X guest
// hands it over.
func sample() *State {
	return &State{
		Config: []byte(`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"mac":"02:e1:0e:12:34:56"}`),
		Netdev: Netdev{Kind: "tap", IfName: "tap0"},
		Proto:  Proto{Negotiated: true, MaxXfer: 1 << 20, NextID: 7, Buffered: []byte("0123456789abcdef-partial")},
		Maps: []Map{
			{IOVA: 0, Size: 0xa0000, Offset: 0, Flags: 3, File: 0},
			{IOVA: 0x100000, Size: 0x1ff00000, Offset: 0x100000, Flags: 3, File: 0},
			{IOVA: 0xfffc0000, Size: 0x40000, Flags: 1, File: -1},
		},
		INTxMasked: false,
		FDs: []FD{
			{Role: RoleConn}, {Role: RoleListener}, {Role: RoleControl}, {Role: RoleBackend},
			{Role: RoleDMAFile, A: 0},
			{Role: RoleIRQ, A: 2, B: 0}, {Role: RoleIRQ, A: 2, B: 1}, {Role: RoleIRQ, A: 4, B: 0},
			{Role: RoleBufferedFDs, A: 0},
		},
		Device: []byte("\x89DST\r\n\x1a\nnot parsed here"),
	}
}

func TestStateRoundTrip(t *testing.T) {
	in := sample()
	b, err := EncodeState(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := EncodeState(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatal("re-encoding differs")
	}
	if out.Netdev != in.Netdev || out.Proto.NextID != 7 || len(out.Maps) != 3 || out.Maps[2].File != -1 || len(out.FDs) != len(in.FDs) {
		t.Fatalf("decoded %+v", out)
	}
}

// reseal recomputes the end record's checksum, so a test reaches the
// check it means.
func reseal(b []byte) []byte {
	end := len(b) - 4
	le.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
	return b
}

func TestStateRefusals(t *testing.T) {
	cases := map[string]func(s *State){
		"no listener":         func(s *State) { s.FDs = s.FDs[2:] },
		"two connections":     func(s *State) { s.FDs = append(s.FDs, FD{Role: RoleConn}) },
		"unknown role":        func(s *State) { s.FDs = append(s.FDs, FD{Role: 42}) },
		"irq index":           func(s *State) { s.FDs = append(s.FDs, FD{Role: RoleIRQ, A: 5}) },
		"irq twice":           func(s *State) { s.FDs = append(s.FDs, FD{Role: RoleIRQ, A: 2, B: 1}) },
		"map unaligned":       func(s *State) { s.Maps[0].Size = 100 },
		"map overlap":         func(s *State) { s.Maps[1].IOVA = 0x1000 },
		"map wraps":           func(s *State) { s.Maps[2].Size = 1 << 63; s.Maps[2].IOVA = 1 << 63 },
		"map file missing":    func(s *State) { s.Maps[0].File = 9 },
		"map flags":           func(s *State) { s.Maps[0].Flags = 4 },
		"file unused":         func(s *State) { s.FDs = append(s.FDs, FD{Role: RoleDMAFile, A: 3}) },
		"buffered fd outside": func(s *State) { s.FDs[8].A = 1000 },
		"buffered fds unordered": func(s *State) {
			s.FDs[8].A = 4
			s.FDs = append(s.FDs, FD{Role: RoleBufferedFDs, A: 2})
		},
		"buffered fds for one message": func(s *State) {
			for range MaxBufferedMsgFDs {
				s.FDs = append(s.FDs, FD{Role: RoleBufferedFDs, A: 0})
			}
		},
		"buffered messages with fds": func(s *State) {
			for i := range MaxBufferedFDSets {
				s.FDs = append(s.FDs, FD{Role: RoleBufferedFDs, A: uint32(i + 1)})
			}
		},
		"netdev unknown":        func(s *State) { s.Netdev.Kind = "vde" },
		"dgram with a name":     func(s *State) { s.Netdev.Kind = "dgram" },
		"none with a backend":   func(s *State) { s.Netdev = Netdev{Kind: "none"} },
		"ifname":                func(s *State) { s.Netdev.IfName = "tap0;rm" },
		"tap without fd":        func(s *State) { s.FDs = append(s.FDs[:3], s.FDs[4:]...) },
		"no device state":       func(s *State) { s.Device = nil },
		"no config":             func(s *State) { s.Config = nil },
		"xfer":                  func(s *State) { s.Proto.MaxXfer = 4 },
		"client without conn":   func(s *State) { s.FDs = s.FDs[1:] },
		"maps without a client": func(s *State) { s.FDs = []FD{{Role: RoleListener}, {Role: RoleBackend}, {Role: RoleDMAFile}} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			s := sample()
			mutate(s)
			if _, err := EncodeState(s); !errors.Is(err, ErrFormat) {
				t.Fatalf("encode: %v", err)
			}
		})
	}
}

func TestStateWireRefusals(t *testing.T) {
	good, err := EncodeState(sample())
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte(nil), good...), 0),
		"bad checksum":   func() []byte { b := append([]byte(nil), good...); b[len(b)-1] ^= 1; return b }(),
		"wrong tag":      reseal(func() []byte { b := append([]byte(nil), good...); b[0] = 'X'; return b }()),
		"huge record":    reseal(func() []byte { b := append([]byte(nil), good...); le.PutUint32(b[1:], 1<<30); return b }()),
		"config too big": reseal(func() []byte { b := append([]byte(nil), good...); le.PutUint32(b[1:], MaxConfig+1); return b }()),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeState(b); !errors.Is(err, ErrFormat) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestHeader(t *testing.T) {
	h := AppendHeader(nil, KindReady, 0)
	if got, err := DecodeHeader(h); err != nil || got.Kind != KindReady {
		t.Fatalf("%+v %v", got, err)
	}
	for name, b := range map[string][]byte{
		"short":        h[:10],
		"magic":        append([]byte("XXXXXXXX"), h[8:]...),
		"version":      AppendHeader(nil, KindReady, 0)[:8],
		"ready body":   AppendHeader(nil, KindReady, 1),
		"state huge":   AppendHeader(nil, KindState, MaxBody+1),
		"reason huge":  AppendHeader(nil, KindFail, MaxReason+1),
		"unknown kind": AppendHeader(nil, 99, 0),
	} {
		if name == "version" {
			b = append(b, 2, 0, KindReady, 0, 0, 0, 0, 0)
		}
		if _, err := DecodeHeader(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeState: no input panics the decoder or makes it allocate past
// its bounds, and whatever it accepts encodes back to the same bytes.
func FuzzDecodeState(f *testing.F) {
	good, err := EncodeState(sample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	s := sample()
	s.FDs = []FD{{Role: RoleListener}}
	s.Netdev = Netdev{Kind: "none"}
	s.Proto, s.Maps = Proto{}, nil
	idle, err := EncodeState(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(idle)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeState(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error outside ErrFormat: %v", err)
			}
			return
		}
		again, err := EncodeState(st)
		if err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("accepted state encodes to other bytes")
		}
	})
}
