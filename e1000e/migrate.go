package e1000e

import (
	"fmt"
	"log/slog"

	"e1000e-vfu/device"
	"e1000e-vfu/migration"
)

// MigrationOptions say how a NIC is served for migration.
type MigrationOptions struct {
	Logger *slog.Logger
	Limits migration.Limits
	// V1 offers the legacy v1 migration region (device-specific region 9,
	// type 3 subtype 1) beside migration v2. Both drive one state machine.
	V1 bool
	// V1MMap offers the v1 region's data area for mmap, so the state moves
	// through shared memory. It is off by default: QEMU's vfio-user client
	// stops posting REGION_WRITEs for the whole device as soon as any
	// region advertises mmap, which costs a round trip on every register
	// write of the guest's hot path; and QEMU migrates through v2, where
	// the region is not used at all. Turn it on for a v1 client that maps
	// the area (the migration driver does).
	V1MMap bool
	// V1AreaSize is the data area's size (0: migration.DefaultV1AreaSize).
	V1AreaSize int
	// P2P advertises the P2P states (see migration.Options).
	P2P bool
}

// Migratable is a NIC served with migration: a device.Device (the NIC)
// that also implements device.Migratable through a migration.Machine, and,
// when asked for, the v1 migration region.
type Migratable struct {
	*NIC
	*migration.Machine
	v1 *migration.V1Region
}

var (
	_ device.Device     = (*Migratable)(nil)
	_ device.Migratable = (*Migratable)(nil)
)

// NewMigratable serves n for migration. It must be called before the NIC
// is served: it adds the v1 region to the function's regions.
func NewMigratable(n *NIC, opts MigrationOptions) (*Migratable, error) {
	m := &Migratable{NIC: n, Machine: migration.NewMachine(n, migration.Options{
		Limits: opts.Limits, Logger: opts.Logger, P2P: opts.P2P,
	})}
	if !opts.V1 {
		return m, nil
	}
	v1, err := migration.NewV1Region(m.Machine, opts.V1AreaSize)
	if err != nil {
		return nil, fmt.Errorf("e1000e: %w", err)
	}
	info := v1.Info()
	if !opts.V1MMap {
		info.Flags &^= device.RegionMMap
		info.MMapFile, info.MMapAreas = nil, nil
	}
	if err := n.pci.fn.AddRegion(device.RegionMigration, info, v1); err != nil {
		v1.Close()
		return nil, fmt.Errorf("e1000e: adding the v1 migration region: %w", err)
	}
	m.v1 = v1
	return m, nil
}

// Reset is a function-level reset: it also ends any migration in progress
// (the only way out of the ERROR state) and drops the interrupts a
// quiesced NIC was holding.
func (m *Migratable) Reset() error {
	// The NIC resets while still quiesced, so resuming it afterwards
	// finds nothing of the old state to send or DMA.
	m.NIC.dropHeld()
	err := m.NIC.Reset()
	m.Machine.Reset()
	return err
}

// Close stops the NIC and releases the v1 region.
func (m *Migratable) Close() error {
	err := m.NIC.Close()
	if m.v1 != nil {
		if cerr := m.v1.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// dropHeld forgets withheld interrupts and loaded pending bits.
func (n *NIC) dropHeld() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mig.held = heldIRQ{}
	n.mig.pendingMSIX = 0
}
