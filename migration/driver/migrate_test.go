package driver

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"e1000e-vfu/vfiouser"
)

// fake is a transport with canned answers: pre says whether it pre-copies,
// chunk is what each transfer moves, pageSize what logging starts at (0:
// the one asked), and failAt the step that fails with errStep.
type fake struct {
	pre      bool
	chunk    int
	pageSize uint64
	estimate uint64
	failAt   string
	dirty    []byte
}

var errStep = errors.New("step failed")

func (f *fake) fail(step string) error {
	if f.failAt == step {
		return errStep
	}
	return nil
}

func (f *fake) startLogging(ps uint64) (uint64, error) {
	if f.pageSize != 0 {
		ps = f.pageSize
	}
	return ps, f.fail("startLogging")
}
func (f *fake) dirtyPages(uint64) ([]byte, error) { return f.dirty, f.fail("dirtyPages") }
func (f *fake) stopLogging() error                { return f.fail("stopLogging") }
func (f *fake) resuming() error                   { return f.fail("resuming") }
func (f *fake) preCopy() (bool, error)            { return f.pre, f.fail("preCopy") }
func (f *fake) stopCopy() (uint64, error)         { return f.estimate, f.fail("stopCopy") }
func (f *fake) transfer() (int, error)            { return f.chunk, f.fail("transfer") }
func (f *fake) resume() error                     { return f.fail("resume") }
func (f *fake) stopSource() error                 { return f.fail("stopSource") }
func (f *fake) close()                            {}

// fakeEndpoints are two sides of 4 pages whose clients are never used: the
// fake transport does not talk to them.
func fakeEndpoints() (Endpoint, Endpoint) {
	src := Endpoint{Client: &vfiouser.Client{}, Mem: make([]byte, 4*4096), IOVA: 0x1000}
	dst := Endpoint{Client: &vfiouser.Client{}, Mem: make([]byte, 4*4096), IOVA: 0x1000}
	for i := range src.Mem {
		src.Mem[i] = byte(i/4096 + 1)
	}
	return src, dst
}

func runFake(t *testing.T, f *fake, opts Options) (Report, []string, error) {
	t.Helper()
	var steps []string
	open := func(Endpoint, Endpoint, Options) (transport, error) { return f, nil }
	before := opts.BeforeStop
	opts.BeforeStop = func() {
		steps = append(steps, "beforeStop")
		if before != nil {
			before()
		}
	}
	src, dst := fakeEndpoints()
	rep, err := migrate("fake", recording(open, &steps), src, dst, opts)
	return rep, steps, err
}

// The whole order of the algorithm, with pre-copy: what a VMM does and
// what both protocols follow.
var stepsWithPreCopy = []string{
	"startLogging", "resuming",
	"preCopy", "transfer", "dirtyPages", "dirtyPages",
	"beforeStop", "stopCopy", "transfer", "dirtyPages", "stopLogging",
	"resume", "stopSource", "close",
}

func TestMigrateStepsWithPreCopy(t *testing.T) {
	f := &fake{pre: true, chunk: 100, estimate: 100, dirty: []byte{0b0101}}
	rep, steps, err := runFake(t, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(steps, stepsWithPreCopy) {
		t.Errorf("steps\n %v\nwant\n %v", steps, stepsWithPreCopy)
	}
	// 4 pages copied whole, then pages 0 and 2 in each of 3 rounds.
	want := Report{Protocol: "fake", StateBytes: 200, PreCopyBytes: 100, Pages: 4 + 6, DirtyPages: 6, SizeEstimate: 100}
	rep.Downtime, rep.Total = 0, 0
	if rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
}

func TestMigrateStepsWithoutPreCopy(t *testing.T) {
	rep, steps, err := runFake(t, &fake{chunk: 100}, Options{PreCopyRounds: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"startLogging", "resuming", "preCopy",
		"beforeStop", "stopCopy", "transfer", "dirtyPages", "stopLogging",
		"resume", "stopSource", "close",
	}
	if !slices.Equal(steps, want) {
		t.Errorf("steps\n %v\nwant\n %v", steps, want)
	}
	if rep.PreCopyBytes != 0 || rep.StateBytes != 100 {
		t.Errorf("%d bytes of %d in pre-copy, want 0 of 100", rep.PreCopyBytes, rep.StateBytes)
	}
}

func TestMigrateCopiesGuestMemory(t *testing.T) {
	var steps []string
	f := &fake{pre: true, chunk: 1}
	open := func(Endpoint, Endpoint, Options) (transport, error) { return f, nil }
	src, dst := fakeEndpoints()
	if _, err := migrate("fake", recording(open, &steps), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src.Mem, dst.Mem) {
		t.Error("the destination's guest memory differs from the source's")
	}
}

// TestMigrateStopsAtAFailingStep: whichever step fails, the error says so
// and wraps the transport's, nothing after it runs, and dirty logging
// started is stopped and the transport closed.
func TestMigrateStopsAtAFailingStep(t *testing.T) {
	for i, step := range stepsWithPreCopy {
		// A repeated step fails at its first call, already covered.
		if step == "beforeStop" || step == "close" || slices.Index(stepsWithPreCopy, step) != i {
			continue
		}
		t.Run(step, func(t *testing.T) {
			_, steps, err := runFake(t, &fake{pre: true, chunk: 1, failAt: step}, Options{})
			if !errors.Is(err, errStep) || !strings.HasPrefix(err.Error(), "driver: ") {
				t.Fatalf("err = %v, want the step's error wrapped", err)
			}
			want := slices.Clone(stepsWithPreCopy[:i+1])
			if step != "startLogging" && !slices.Contains(want, "stopLogging") {
				want = append(want, "stopLogging")
			}
			want = append(want, "close")
			if !slices.Equal(steps, want) {
				t.Errorf("steps\n %v\nwant\n %v", steps, want)
			}
		})
	}
}

func TestMigrateOpenFails(t *testing.T) {
	open := func(Endpoint, Endpoint, Options) (transport, error) { return nil, errStep }
	src, dst := fakeEndpoints()
	_, err := migrate("v9", open, src, dst, Options{})
	if !errors.Is(err, errStep) || !strings.HasPrefix(err.Error(), "driver: v9: ") {
		t.Fatalf("err = %v, want the opening error under the protocol's name", err)
	}
}

// TestMigratePageSizeFromLogging: the page size logging starts at is the
// one dirty pages come in; one that does not divide guest memory stops
// the migration before anything moves, with logging stopped.
func TestMigratePageSizeFromLogging(t *testing.T) {
	rep, _, err := runFake(t, &fake{pre: true, pageSize: 8192, dirty: []byte{1}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pages != 2+3 {
		t.Errorf("%d pages copied, want 2 of 8 KiB and one dirty in each of 3 rounds", rep.Pages)
	}
	_, steps, err := runFake(t, &fake{pageSize: 3000}, Options{})
	if err == nil || !strings.Contains(err.Error(), "page size 3000") {
		t.Fatalf("err = %v, want the page size refused", err)
	}
	if want := []string{"startLogging", "stopLogging", "close"}; !slices.Equal(steps, want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
}
