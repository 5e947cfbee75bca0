package migration

import (
	"strings"
	"testing"

	"e1000e-vfu/device"
)

var allStates = []device.MigrationState{sError, sStop, sRunning, sStopCopy, sResuming, sRunningP2P, sPreCopy, sPreCopyP2P}

func pathString(p []device.MigrationState) string {
	var s []string
	for _, x := range p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

// Expected paths written out by hand from the arcs and rules of the
// specification (and the list in the comment of Linux's
// vfio_mig_get_next_state), not computed: "" is no move, "refused" an
// error. A pair that is absent is refused.
var wantPreCopyOnly = map[string]string{
	"STOP>STOP": "", "STOP>RUNNING": "RUNNING", "STOP>PRE_COPY": "RUNNING,PRE_COPY",
	"STOP>STOP_COPY": "STOP_COPY", "STOP>RESUMING": "RESUMING",

	"RUNNING>STOP": "STOP", "RUNNING>RUNNING": "", "RUNNING>PRE_COPY": "PRE_COPY",
	"RUNNING>STOP_COPY": "STOP,STOP_COPY", "RUNNING>RESUMING": "STOP,RESUMING",

	"PRE_COPY>STOP": "RUNNING,STOP", "PRE_COPY>RUNNING": "RUNNING", "PRE_COPY>PRE_COPY": "",
	"PRE_COPY>STOP_COPY": "STOP_COPY", "PRE_COPY>RESUMING": "RUNNING,STOP,RESUMING",

	"STOP_COPY>STOP": "STOP", "STOP_COPY>RUNNING": "STOP,RUNNING", "STOP_COPY>PRE_COPY": "refused",
	"STOP_COPY>STOP_COPY": "", "STOP_COPY>RESUMING": "STOP,RESUMING",

	"RESUMING>STOP": "STOP", "RESUMING>RUNNING": "STOP,RUNNING", "RESUMING>PRE_COPY": "STOP,RUNNING,PRE_COPY",
	"RESUMING>STOP_COPY": "STOP,STOP_COPY", "RESUMING>RESUMING": "",
}

var wantAll = map[string]string{
	"STOP>STOP": "", "STOP>RUNNING": "RUNNING_P2P,RUNNING", "STOP>PRE_COPY": "RUNNING_P2P,RUNNING,PRE_COPY",
	"STOP>PRE_COPY_P2P": "RUNNING_P2P,PRE_COPY_P2P", "STOP>STOP_COPY": "STOP_COPY",
	"STOP>RESUMING": "RESUMING", "STOP>RUNNING_P2P": "RUNNING_P2P",

	"RUNNING>STOP": "RUNNING_P2P,STOP", "RUNNING>RUNNING": "", "RUNNING>PRE_COPY": "PRE_COPY",
	"RUNNING>PRE_COPY_P2P": "RUNNING_P2P,PRE_COPY_P2P", "RUNNING>STOP_COPY": "RUNNING_P2P,STOP,STOP_COPY",
	"RUNNING>RESUMING": "RUNNING_P2P,STOP,RESUMING", "RUNNING>RUNNING_P2P": "RUNNING_P2P",

	"PRE_COPY>STOP": "RUNNING,RUNNING_P2P,STOP", "PRE_COPY>RUNNING": "RUNNING", "PRE_COPY>PRE_COPY": "",
	"PRE_COPY>PRE_COPY_P2P": "PRE_COPY_P2P", "PRE_COPY>STOP_COPY": "PRE_COPY_P2P,STOP_COPY",
	"PRE_COPY>RESUMING": "RUNNING,RUNNING_P2P,STOP,RESUMING", "PRE_COPY>RUNNING_P2P": "RUNNING,RUNNING_P2P",

	"PRE_COPY_P2P>STOP": "RUNNING_P2P,STOP", "PRE_COPY_P2P>RUNNING": "RUNNING_P2P,RUNNING",
	"PRE_COPY_P2P>PRE_COPY": "PRE_COPY", "PRE_COPY_P2P>PRE_COPY_P2P": "", "PRE_COPY_P2P>STOP_COPY": "STOP_COPY",
	"PRE_COPY_P2P>RESUMING": "RUNNING_P2P,STOP,RESUMING", "PRE_COPY_P2P>RUNNING_P2P": "RUNNING_P2P",

	"STOP_COPY>STOP": "STOP", "STOP_COPY>RUNNING": "STOP,RUNNING_P2P,RUNNING", "STOP_COPY>PRE_COPY": "refused",
	"STOP_COPY>PRE_COPY_P2P": "refused", "STOP_COPY>STOP_COPY": "", "STOP_COPY>RESUMING": "STOP,RESUMING",
	"STOP_COPY>RUNNING_P2P": "STOP,RUNNING_P2P",

	"RESUMING>STOP": "STOP", "RESUMING>RUNNING": "STOP,RUNNING_P2P,RUNNING",
	"RESUMING>PRE_COPY": "STOP,RUNNING_P2P,RUNNING,PRE_COPY", "RESUMING>PRE_COPY_P2P": "STOP,RUNNING_P2P,PRE_COPY_P2P",
	"RESUMING>STOP_COPY": "STOP,STOP_COPY", "RESUMING>RESUMING": "", "RESUMING>RUNNING_P2P": "STOP,RUNNING_P2P",

	"RUNNING_P2P>STOP": "STOP", "RUNNING_P2P>RUNNING": "RUNNING", "RUNNING_P2P>PRE_COPY": "RUNNING,PRE_COPY",
	"RUNNING_P2P>PRE_COPY_P2P": "PRE_COPY_P2P", "RUNNING_P2P>STOP_COPY": "STOP,STOP_COPY",
	"RUNNING_P2P>RESUMING": "STOP,RESUMING", "RUNNING_P2P>RUNNING_P2P": "",
}

var wantStopCopyOnly = map[string]string{
	"STOP>STOP": "", "STOP>RUNNING": "RUNNING", "STOP>STOP_COPY": "STOP_COPY", "STOP>RESUMING": "RESUMING",
	"RUNNING>STOP": "STOP", "RUNNING>RUNNING": "", "RUNNING>STOP_COPY": "STOP,STOP_COPY", "RUNNING>RESUMING": "STOP,RESUMING",
	"STOP_COPY>STOP": "STOP", "STOP_COPY>RUNNING": "STOP,RUNNING", "STOP_COPY>STOP_COPY": "", "STOP_COPY>RESUMING": "STOP,RESUMING",
	"RESUMING>STOP": "STOP", "RESUMING>RUNNING": "STOP,RUNNING", "RESUMING>STOP_COPY": "STOP,STOP_COPY", "RESUMING>RESUMING": "",
}

var wantP2POnly = map[string]string{
	"STOP>STOP": "", "STOP>RUNNING": "RUNNING_P2P,RUNNING", "STOP>STOP_COPY": "STOP_COPY",
	"STOP>RESUMING": "RESUMING", "STOP>RUNNING_P2P": "RUNNING_P2P",

	"RUNNING>STOP": "RUNNING_P2P,STOP", "RUNNING>RUNNING": "", "RUNNING>STOP_COPY": "RUNNING_P2P,STOP,STOP_COPY",
	"RUNNING>RESUMING": "RUNNING_P2P,STOP,RESUMING", "RUNNING>RUNNING_P2P": "RUNNING_P2P",

	"STOP_COPY>STOP": "STOP", "STOP_COPY>RUNNING": "STOP,RUNNING_P2P,RUNNING", "STOP_COPY>STOP_COPY": "",
	"STOP_COPY>RESUMING": "STOP,RESUMING", "STOP_COPY>RUNNING_P2P": "STOP,RUNNING_P2P",

	"RESUMING>STOP": "STOP", "RESUMING>RUNNING": "STOP,RUNNING_P2P,RUNNING", "RESUMING>STOP_COPY": "STOP,STOP_COPY",
	"RESUMING>RESUMING": "", "RESUMING>RUNNING_P2P": "STOP,RUNNING_P2P",

	"RUNNING_P2P>STOP": "STOP", "RUNNING_P2P>RUNNING": "RUNNING", "RUNNING_P2P>STOP_COPY": "STOP,STOP_COPY",
	"RUNNING_P2P>RESUMING": "STOP,RESUMING", "RUNNING_P2P>RUNNING_P2P": "",
}

// direct is the set of arcs a device implements, per feature set.
func isDirectArc(flags uint64, from, to device.MigrationState) bool {
	arcs := map[[2]device.MigrationState]bool{
		{sStop, sStopCopy}: true, {sStopCopy, sStop}: true, {sStop, sResuming}: true, {sResuming, sStop}: true,
	}
	p2p := flags&device.MigFlagP2P != 0
	pre := flags&device.MigFlagPreCopy != 0
	if p2p {
		for _, a := range [][2]device.MigrationState{{sRunning, sRunningP2P}, {sRunningP2P, sRunning}, {sRunningP2P, sStop}, {sStop, sRunningP2P}} {
			arcs[a] = true
		}
	} else {
		arcs[[2]device.MigrationState{sRunning, sStop}] = true
		arcs[[2]device.MigrationState{sStop, sRunning}] = true
	}
	if pre {
		arcs[[2]device.MigrationState{sRunning, sPreCopy}] = true
		arcs[[2]device.MigrationState{sPreCopy, sRunning}] = true
		if p2p {
			for _, a := range [][2]device.MigrationState{{sPreCopy, sPreCopyP2P}, {sPreCopyP2P, sPreCopy}, {sPreCopyP2P, sRunningP2P}, {sPreCopyP2P, sStopCopy}, {sRunningP2P, sPreCopyP2P}} {
				arcs[a] = true
			}
		} else {
			arcs[[2]device.MigrationState{sPreCopy, sStopCopy}] = true
		}
	}
	return arcs[[2]device.MigrationState{from, to}]
}

func TestPathEveryPair(t *testing.T) {
	sets := []struct {
		name  string
		flags uint64
		want  map[string]string
	}{
		{"stop-copy", device.MigFlagStopCopy, wantStopCopyOnly},
		{"stop-copy+pre-copy", device.MigFlagStopCopy | device.MigFlagPreCopy, wantPreCopyOnly},
		{"stop-copy+p2p", device.MigFlagStopCopy | device.MigFlagP2P, wantP2POnly},
		{"all", device.MigFlagStopCopy | device.MigFlagPreCopy | device.MigFlagP2P, wantAll},
	}
	for _, set := range sets {
		t.Run(set.name, func(t *testing.T) {
			for _, from := range allStates {
				for _, to := range allStates {
					key := from.String() + ">" + to.String()
					want, ok := set.want[key]
					if !ok {
						want = "refused"
					}
					if from == sError && !supported(to, set.flags) {
						want = "refused"
					}
					p, err := Path(set.flags, from, to)
					got := pathString(p)
					if err != nil {
						got = "refused"
					}
					if got != want {
						t.Errorf("%s: got %q, want %q (err %v)", key, got, want, err)
						continue
					}
					// Every step is an arc the device implements, and no
					// interior state is a saving state or RESUMING.
					cur := from
					for i, s := range p {
						if !isDirectArc(set.flags, cur, s) {
							t.Errorf("%s: step %s>%s is not a direct arc", key, cur.String(), s.String())
						}
						if i < len(p)-1 && (s == sStopCopy || s == sResuming) {
							t.Errorf("%s: interior state %s", key, s.String())
						}
						cur = s
					}
				}
			}
		})
	}
}

func TestErrorLeftOnlyByReset(t *testing.T) {
	for _, to := range allStates {
		if _, err := Path(device.MigFlagStopCopy|device.MigFlagPreCopy|device.MigFlagP2P, sError, to); err == nil {
			t.Errorf("ERROR>%s allowed", to.String())
		}
	}
}
