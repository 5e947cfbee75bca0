package vfiouser

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// HeaderSize is the size of the header that starts every message.
const HeaderSize = 16

// Command is a vfio-user command number.
type Command uint16

// Commands of the specification. DirtyPages is the legacy (v1 migration)
// command 14 that the current specification dropped.
const (
	CmdVersion          Command = 1
	CmdDMAMap           Command = 2
	CmdDMAUnmap         Command = 3
	CmdDeviceGetInfo    Command = 4
	CmdGetRegionInfo    Command = 5
	CmdGetRegionIOFDs   Command = 6
	CmdGetIRQInfo       Command = 7
	CmdSetIRQs          Command = 8
	CmdRegionRead       Command = 9
	CmdRegionWrite      Command = 10
	CmdDMARead          Command = 11
	CmdDMAWrite         Command = 12
	CmdDeviceReset      Command = 13
	CmdDirtyPages       Command = 14
	CmdRegionWriteMulti Command = 15
	CmdDeviceFeature    Command = 16
	CmdMigDataRead      Command = 17
	CmdMigDataWrite     Command = 18

	numCommands = 19
)

var commandNames = [numCommands]string{
	"", "VERSION", "DMA_MAP", "DMA_UNMAP", "DEVICE_GET_INFO",
	"DEVICE_GET_REGION_INFO", "DEVICE_GET_REGION_IO_FDS", "DEVICE_GET_IRQ_INFO",
	"DEVICE_SET_IRQS", "REGION_READ", "REGION_WRITE", "DMA_READ", "DMA_WRITE",
	"DEVICE_RESET", "DIRTY_PAGES", "REGION_WRITE_MULTI", "DEVICE_FEATURE",
	"MIG_DATA_READ", "MIG_DATA_WRITE",
}

func (c Command) String() string {
	if int(c) < len(commandNames) && commandNames[c] != "" {
		return commandNames[c]
	}
	return fmt.Sprintf("command(%d)", uint16(c))
}

// Header flags.
const (
	FlagTypeCommand uint32 = 0
	FlagTypeReply   uint32 = 1
	FlagTypeMask    uint32 = 0xf
	FlagNoReply     uint32 = 0x10
	FlagError       uint32 = 0x20
)

// Header is the 16-byte header of every message.
type Header struct {
	MsgID   uint16
	Command Command
	Size    uint32 // the whole message, header included
	Flags   uint32
	Error   uint32 // a positive errno when Flags has FlagError
}

// IsReply says whether the header belongs to a reply.
func (h Header) IsReply() bool { return h.Flags&FlagTypeMask == FlagTypeReply }

// Encode writes h into b[:HeaderSize].
func (h Header) Encode(b []byte) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint16(b[0:], h.MsgID)
	binary.LittleEndian.PutUint16(b[2:], uint16(h.Command))
	binary.LittleEndian.PutUint32(b[4:], h.Size)
	binary.LittleEndian.PutUint32(b[8:], h.Flags)
	binary.LittleEndian.PutUint32(b[12:], h.Error)
}

// DecodeHeader reads a header from b and checks what can be checked without
// the body: the size covers at least the header, and the type is known.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("header: %d bytes, need %d: %w", len(b), HeaderSize, syscall.EINVAL)
	}
	h := Header{
		MsgID:   binary.LittleEndian.Uint16(b[0:]),
		Command: Command(binary.LittleEndian.Uint16(b[2:])),
		Size:    binary.LittleEndian.Uint32(b[4:]),
		Flags:   binary.LittleEndian.Uint32(b[8:]),
		Error:   binary.LittleEndian.Uint32(b[12:]),
	}
	if h.Size < HeaderSize {
		return h, fmt.Errorf("header: message size %d below %d: %w", h.Size, HeaderSize, syscall.EINVAL)
	}
	if t := h.Flags & FlagTypeMask; t != FlagTypeCommand && t != FlagTypeReply {
		return h, fmt.Errorf("header: message type %d: %w", t, syscall.EINVAL)
	}
	return h, nil
}

// le is shorthand for the byte order of every field on the wire.
var le = binary.LittleEndian
