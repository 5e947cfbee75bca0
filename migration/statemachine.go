package migration

import (
	"fmt"

	"e1000e-vfu/device"
)

// Short local names for the v2 states keep the table below readable.
const (
	sError      = device.MigError
	sStop       = device.MigStop
	sRunning    = device.MigRunning
	sStopCopy   = device.MigStopCopy
	sResuming   = device.MigResuming
	sRunningP2P = device.MigRunningP2P
	sPreCopy    = device.MigPreCopy
	sPreCopyP2P = device.MigPreCopyP2P

	numStates = 8
)

// nextStep[from][to] is the first step from one state towards another when
// every optional state is supported. It is the table of Linux's
// vfio_mig_get_next_state (drivers/vfio/vfio_main.c), which the vfio-user
// specification adopts: the shortest path over the direct arcs whose
// interior never passes through a saving state or RESUMING, with
// STOP_COPY→PRE_COPY(_P2P) refused (ERROR) and ERROR left only by reset.
var nextStep = [numStates][numStates]device.MigrationState{
	sStop: {
		sStop: sStop, sRunning: sRunningP2P, sPreCopy: sRunningP2P, sPreCopyP2P: sRunningP2P,
		sStopCopy: sStopCopy, sResuming: sResuming, sRunningP2P: sRunningP2P, sError: sError,
	},
	sRunning: {
		sStop: sRunningP2P, sRunning: sRunning, sPreCopy: sPreCopy, sPreCopyP2P: sRunningP2P,
		sStopCopy: sRunningP2P, sResuming: sRunningP2P, sRunningP2P: sRunningP2P, sError: sError,
	},
	sPreCopy: {
		sStop: sRunning, sRunning: sRunning, sPreCopy: sPreCopy, sPreCopyP2P: sPreCopyP2P,
		sStopCopy: sPreCopyP2P, sResuming: sRunning, sRunningP2P: sRunning, sError: sError,
	},
	sPreCopyP2P: {
		sStop: sRunningP2P, sRunning: sRunningP2P, sPreCopy: sPreCopy, sPreCopyP2P: sPreCopyP2P,
		sStopCopy: sStopCopy, sResuming: sRunningP2P, sRunningP2P: sRunningP2P, sError: sError,
	},
	sStopCopy: {
		sStop: sStop, sRunning: sStop, sPreCopy: sError, sPreCopyP2P: sError,
		sStopCopy: sStopCopy, sResuming: sStop, sRunningP2P: sStop, sError: sError,
	},
	sResuming: {
		sStop: sStop, sRunning: sStop, sPreCopy: sStop, sPreCopyP2P: sStop,
		sStopCopy: sStop, sResuming: sResuming, sRunningP2P: sStop, sError: sError,
	},
	sRunningP2P: {
		sStop: sStop, sRunning: sRunning, sPreCopy: sRunning, sPreCopyP2P: sPreCopyP2P,
		sStopCopy: sStop, sResuming: sStop, sRunningP2P: sRunningP2P, sError: sError,
	},
	sError: {
		sStop: sError, sRunning: sError, sPreCopy: sError, sPreCopyP2P: sError,
		sStopCopy: sError, sResuming: sError, sRunningP2P: sError, sError: sError,
	},
}

// needs[s] is the set of feature flags a device must advertise for s to
// exist. ERROR needs every flag, so it can never be requested.
var needs = [numStates]uint64{
	sStop:       device.MigFlagStopCopy,
	sRunning:    device.MigFlagStopCopy,
	sStopCopy:   device.MigFlagStopCopy,
	sResuming:   device.MigFlagStopCopy,
	sRunningP2P: device.MigFlagStopCopy | device.MigFlagP2P,
	sPreCopy:    device.MigFlagStopCopy | device.MigFlagPreCopy,
	sPreCopyP2P: device.MigFlagStopCopy | device.MigFlagP2P | device.MigFlagPreCopy,
	sError:      ^uint64(0),
}

func supported(s device.MigrationState, flags uint64) bool {
	return uint32(s) < numStates && needs[s]&flags == needs[s]
}

// NextState is the first step of the path from cur to target for a device
// advertising flags. A step into a state the device does not support is
// skipped over, as the kernel does, so the device only ever sees arcs
// between states it supports.
func NextState(flags uint64, cur, target device.MigrationState) (device.MigrationState, error) {
	if !supported(cur, flags) && cur != sError {
		return sError, fmt.Errorf("migration: current state %s is not supported", cur.String())
	}
	if !supported(target, flags) {
		return sError, fmt.Errorf("migration: state %s cannot be requested", target.String())
	}
	next := nextStep[cur][target]
	// Each skip moves strictly closer along the kernel's table; numStates
	// bounds the loop even if the table were wrong.
	for i := 0; i < numStates && !supported(next, flags) && next != sError; i++ {
		next = nextStep[next][target]
	}
	if next == sError || !supported(next, flags) {
		return sError, fmt.Errorf("migration: no transition from %s to %s", cur.String(), target.String())
	}
	return next, nil
}

// Path is the whole sequence of states from cur to target (cur excluded),
// empty when they are equal.
func Path(flags uint64, cur, target device.MigrationState) ([]device.MigrationState, error) {
	if !supported(target, flags) {
		return nil, fmt.Errorf("migration: state %s cannot be requested", target.String())
	}
	var p []device.MigrationState
	for i := 0; cur != target; i++ {
		if i >= numStates {
			return nil, fmt.Errorf("migration: no path from %s to %s", cur.String(), target.String())
		}
		next, err := NextState(flags, cur, target)
		if err != nil {
			return nil, err
		}
		p = append(p, next)
		cur = next
	}
	return p, nil
}
