// Package handover is the wire format of a live upgrade: a running server
// hands its vfio-user connection, guest memory table, interrupt eventfds,
// network backend, sockets and device state to a successor process over
// the control socket (serve --takeover). The format is documented in
// migration/HANDOVER.md; this package encodes it, decodes it as hostile
// input within fixed bounds, and moves frames and their descriptors over
// a UNIX stream socket.
//
// The package knows no device and no protocol state beyond what it
// carries: the server packages fill a State and take one apart.
package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Version is the format version this build writes and the only one it
// reads: both ends of a handover run on the same host, and a successor
// that cannot read its predecessor's version refuses before any
// descriptor has moved (the version is in the takeover request).
const Version = 1

// Frame kinds.
const (
	KindState  = 1 // old → new: everything, with the descriptors
	KindReady  = 2 // new → old: loaded and ready to run; commit me
	KindFail   = 3 // new → old: could not take over; body is the reason
	KindCommit = 4 // old → new: the old server has let go; run
	KindAbort  = 5 // old → new: the old server runs on; close everything
)

// Bounds on everything a successor receives. Each is far above what a
// real handover carries (a handful of descriptors, a few maps, 1–2 KiB of
// device state) and low enough that a hostile peer cannot make the
// decoder allocate more than MaxBody plus the tables' fixed cost.
const (
	// MaxFDs is the most descriptors one handover passes, below the
	// kernel's SCM_MAX_FD (253) so that they go in one message.
	MaxFDs = 240
	// MaxConfig bounds the configuration JSON (model.MaxSourceJSON).
	MaxConfig = 64 << 10
	// MaxBuffered bounds the vfio-user bytes read but not yet handled:
	// the reader holds at most one message of max_data_xfer_size (1 MiB)
	// and its header, and what arrived behind it.
	MaxBuffered = 2 << 20
	// MaxBufferedFDSets and MaxBufferedMsgFDs are the successor's reader's
	// limits on descriptors of buffered messages: how many messages carry
	// some, and how many one carries. A state beyond them is refused as
	// it is decoded.
	MaxBufferedFDSets = 8
	MaxBufferedMsgFDs = 32
	// MaxMaps bounds the DMA table (vfiouser's own cap is lower).
	MaxMaps = 65535
	// MaxIRQIndex and MaxIRQVector bound an interrupt's address.
	MaxIRQIndex  = 5
	MaxIRQVector = 2048
	// MaxDeviceState bounds the device state stream
	// (migration.Limits.MaxStreamSize's default).
	MaxDeviceState = 16 << 20
	// MaxReason bounds a FAIL frame's text.
	MaxReason = 1024
	// MaxBody bounds a frame's body: every bounded part at its largest.
	MaxBody = MaxConfig + 64 + MaxBuffered + 32 + MaxMaps*mapSize + 8 +
		MaxFDs*fdSize + 8 + MaxDeviceState + 8 + 9*recordHeader
	// Limits on the netdev record's names.
	maxNetdevKind = 16
	maxIfName     = 15
)

// Frame header: magic, version, kind, body length.
const (
	HeaderSize   = 16
	recordHeader = 5 // tag u8, length u32
	mapSize      = 8 + 8 + 8 + 4 + 4
	fdSize       = 1 + 4 + 4
)

// Magic starts every frame. Like the device state stream's, it has a
// high-bit byte and CR LF so that a text-mode transfer breaks it at once.
var Magic = [8]byte{0x89, 'E', 'V', 'H', '\r', '\n', 0x1a, '\n'}

var le = binary.LittleEndian

// castagnoli is the checksum table of the STATE frame's end record.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Roles say what a passed descriptor is.
type Role uint8

