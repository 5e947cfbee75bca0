package model

// E1000EName names this project's 82574L model: its hardware interface and
// the problem-oriented state representation of our migration stream. It is a
// domain (the project's name) followed by a path; it is an identifier, never
// fetched, and it never changes. It differs from QEMU's name for its e1000e
// on purpose: the two share a hardware interface but not a state
// representation, so their states cannot load into each other.
const E1000EName = "e1000e-vfu.dev/devices/e1000e-82574l"

// RXFilterSize is the parameter for the number of exact-match receive
// address (RA) entries the NIC filters with.
const RXFilterSize = "rx-filter-size"

// HideMSIX is the parameter that leaves the MSI-X capability out of the
// function's capability list, so drivers use MSI. It exists for hypervisors
// that cannot unplug a vfio-user device with MSI-X: stock QEMU 10.1 to 11.1
// aborts when it does (tests/README.md, "Hot-plug").
const HideMSIX = "hide-msix"

// Caps82574L is the parameter that lays out the PCI capability list as the
// 82574L datasheet has it: PM (0xC8) → MSI (0xD0) → PCIe (0xE0) → MSI-X
// (0xA0), PM version 2 (PCI PM 1.1) with DSI. Off, the list is the first
// model's: MSI-X first, then by offset, PM version 3. The capabilities sit
// at the same offsets either way; only read-only bytes differ (the list
// pointers and PMC). A hypervisor compares those on an incoming migration
// (QEMU's vfio-pci loads the config space against its own copy), so the
// layout is part of the model and cannot change under a running guest.
const Caps82574L = "caps-82574l"

// RAEntries is the number of receive address registers of the 82574L.
const RAEntries = 16

// E1000E returns the definition of the e1000e model. Each call returns a new
// value, so callers cannot change one another's copy.
//
// Versions are defined newest first; each older version restates only the
// defaults that held before the newer one:
//
//	version 3: the current defaults (caps-82574l=true: the 82574L's
//	           capability list and PM version)
//	version 2: caps-82574l=false, MSI-X first and PM version 3
//	           (rx-filter-size=16, the 82574L's RA table)
//	version 1: rx-filter-size=0, the first model: no exact-match filtering
//
// The link speed is deliberately not a parameter: the NIC always reports a
// 1000 Mb/s full-duplex link, whatever the backend, so the guest never sees
// the host's port and a destination with a different network loads the
// state unchanged (see README.md).
func E1000E() *Model {
	off := IntValue(0)
	offFalse := BoolValue(false)
	params := []Param{{
		Name: Caps82574L,
		Type: Bool,
		Init: BoolValue(true),
		Off:  &offFalse,
		Description: "true lays out the PCI capability list as the 82574L does: PM (0xC8), MSI (0xD0), " +
			"PCIe (0xE0), MSI-X (0xA0), with PM version 2 (PCI PM 1.1) and DSI. false is the first " +
			"layout: MSI-X first, then PM, MSI and PCIe, PM version 3. Only read-only config bytes " +
			"differ, but a hypervisor compares them on migration, so both ends must agree.",
	}, {
		Name: HideMSIX,
		Type: Bool,
		Init: offFalse,
		Off:  &offFalse,
		Description: "true leaves the MSI-X capability out of the PCI capability list, so the guest's " +
			"driver uses MSI, and the device state carries no MSI-X table. For hypervisors that " +
			"cannot hot-unplug a vfio-user device with MSI-X (stock QEMU 10.1 to 11.1).",
	}, {
		Name:   RXFilterSize,
		Type:   Int,
		Init:   IntValue(RAEntries),
		Off:    &off,
		Ranges: []Range{{Min: 0, Max: RAEntries}},
		Description: "Number of exact-match receive address (RA) entries the NIC filters unicast " +
			"frames with. 0 turns exact-match filtering off: every unicast frame is accepted " +
			"and the device state carries no receive address table.",
	}}
	return &Model{
		Name:   E1000EName,
		Params: params,
		Versions: NewVersions(params,
			Compat{Number: 3},
			Compat{Number: 2, Set: map[string]Value{Caps82574L: BoolValue(false)}},
			Compat{Number: 1, Set: map[string]Value{RXFilterSize: IntValue(0)}},
		),
	}
}

// All returns every model this program implements, for describe.
func All() []*Model {
	return []*Model{E1000E()}
}

// Lookup returns the model called name among All, or nil.
func Lookup(name string) *Model {
	for _, m := range All() {
		if m.Name == name {
			return m
		}
	}
	return nil
}
