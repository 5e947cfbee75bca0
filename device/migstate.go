package device

import "fmt"

// migStateNames are the vfio-user specification's names of the v2 states,
// the one spelling used in errors, logs and the control socket's status.
var migStateNames = [...]string{
	MigError:      "ERROR",
	MigStop:       "STOP",
	MigRunning:    "RUNNING",
	MigStopCopy:   "STOP_COPY",
	MigResuming:   "RESUMING",
	MigRunningP2P: "RUNNING_P2P",
	MigPreCopy:    "PRE_COPY",
	MigPreCopyP2P: "PRE_COPY_P2P",
}

// String returns the specification's name of s; a value outside the
// specification (a client may ask for one) is shown with its number, so a
// log or an error still says what was asked.
func (s MigrationState) String() string {
	if uint64(s) < uint64(len(migStateNames)) {
		return migStateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}