// Descriptor roles.
const (
	RoleConn        Role = 1 // the vfio-user connection (stream socket)
	RoleListener    Role = 2 // the listening vfio-user socket
	RoleControl     Role = 3 // the listening control socket
	RoleBackend     Role = 4 // the network backend's descriptor
	RolePcap        Role = 5 // the pcap file
	RoleDMAFile     Role = 6 // a file behind DMA maps; A is its file id
	RoleIRQ         Role = 7 // an interrupt eventfd; A index, B vector
	RoleUnmask      Role = 8 // the INTx unmask eventfd
	RoleBufferedFDs Role = 9 // came with a buffered message; A its offset
	roleMax              = 9
)

func (r Role) String() string {
	switch r {
	case RoleConn:
		return "vfio-user connection"
	case RoleListener:
		return "vfio-user listener"
	case RoleControl:
		return "control listener"
	case RoleBackend:
		return "backend"
	case RolePcap:
		return "pcap file"
	case RoleDMAFile:
		return "DMA file"
	case RoleIRQ:
		return "interrupt eventfd"
	case RoleUnmask:
		return "INTx unmask eventfd"
	case RoleBufferedFDs:
		return "descriptor of a buffered message"
	}
	return fmt.Sprintf("role %d", uint8(r))
}

// FD describes the descriptor at the same position in the frame's
// descriptor list.
type FD struct {
	Role Role
	A, B uint32
}

// Netdev is the backend's kind and, for a TAP, the interface's name.
type Netdev struct {
	Kind   string // "none", "tap" or "dgram"
	IfName string
}

// Proto is the vfio-user connection's protocol state: what the next
// message from the client is answered with.
type Proto struct {
	// Negotiated says VERSION has been answered; Minor and MaxXfer are
	// what it settled (the message size limit follows from MaxXfer).
	Negotiated bool
	Minor      uint16
	MaxXfer    uint32
	// NextID is the message id the server's next own message (DMA_READ,
	// DMA_WRITE) takes, so that a late reply to the old server's message
	// is not taken for a reply to the new one's.
	NextID uint16
	// Buffered are bytes read from the client and not yet handled: the
	// rest of the stream starts with them, then continues on the socket.
	Buffered []byte
}

// Map is one DMA mapping. File is the file id of the RoleDMAFile
// descriptor behind it, or -1 for memory reached by message.
type Map struct {
	IOVA, Size, Offset uint64
	Flags              uint32
	File               int32
}

// State is the body of a STATE frame.
type State struct {
	// Config is the old server's configuration as query-config prints
	// it: model, parameters and MAC (checked again by the successor).
	Config []byte
	Netdev Netdev
	// Proto is meaningful only when a connection is passed.
	Proto Proto
	Maps  []Map
	// INTxMasked is the INTx line's mask (set when it fired, cleared by
	// the client's unmask): an interrupt the client has not acknowledged.
	INTxMasked bool
	// FDs describe, in order, the descriptors passed with the frame.
	FDs []FD
	// Device is the device state stream (migration/FORMAT.md).
	Device []byte
}

// Record tags, in the order they must appear.
const (
	tagConfig  = 'C'
	tagNetdev  = 'N'
	tagProto   = 'P'
	tagMaps    = 'M'
	tagIRQ     = 'Q'
	tagFDs     = 'D'
	tagDevice  = 'S'
	tagEnd     = 'E'
	protoFixed = 1 + 2 + 4 + 2 + 4
)

// ErrFormat wraps every refusal of the decoder.
var ErrFormat = errors.New("handover: malformed")

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// Header is a frame's fixed part.
type Header struct {
	Kind uint16
	Len  uint32
}

// AppendHeader appends a frame header.
func AppendHeader(dst []byte, kind uint16, bodyLen int) []byte {
	dst = append(dst, Magic[:]...)
	dst = le.AppendUint16(dst, Version)
	dst = le.AppendUint16(dst, kind)
	return le.AppendUint32(dst, uint32(bodyLen))
}

