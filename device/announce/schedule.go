package announce

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule says when the rounds of an announcement go out: Rounds rounds,
// the first Initial after the start, each later gap Step longer than the
// one before it, no gap longer than Max. Rounds 0 means no announcement.
// The names and the defaults are those of QEMU's migration parameters
// announce-rounds, announce-initial, announce-step and announce-max.
type Schedule struct {
	Rounds  int
	Initial time.Duration
	Max     time.Duration
	Step    time.Duration
}

// Bounds of a schedule's fields.
const (
	MaxRounds   = 100
	MinDuration = time.Millisecond
	MaxDuration = time.Minute
)

// Default is QEMU's schedule: 5 rounds after gaps of 50, 150, 250, 350 and
// 450 ms.
func Default() Schedule {
	return Schedule{Rounds: 5, Initial: 50 * time.Millisecond, Max: 550 * time.Millisecond, Step: 100 * time.Millisecond}
}

// Off reports whether the schedule sends nothing.
func (s Schedule) Off() bool { return s.Rounds <= 0 }

// Gap is how long before round i (from 0) the wait lasts: Initial before
// the first, Step more before each later one, at most Max.
func (s Schedule) Gap(i int) time.Duration {
	if i < 0 {
		i = 0
	}
	// Both are bounded by Validate, but a schedule built by hand is not:
	// stop adding once Max is reached rather than overflow.
	g := s.Initial
	for k := 0; k < i && g < s.Max && s.Step > 0; k++ {
		if s.Step >= s.Max-g {
			return s.Max
		}
		g += s.Step
	}
	return min(g, s.Max)
}

// Validate checks the fields against their bounds: Rounds 0 to MaxRounds;
// when Rounds is above 0, every duration MinDuration to MaxDuration and
// Initial not above Max.
func (s Schedule) Validate() error {
	if s.Rounds < 0 || s.Rounds > MaxRounds {
		return fmt.Errorf("rounds=%d: want 0 (off) to %d", s.Rounds, MaxRounds)
	}
	if s.Off() {
		return nil
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"initial", s.Initial}, {"max", s.Max}, {"step", s.Step}} {
		if d.v < MinDuration || d.v > MaxDuration {
			return fmt.Errorf("%s=%v: want %v to %v", d.name, d.v, MinDuration, MaxDuration)
		}
	}
	if s.Initial > s.Max {
		return fmt.Errorf("initial=%v is longer than max=%v", s.Initial, s.Max)
	}
	return nil
}

// String is the schedule in ParseSchedule's syntax: "off", or all four
// fields.
func (s Schedule) String() string {
	if s.Off() {
		return "off"
	}
	return fmt.Sprintf("rounds=%d,initial=%v,max=%v,step=%v", s.Rounds, s.Initial, s.Max, s.Step)
}

// ParseSchedule reads "off" or a comma-separated list of rounds=N,
// initial=D, max=D and step=D (Go durations such as 50ms or 1s), any
// subset in any order; fields not given keep Default's values. The result
// is validated; rounds=0 is the same as off.
func ParseSchedule(spec string) (Schedule, error) {
	if spec == "off" {
		return Schedule{}, nil
	}
	if spec == "" {
		return Schedule{}, fmt.Errorf(`empty: want "off" or rounds=N,initial=D,max=D,step=D`)
	}
	s := Default()
	seen := map[string]bool{}
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return Schedule{}, fmt.Errorf("%q: want key=value (rounds, initial, max or step)", kv)
		}
		if seen[k] {
			return Schedule{}, fmt.Errorf("%s given twice", k)
		}
		seen[k] = true
		var err error
		switch k {
		case "rounds":
			s.Rounds, err = strconv.Atoi(v)
			if err != nil {
				return Schedule{}, fmt.Errorf("rounds=%s: not a whole number", v)
			}
		case "initial":
			s.Initial, err = parseDuration(k, v)
		case "max":
			s.Max, err = parseDuration(k, v)
		case "step":
			s.Step, err = parseDuration(k, v)
		default:
			return Schedule{}, fmt.Errorf("unknown key %q (want rounds, initial, max or step)", k)
		}
		if err != nil {
			return Schedule{}, err
		}
	}
	if err := s.Validate(); err != nil {
		return Schedule{}, err
	}
	if s.Off() {
		return Schedule{}, nil
	}
	return s, nil
}

func parseDuration(k, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%s: not a duration such as 50ms or 1s", k, v)
	}
	return d, nil
}
