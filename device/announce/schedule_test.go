package announce

import (
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

// QEMU's defaults: gaps of 50, 150, 250, 350, 450 ms.
func TestDefaultGaps(t *testing.T) {
	s := Default()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{50 * ms, 150 * ms, 250 * ms, 350 * ms, 450 * ms}
	for i, w := range want {
		if g := s.Gap(i); g != w {
			t.Errorf("gap %d = %v, want %v", i, g, w)
		}
	}
}

func TestGapCappedAtMax(t *testing.T) {
	s := Schedule{Rounds: 10, Initial: 100 * ms, Max: 300 * ms, Step: 150 * ms}
	want := []time.Duration{100 * ms, 250 * ms, 300 * ms, 300 * ms, 300 * ms}
	for i, w := range want {
		if g := s.Gap(i); g != w {
			t.Errorf("gap %d = %v, want %v", i, g, w)
		}
	}
	// A hand-built schedule with huge values does not overflow.
	h := Schedule{Rounds: 1, Initial: time.Duration(1 << 62), Max: time.Duration(1<<63 - 1), Step: time.Duration(1 << 62)}
	if g := h.Gap(3); g <= 0 {
		t.Errorf("gap overflowed: %v", g)
	}
}

func TestParseSchedule(t *testing.T) {
	def := Default()
	for _, tc := range []struct {
		spec string
		want Schedule
	}{
		{"off", Schedule{}},
		{"rounds=0", Schedule{}},
		{"rounds=0,initial=2m", Schedule{}}, // off: the durations do not matter
		{"rounds=5,initial=50ms,max=550ms,step=100ms", def},
		{"rounds=3", Schedule{Rounds: 3, Initial: def.Initial, Max: def.Max, Step: def.Step}},
		{"step=1s,max=2s,initial=1ms", Schedule{Rounds: 5, Initial: ms, Max: 2 * time.Second, Step: time.Second}},
		{"rounds=100,initial=1m,max=1m,step=1m", Schedule{Rounds: 100, Initial: time.Minute, Max: time.Minute, Step: time.Minute}},
	} {
		got, err := ParseSchedule(tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("ParseSchedule(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
		// String reads back to the same schedule.
		if back, err := ParseSchedule(got.String()); err != nil || back != got {
			t.Errorf("ParseSchedule(%q) = %+v, %v; want %+v", got.String(), back, err, got)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, tc := range []struct{ spec, msg string }{
		{"", "empty"},
		{"on", `"on": want key=value`},
		{"rounds", `"rounds": want key=value`},
		{"rounds=", `"rounds=": want key=value`},
		{"rounds=-1", "rounds=-1: want 0 (off) to 100"},
		{"rounds=101", "rounds=101: want 0 (off) to 100"},
		{"rounds=five", "rounds=five: not a whole number"},
		{"initial=fast", "initial=fast: not a duration"},
		{"initial=0s", "initial=0s: want 1ms to 1m0s"},
		{"step=500us", "step=500µs: want 1ms to 1m0s"},
		{"max=2m", "max=2m0s: want 1ms to 1m0s"},
		{"initial=1s", "initial=1s is longer than max=550ms"},
		{"rounds=1,rounds=2", "rounds given twice"},
		{"delay=1s", `unknown key "delay"`},
		{"OFF", `"OFF": want key=value`},
	} {
		_, err := ParseSchedule(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseSchedule(%q) = %v, want an error with %q", tc.spec, err, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseSchedule(%q): error spans lines: %q", tc.spec, err)
		}
	}
}
