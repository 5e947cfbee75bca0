// Package device defines what an emulated PCI function implements to be
// served over vfio-user, and the pieces every such function needs: PCI
// configuration space and capabilities, interrupt delivery through eventfds,
// and access to guest memory.
//
// The package knows nothing of the wire protocol: package vfiouser serves a
// Device, and devices (package e1000e) never import vfiouser.
package device

import (
	"os"
)

// Region indexes of a PCI function, in vfio numbering.
const (
	RegionBAR0      = 0
	RegionBAR1      = 1
	RegionBAR2      = 2
	RegionBAR3      = 3
	RegionBAR4      = 4
	RegionBAR5      = 5
	RegionROM       = 6
	RegionConfig    = 7
	RegionVGA       = 8
	RegionMigration = 9 // first device-specific index; the v1 migration region
)

// IRQ indexes of a PCI function, in vfio numbering.
const (
	IRQINTx = 0
	IRQMSI  = 1
	IRQMSIX = 2
	IRQErr  = 3
	IRQReq  = 4

	NumIRQIndexes = 5
)

// RegionFlags say how a region may be accessed.
type RegionFlags uint32

// Region flags, with the values of the vfio-user specification.
const (
	RegionRead  RegionFlags = 1
	RegionWrite RegionFlags = 2
	RegionMMap  RegionFlags = 4
)

// Area is a part of a region, relative to the region's start.
type Area struct {
	Offset, Size uint64
}

// RegionInfo describes one region. A zero Size means the region is absent.
type RegionInfo struct {
	Size  uint64
	Flags RegionFlags

	// When Flags has RegionMMap, MMapFile backs the mappable parts of the
	// region: region offset o lives at file offset MMapOffset+o. MMapAreas
	// lists the mappable parts (a SPARSE_MMAP capability); empty means the
	// whole region. The server sends the file's descriptor with the region
	// info and keeps ownership with the device.
	MMapFile   *os.File
	MMapOffset uint64
	MMapAreas  []Area

	// Type and Subtype, when Type is not zero, are announced through a TYPE
	// capability (the v1 migration region is type 3, subtype 1).
	Type, Subtype uint32
}

// IRQFlags describe an IRQ index.
type IRQFlags uint32

// IRQ info flags, with the values of the vfio-user specification.
const (
	IRQEventFD    IRQFlags = 1
	IRQMaskable   IRQFlags = 2
	IRQAutomasked IRQFlags = 4
	IRQNoResize   IRQFlags = 8
)

// IRQInfo describes one IRQ index. A zero Count means the index is absent.
type IRQInfo struct {
	Count uint32
	Flags IRQFlags
}

// Info is the static description of a device: its regions (indexed by
// region index) and IRQ indexes.
type Info struct {
	Regions    []RegionInfo
	IRQs       []IRQInfo
	Resettable bool
	PCI        bool
}

// IRQAction is what a SET_IRQS request asks for.
type IRQAction uint32

// SET_IRQS actions.
const (
	IRQActionMask    IRQAction = 8
	IRQActionUnmask  IRQAction = 16
	IRQActionTrigger IRQAction = 32
)

// IRQData is the kind of data that comes with a SET_IRQS request.
type IRQData uint32

// SET_IRQS data kinds.
const (
	IRQDataNone    IRQData = 1
	IRQDataBool    IRQData = 2
	IRQDataEventFD IRQData = 4
)

// SetIRQs is a decoded SET_IRQS request. The server has checked that Index,
// Start and Count lie within the device's IRQInfo, that exactly one action and
// one data kind are set, and that Bools or FDs hold Count entries when the
// data kind needs them.
type SetIRQs struct {
	Index, Start, Count uint32
	Action              IRQAction
	Data                IRQData
	Bools               []bool
	// FDs holds one eventfd per vector for IRQDataEventFD; a nil entry
	// de-assigns that vector. The callee owns every file, whether it keeps
	// it or not, and must close the ones it does not keep.
	FDs []*os.File
}

// GuestMemory is the device's view of guest physical memory: bounds-checked
// copies, never slices that outlive a call. Writes are recorded for dirty
// logging by the implementation. An address range that is not mapped, or is
// mapped without the needed permission, is an error.
type GuestMemory interface {
	Read(addr uint64, p []byte) error
	Write(addr uint64, p []byte) error
}

// Device is an emulated function served to one client at a time.
//
// The server calls these methods from the connection's goroutine, one at a
// time; a device that also has goroutines of its own (a receive path, timers)
// serialises with them itself. Errors that wrap a syscall.Errno are sent to
// the client with that errno; any other error becomes EINVAL.
type Device interface {
	Info() Info
	ReadRegion(index int, offset uint64, p []byte) error
	WriteRegion(index int, offset uint64, p []byte) error
	SetIRQs(req SetIRQs) error
	Reset() error

	// Connect gives the device the guest memory of a newly connected client.
	// Disconnect is called when the client has gone: the device stops every
	// access to that memory before it returns, and drops the client's
	// eventfds.
	Connect(mem GuestMemory)
	Disconnect()
}

// MigrationState is a state of the vfio migration v2 state machine.
type MigrationState uint32

// Migration v2 states, with the values of the vfio-user specification.
const (
	MigError      MigrationState = 0
	MigStop       MigrationState = 1
	MigRunning    MigrationState = 2
	MigStopCopy   MigrationState = 3
	MigResuming   MigrationState = 4
	MigRunningP2P MigrationState = 5
	MigPreCopy    MigrationState = 6
	MigPreCopyP2P MigrationState = 7
)

// Migration feature flags (DEVICE_FEATURE MIGRATION).
const (
	MigFlagStopCopy uint64 = 1
	MigFlagP2P      uint64 = 2
	MigFlagPreCopy  uint64 = 4
)

// Migratable is implemented by devices whose state can be migrated with the
// v2 protocol. The server routes DEVICE_FEATURE MIGRATION, MIG_DEVICE_STATE,
// MIG_DATA_SIZE and MIG_DATA_READ/WRITE here; a device without it gets
// ENOTSUP replies.
type Migratable interface {
	MigrationFlags() uint64
	MigrationState() MigrationState
	// SetMigrationState moves the device to target, through the shortest
	// allowed path, and returns once the transition is complete.
	SetMigrationState(target MigrationState) error
	// ReadMigrationData fills p with the next part of the saved state; it
	// returns 0 at the end of the data for the current state.
	ReadMigrationData(p []byte) (int, error)
	// WriteMigrationData consumes the next part of the incoming state.
	WriteMigrationData(p []byte) error
	// MigrationDataSize is the number of bytes left to read while saving.
	MigrationDataSize() (uint64, error)
}
