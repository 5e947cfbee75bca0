package device

import "testing"

func TestMigrationStateString(t *testing.T) {
	for s, want := range map[MigrationState]string{
		MigError: "ERROR", MigStop: "STOP", MigRunning: "RUNNING",
		MigStopCopy: "STOP_COPY", MigResuming: "RESUMING",
		MigRunningP2P: "RUNNING_P2P", MigPreCopy: "PRE_COPY",
		MigPreCopyP2P: "PRE_COPY_P2P",
		8:             "state(8)", 0xffffffff: "state(4294967295)",
	} {
		if got := s.String(); got != want {
			t.Errorf("MigrationState(%d).String() = %q, want %q", uint32(s), got, want)
		}
	}
}