// DecodeHeader checks a frame header: magic, version, a known kind and a
// body within MaxBody (frames other than STATE have small bodies).
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, formatErr("frame header of %d bytes", len(b))
	}
	if [8]byte(b[:8]) != Magic {
		return Header{}, formatErr("bad magic")
	}
	if v := le.Uint16(b[8:]); v != Version {
		return Header{}, formatErr("format version %d, this build reads %d", v, Version)
	}
	h := Header{Kind: le.Uint16(b[10:]), Len: le.Uint32(b[12:])}
	switch h.Kind {
	case KindState:
		if h.Len > MaxBody {
			return Header{}, formatErr("STATE body of %d bytes, at most %d", h.Len, MaxBody)
		}
	case KindFail:
		if h.Len > MaxReason {
			return Header{}, formatErr("FAIL reason of %d bytes, at most %d", h.Len, MaxReason)
		}
	case KindReady, KindCommit, KindAbort:
		if h.Len != 0 {
			return Header{}, formatErr("frame kind %d with a body of %d bytes", h.Kind, h.Len)
		}
	default:
		return Header{}, formatErr("unknown frame kind %d", h.Kind)
	}
	return h, nil
}

// EncodeState returns the body of a STATE frame. It refuses a state that
// its own decoder would refuse, so an old server finds out before it
// stops anything that it cannot hand over.
func EncodeState(s *State) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	size := len(s.Config) + len(s.Netdev.Kind) + len(s.Netdev.IfName) + 2 + protoFixed + len(s.Proto.Buffered) +
		4 + len(s.Maps)*mapSize + 1 + 4 + len(s.FDs)*fdSize + len(s.Device) + 4 + 8*recordHeader
	b := make([]byte, 0, size)
	rec := func(tag byte, n int) {
		b = append(b, tag)
		b = le.AppendUint32(b, uint32(n))
	}
	rec(tagConfig, len(s.Config))
	b = append(b, s.Config...)

	rec(tagNetdev, 2+len(s.Netdev.Kind)+len(s.Netdev.IfName))
	b = append(b, byte(len(s.Netdev.Kind)))
	b = append(b, s.Netdev.Kind...)
	b = append(b, byte(len(s.Netdev.IfName)))
	b = append(b, s.Netdev.IfName...)

	rec(tagProto, protoFixed+len(s.Proto.Buffered))
	b = append(b, boolByte(s.Proto.Negotiated))
	b = le.AppendUint16(b, s.Proto.Minor)
	b = le.AppendUint32(b, s.Proto.MaxXfer)
	b = le.AppendUint16(b, s.Proto.NextID)
	b = le.AppendUint32(b, uint32(len(s.Proto.Buffered)))
	b = append(b, s.Proto.Buffered...)

	rec(tagMaps, 4+len(s.Maps)*mapSize)
	b = le.AppendUint32(b, uint32(len(s.Maps)))
	for _, m := range s.Maps {
		b = le.AppendUint64(b, m.IOVA)
		b = le.AppendUint64(b, m.Size)
		b = le.AppendUint64(b, m.Offset)
		b = le.AppendUint32(b, m.Flags)
		b = le.AppendUint32(b, uint32(m.File))
	}

	rec(tagIRQ, 1)
	b = append(b, boolByte(s.INTxMasked))

	rec(tagFDs, 4+len(s.FDs)*fdSize)
	b = le.AppendUint32(b, uint32(len(s.FDs)))
	for _, f := range s.FDs {
		b = append(b, byte(f.Role))
		b = le.AppendUint32(b, f.A)
		b = le.AppendUint32(b, f.B)
	}

	rec(tagDevice, len(s.Device))
	b = append(b, s.Device...)

	rec(tagEnd, 4)
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// DecodeState decodes and checks a STATE body. Everything is validated
// before it is returned: record order and lengths, every bound, the
// descriptor list's roles and references, the map table's alignment and
// order, the checksum. The device stream and the configuration are only
// bounded here; their own loaders check their contents.
func DecodeState(b []byte) (*State, error) {
	if len(b) > MaxBody {
		return nil, formatErr("STATE body of %d bytes, at most %d", len(b), MaxBody)
	}
	d := decoder{b: b}
	s := &State{}

	p, err := d.record(tagConfig, MaxConfig)
	if err != nil {
		return nil, err
	}
	s.Config = p

	if p, err = d.record(tagNetdev, 2+maxNetdevKind+maxIfName); err != nil {
		return nil, err
	}
	r := decoder{b: p}
	kind, ok1 := r.str8()
	ifname, ok2 := r.str8()
	if !ok1 || !ok2 || !r.done() {
		return nil, formatErr("netdev record")
	}
	s.Netdev = Netdev{Kind: string(kind), IfName: string(ifname)}

	if p, err = d.record(tagProto, protoFixed+MaxBuffered); err != nil {
		return nil, err
	}
	if len(p) < protoFixed {
		return nil, formatErr("protocol record of %d bytes", len(p))
	}
	neg := p[0]
	if neg > 1 {
		return nil, formatErr("protocol record: negotiated %d", neg)
	}
	s.Proto = Proto{Negotiated: neg == 1, Minor: le.Uint16(p[1:]), MaxXfer: le.Uint32(p[3:]), NextID: le.Uint16(p[7:])}
	if n := le.Uint32(p[9:]); uint64(n) != uint64(len(p)-protoFixed) {
		return nil, formatErr("protocol record: %d buffered bytes announced, %d present", n, len(p)-protoFixed)
	}
	s.Proto.Buffered = p[protoFixed:]

	if p, err = d.record(tagMaps, 4+MaxMaps*mapSize); err != nil {
		return nil, err
	}
	if len(p) < 4 {
		return nil, formatErr("map record of %d bytes", len(p))
	}
	n := le.Uint32(p)
	if n > MaxMaps || uint64(len(p)-4) != uint64(n)*mapSize {
		return nil, formatErr("map record: %d maps in %d bytes", n, len(p)-4)
	}
	s.Maps = make([]Map, n)
	for i := range s.Maps {
		e := p[4+i*mapSize:]
		s.Maps[i] = Map{IOVA: le.Uint64(e), Size: le.Uint64(e[8:]), Offset: le.Uint64(e[16:]),
			Flags: le.Uint32(e[24:]), File: int32(le.Uint32(e[28:]))}
	}

	if p, err = d.record(tagIRQ, 1); err != nil {
		return nil, err
	}
	if len(p) != 1 || p[0] > 1 {
		return nil, formatErr("interrupt record")
	}
	s.INTxMasked = p[0] == 1

	if p, err = d.record(tagFDs, 4+MaxFDs*fdSize); err != nil {
		return nil, err
	}
	if len(p) < 4 {
		return nil, formatErr("descriptor record of %d bytes", len(p))
	}
	n = le.Uint32(p)
	if n > MaxFDs || uint64(len(p)-4) != uint64(n)*fdSize {
		return nil, formatErr("descriptor record: %d descriptors in %d bytes", n, len(p)-4)
	}
	s.FDs = make([]FD, n)
	for i := range s.FDs {
		e := p[4+i*fdSize:]
		s.FDs[i] = FD{Role: Role(e[0]), A: le.Uint32(e[1:]), B: le.Uint32(e[5:])}
	}

	if p, err = d.record(tagDevice, MaxDeviceState); err != nil {
		return nil, err
	}
	s.Device = p

	end := d.off
	if p, err = d.record(tagEnd, 4); err != nil {
		return nil, err
	}
	if len(p) != 4 {
		return nil, formatErr("end record of %d bytes", len(p))
	}
	if !d.done() {
		return nil, formatErr("%d bytes after the end record", len(d.b)-d.off)
	}
	if got, want := le.Uint32(p), crc32.Checksum(b[:end+recordHeader], castagnoli); got != want {
		return nil, formatErr("checksum %#08x, computed %#08x", got, want)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}

// check validates what spans records; the encoder runs it too.
func (s *State) check() error {
	if len(s.Config) == 0 || len(s.Config) > MaxConfig {
		return formatErr("configuration of %d bytes", len(s.Config))
	}
	switch s.Netdev.Kind {
	case "none":
		if s.Netdev.IfName != "" {
			return formatErr("netdev none with an interface name")
		}
	case "tap":
		if !validIfName(s.Netdev.IfName) {
			return formatErr("TAP interface name %q", s.Netdev.IfName)
		}
	case "dgram":
		if s.Netdev.IfName != "" {
			return formatErr("netdev dgram with an interface name")
		}
	default:
		return formatErr("netdev kind %q (this build hands over none, tap and dgram)", s.Netdev.Kind)
	}
	if len(s.Proto.Buffered) > MaxBuffered {
		return formatErr("%d buffered bytes, at most %d", len(s.Proto.Buffered), MaxBuffered)
	}
	if len(s.Device) == 0 || len(s.Device) > MaxDeviceState {
		return formatErr("device state of %d bytes", len(s.Device))
	}
	if len(s.FDs) > MaxFDs {
		return formatErr("%d descriptors, at most %d", len(s.FDs), MaxFDs)
	}
	if len(s.Maps) > MaxMaps {
		return formatErr("%d maps, at most %d", len(s.Maps), MaxMaps)
	}

	var once [roleMax + 1]int
	files := make(map[uint32]bool)
	irqs := make(map[[2]uint32]bool)
	// Buffered messages' descriptors come in the order of the messages.
	var bufSets, bufInSet int
	bufAt := int64(-1)
	for i, f := range s.FDs {
		if f.Role == 0 || f.Role > roleMax {
			return formatErr("descriptor %d: unknown role %d", i, f.Role)
		}
		once[f.Role]++
		switch f.Role {
		case RoleConn, RoleListener, RoleControl, RoleBackend, RolePcap, RoleUnmask:
			if once[f.Role] > 1 {
				return formatErr("descriptor %d: a second %s", i, f.Role)
			}
			if f.A != 0 || f.B != 0 {
				return formatErr("descriptor %d: %s with arguments", i, f.Role)
			}
		case RoleDMAFile:
			if files[f.A] || f.A >= MaxMaps || f.B != 0 {
				return formatErr("descriptor %d: DMA file id %d", i, f.A)
			}
			files[f.A] = true
		case RoleIRQ:
			k := [2]uint32{f.A, f.B}
			if f.A >= MaxIRQIndex || f.B >= MaxIRQVector || irqs[k] {
				return formatErr("descriptor %d: interrupt %d/%d", i, f.A, f.B)
			}
			irqs[k] = true
		case RoleBufferedFDs:
			if uint64(f.A) >= uint64(len(s.Proto.Buffered)) || f.B != 0 {
				return formatErr("descriptor %d: buffered message at %d of %d bytes", i, f.A, len(s.Proto.Buffered))
			}
			switch {
			case int64(f.A) < bufAt:
				return formatErr("descriptor %d: buffered message at %d after one at %d", i, f.A, bufAt)
			case int64(f.A) > bufAt:
				bufAt, bufSets, bufInSet = int64(f.A), bufSets+1, 0
			}
			bufInSet++
			if bufSets > MaxBufferedFDSets || bufInSet > MaxBufferedMsgFDs {
				return formatErr("descriptor %d: more than %d buffered messages with descriptors, or %d descriptors for one", i, MaxBufferedFDSets, MaxBufferedMsgFDs)
			}
		}
	}
	conn := once[RoleConn] == 1
	if !conn {
		// Without a client there is no protocol state, memory or
		// interrupt to carry.
		if len(s.Proto.Buffered) != 0 || s.Proto.Negotiated || len(s.Maps) != 0 ||
			once[RoleIRQ]+once[RoleUnmask]+once[RoleBufferedFDs] != 0 || s.INTxMasked {
			return formatErr("client state without a client connection")
		}
	}
	if once[RoleListener] != 1 {
		return formatErr("no vfio-user listener")
	}
	if (s.Netdev.Kind != "none") != (once[RoleBackend] == 1) {
		return formatErr("netdev %s with %d backend descriptors", s.Netdev.Kind, once[RoleBackend])
	}
	if s.Proto.Negotiated && (s.Proto.MaxXfer < 8 || s.Proto.MaxXfer > 64<<20) {
		return formatErr("max_data_xfer_size %d", s.Proto.MaxXfer)
	}
	used := make(map[uint32]bool, len(files))
	var prevEnd uint64
	for i, m := range s.Maps {
		if m.Flags == 0 || m.Flags&^3 != 0 {
			return formatErr("map %d: flags %#x", i, m.Flags)
		}
		const pg = 4096
		if m.Size == 0 || m.IOVA%pg != 0 || m.Size%pg != 0 || m.Offset%pg != 0 ||
			m.IOVA+m.Size < m.IOVA || m.Offset+m.Size < m.Offset {
			return formatErr("map %d: [%#x+%#x] offset %#x", i, m.IOVA, m.Size, m.Offset)
		}
		if i > 0 && m.IOVA < prevEnd {
			return formatErr("map %d: [%#x+%#x] out of order or overlapping", i, m.IOVA, m.Size)
		}
		prevEnd = m.IOVA + m.Size
		switch {
		case m.File == -1:
			if m.Offset != 0 {
				return formatErr("map %d: offset without a file", i)
			}
		case m.File < 0 || !files[uint32(m.File)]:
			return formatErr("map %d: file id %d was not passed", i, m.File)
		default:
			used[uint32(m.File)] = true
		}
	}
	if len(used) != len(files) {
		return formatErr("%d DMA files passed, %d used by maps", len(files), len(used))
	}
	return nil
}

// validIfName accepts what the kernel accepts as an interface name that is
// also safe to log: 1 to 15 bytes of letters, digits, '.', '-' and '_'.
func validIfName(s string) bool {
	if len(s) == 0 || len(s) > maxIfName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decoder walks records.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) done() bool { return d.off == len(d.b) }

// record reads the next record, which must have the tag want and a length
// of at most limit.
func (d *decoder) record(want byte, limit int) ([]byte, error) {
	if len(d.b)-d.off < recordHeader {
		return nil, formatErr("truncated before record %q", want)
	}
	tag, n := d.b[d.off], le.Uint32(d.b[d.off+1:])
	if tag != want {
		return nil, formatErr("record %q where %q belongs", tag, want)
	}
	if uint64(n) > uint64(limit) {
		return nil, formatErr("record %q of %d bytes, at most %d", tag, n, limit)
	}
	if uint64(n) > uint64(len(d.b)-d.off-recordHeader) {
		return nil, formatErr("record %q of %d bytes truncated", tag, n)
	}
	p := d.b[d.off+recordHeader : d.off+recordHeader+int(n)]
	d.off += recordHeader + int(n)
	return p, nil
}

// str8 reads a u8-length string.
func (d *decoder) str8() ([]byte, bool) {
	if d.off >= len(d.b) {
		return nil, false
	}
	n := int(d.b[d.off])
	if n > len(d.b)-d.off-1 {
		return nil, false
	}
	s := d.b[d.off+1 : d.off+1+n]
	d.off += 1 + n
	return s, true
}

// DecodeReason checks a FAIL frame's text: printable ASCII, bounded.
func DecodeReason(b []byte) (string, error) {
	if len(b) > MaxReason {
		return "", formatErr("reason of %d bytes", len(b))
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out), nil
}
