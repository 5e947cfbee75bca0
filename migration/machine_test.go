package migration

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"e1000e-vfu/device"
)

// readAll drains the data of the current state in chunks of n bytes.
func readAll(t testing.TB, m *Machine, n int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, n)
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("ReadMigrationData never ends")
		}
		k, err := m.ReadMigrationData(buf)
		if err != nil {
			t.Fatalf("ReadMigrationData: %v", err)
		}
		if k == 0 {
			return out
		}
		out = append(out, buf[:k]...)
	}
}

func writeAll(t testing.TB, m *Machine, b []byte, n int) {
	t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		if err := m.WriteMigrationData(b[:k]); err != nil {
			t.Fatalf("WriteMigrationData: %v", err)
		}
		b = b[k:]
	}
}

func setState(t testing.TB, m *Machine, s device.MigrationState) {
	t.Helper()
	if err := m.SetMigrationState(s); err != nil {
		t.Fatalf("SetMigrationState(%s) from %s: %v", s.String(), m.MigrationState().String(), err)
	}
}

// A migration as QEMU drives it: pre-copy on the source while the
// destination already receives (and checks) the header, then stop-copy.
func TestMachineMigrateV2(t *testing.T) {
	src := newFakeDev(16, true)
	src.st = busyState(5)
	dst := newFakeDev(16, true)
	ms, md := NewMachine(src, Options{}), NewMachine(dst, Options{})

	if n, err := ms.MigrationDataSize(); err != nil || n == 0 {
		t.Fatalf("MigrationDataSize in RUNNING = %d, %v; want > 0", n, err)
	}
	setState(t, ms, sPreCopy)
	if src.quiesced {
		t.Fatal("device quiesced in PRE_COPY")
	}
	pre := readAll(t, ms, 7)
	h, hl, err := ParseHeader(pre, Limits{})
	if err != nil || h.Model != fakeModel {
		t.Fatalf("pre-copy data does not start with the header: %v", err)
	}
	secs, _ := splitStream(AppendEnd(bytes.Clone(pre)), hl, DefaultLimits())
	if len(secs) != 1 || secs[0].name != "config" {
		t.Fatalf("pre-copy data holds %v, want the config section alone", secs)
	}
	if n, _ := ms.MigrationDataSize(); n == 0 {
		t.Fatal("MigrationDataSize is 0 in PRE_COPY with the state still to send")
	}

	setState(t, md, sResuming)
	if !dst.quiesced {
		t.Fatal("destination not quiesced in RESUMING")
	}
	writeAll(t, md, pre, 5)

	setState(t, ms, sStopCopy)
	if !src.quiesced {
		t.Fatal("source not quiesced once STOP_COPY is reached")
	}
	left, _ := ms.MigrationDataSize()
	rest := readAll(t, ms, 100)
	if uint64(len(rest)) != left || left == 0 {
		t.Fatalf("MigrationDataSize said %d, read %d", left, len(rest))
	}
	if n, _ := ms.MigrationDataSize(); n != 0 {
		t.Fatalf("MigrationDataSize after the end = %d", n)
	}
	writeAll(t, md, rest, 64)
	if dst.applyCalls != 0 {
		t.Fatal("applied before RESUMING→STOP")
	}
	setState(t, md, sRunning)
	if dst.quiesced || dst.applyCalls != 1 {
		t.Fatalf("destination quiesced=%v applied=%d", dst.quiesced, dst.applyCalls)
	}
	if dump(dst.state()) != dump(src.state()) {
		t.Fatal("state differs")
	}
	// The whole stream equals a direct save of the source.
	if whole := append(pre, rest...); !bytes.Equal(whole, mustSave(t, src)) {
		t.Fatal("stream read through the machine differs from Save")
	}
	setState(t, ms, sStop)
	setState(t, ms, sRunning)
	if src.quiesced {
		t.Fatal("source still quiesced after STOP→RUNNING")
	}
}

func TestMachineEarlyRefusal(t *testing.T) {
	src := newFakeDev(32, true)
	src.st = busyState(3)
	old := newFakeDev(0, false)
	old.st = busyState(0)
	before := dump(old.state())
	ms, md := NewMachine(src, Options{}), NewMachine(old, Options{})
	setState(t, ms, sPreCopy)
	pre := readAll(t, ms, 4096)
	setState(t, md, sResuming)
	err := md.WriteMigrationData(pre)
	if err == nil || !strings.Contains(err.Error(), "rx-filter-size") || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("pre-copy write = %v, want EINVAL naming rx-filter-size", err)
	}
	if err := md.SetMigrationState(sStop); err == nil || !strings.Contains(err.Error(), "rx-filter-size") {
		t.Fatalf("RESUMING→STOP = %v", err)
	}
	if md.MigrationState() != sResuming || dump(old.state()) != before {
		t.Fatal("refused load moved the state or changed the device")
	}
}

func TestMachineBadDataKeepsDevice(t *testing.T) {
	src := newFakeDev(0, true)
	src.st = busyState(0)
	good := mustSave(t, src)
	dst := newFakeDev(0, true)
	dst.st = fakeState{Regs: fakeRegs{Ctrl: 1}}
	before := dump(dst.state())
	md := NewMachine(dst, Options{})
	setState(t, md, sResuming)
	bad := bytes.Clone(good)
	bad[len(bad)-10] ^= 1
	// The stream is refused by the write that completes it (so a client
	// learns it while loading), and again at RESUMING→STOP.
	writeAll(t, md, bad[:len(bad)-5], 1000)
	if err := md.WriteMigrationData(bad[len(bad)-5:]); err == nil || !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("the write completing a bad stream = %v, want EINVAL naming the checksum", err)
	}
	if err := md.SetMigrationState(sStop); err == nil || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad stream accepted: %v", err)
	}
	if md.MigrationState() != sResuming || dump(dst.state()) != before {
		t.Fatal("failed load left RESUMING or changed the device")
	}
	// The buffer was dropped: a good stream now loads.
	writeAll(t, md, good, 1000)
	setState(t, md, sStop)
	if dump(dst.state()) != dump(src.state()) {
		t.Fatal("state differs after the retry")
	}
	// An empty stream is incomplete.
	setState(t, md, sResuming)
	if err := md.SetMigrationState(sStop); err == nil {
		t.Fatal("empty stream accepted")
	}
}

func TestMachineApplyFailureIsError(t *testing.T) {
	src := newFakeDev(0, true)
	dst := newFakeDev(0, true)
	dst.failApply = true
	md := NewMachine(dst, Options{})
	setState(t, md, sResuming)
	writeAll(t, md, mustSave(t, src), 1<<20)
	if err := md.SetMigrationState(sStop); err == nil || !errors.Is(err, syscall.EIO) {
		t.Fatalf("apply failure = %v, want EIO", err)
	}
	if md.MigrationState() != sError {
		t.Fatalf("state %s, want ERROR", md.MigrationState().String())
	}
	for _, s := range allStates {
		if md.SetMigrationState(s) == nil || md.MigrationState() != sError {
			t.Fatalf("left ERROR for %s", s.String())
		}
	}
	if _, err := md.MigrationDataSize(); err == nil {
		t.Fatal("MigrationDataSize answered in ERROR")
	}
	md.Reset()
	if md.MigrationState() != sRunning || dst.quiesced {
		t.Fatal("Reset did not return to a running device")
	}
}

func TestMachineLimits(t *testing.T) {
	d := newFakeDev(0, true)
	m := NewMachine(d, Options{Limits: Limits{MaxStreamSize: 1024}})
	if err := m.WriteMigrationData([]byte{1}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("write in RUNNING = %v", err)
	}
	if _, err := m.ReadMigrationData(make([]byte, 8)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read in RUNNING = %v", err)
	}
	setState(t, m, sResuming)
	hdr, _ := AppendHeader(nil, fakeModel, nil, Limits{})
	if err := m.WriteMigrationData(hdr); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteMigrationData(make([]byte, 1024)); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("oversized stream = %v, want EFBIG", err)
	}
	if err := m.SetMigrationState(sError); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("requesting ERROR = %v", err)
	}
}

// reach drives a fresh machine into state s the way a client would.
func reach(t *testing.T, s device.MigrationState, opts Options) (*Machine, *fakeDev) {
	d := newFakeDev(0, true)
	d.st = busyState(0)
	m := NewMachine(d, opts)
	switch s {
	case sRunning:
	case sError:
		d.failApply = true
		setState(t, m, sResuming)
		writeAll(t, m, mustSave(t, newFakeDev(0, true)), 1<<20)
		if m.SetMigrationState(sStop) == nil {
			t.Fatal("no failure")
		}
		d.failApply = false
	default:
		setState(t, m, s)
	}
	if m.MigrationState() != s {
		t.Fatalf("reached %s, want %s", m.MigrationState().String(), s.String())
	}
	return m, d
}

// arcLog records the arcs a Machine takes, from its debug log, and the
// device's condition at the end of each: the machine logs an arc once its
// side effects are done.
type arcLog struct {
	dev   *fakeDev
	steps []device.MigrationState
	runs  []bool // whether the device was running after each step
}

func (l *arcLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *arcLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *arcLog) WithGroup(string) slog.Handler            { return l }
func (l *arcLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "migration state" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "to" {
			return true
		}
		for _, s := range allStates {
			if s.String() == a.Value.String() {
				l.steps = append(l.steps, s)
				l.dev.mu.Lock()
				l.runs = append(l.runs, !l.dev.quiesced)
				l.dev.mu.Unlock()
			}
		}
		return false
	})
	return nil
}

// runsIn is the uAPI's meaning of each state for a device that never
// initiates peer-to-peer DMA, written out rather than taken from the
// machine: RUNNING_P2P and PRE_COPY_P2P are RUNNING and PRE_COPY without
// P2P DMA, so the device runs in all four; STOP, STOP_COPY and RESUMING
// change no external state.
var runsIn = map[device.MigrationState]bool{
	sRunning: true, sPreCopy: true, sRunningP2P: true, sPreCopyP2P: true,
	sStop: false, sStopCopy: false, sResuming: false,
}

// Every pair through the Machine itself, with and without the P2P states:
// the arcs the machine takes are the kernel's path (the tables above, from
// vfio_mig_get_next_state), the device runs or is quiesced after each arc
// as that arc's state says, and the state reached and the data offered
// match. With P2P off the P2P states cannot be entered, so no pair starts
// there; every pair ending there is refused.
func TestMachineEveryPair(t *testing.T) {
	for _, set := range []struct {
		name string
		opts Options
		want map[string]string
	}{
		{"pre-copy", Options{}, wantPreCopyOnly},
		{"pre-copy+p2p", Options{P2P: true}, wantAll},
	} {
		t.Run(set.name, func(t *testing.T) {
			flags := NewMachine(newFakeDev(0, true), set.opts).MigrationFlags()
			if got := flags&device.MigFlagP2P != 0; got != set.opts.P2P {
				t.Fatalf("flags %#x with P2P=%v", flags, set.opts.P2P)
			}
			for _, from := range allStates {
				if !supported(from, flags) && from != sError {
					continue
				}
				for _, to := range allStates {
					key := from.String() + ">" + to.String()
					want, allowed := set.want[key]
					m, d := reach(t, from, set.opts)
					if from == sResuming {
						writeAll(t, m, mustSave(t, newFakeDev(0, true)), 1<<20)
					}
					wasQuiesced := d.quiesced
					arcs := &arcLog{dev: d}
					m.log = slog.New(arcs)
					err := m.SetMigrationState(to)
					if !allowed || want == "refused" {
						if err == nil || m.MigrationState() != from || len(arcs.steps) != 0 || d.quiesced != wasQuiesced {
							t.Errorf("%s: err %v, state %s, arcs %q, quiesced %v→%v; want refused, nothing moved",
								key, err, m.MigrationState().String(), pathString(arcs.steps), wasQuiesced, d.quiesced)
						}
						continue
					}
					if err != nil || m.MigrationState() != to {
						t.Errorf("%s: err %v, state %s", key, err, m.MigrationState().String())
						continue
					}
					if got := pathString(arcs.steps); got != want {
						t.Errorf("%s: arcs %q, want %q", key, got, want)
					}
					for i, s := range arcs.steps {
						if arcs.runs[i] != runsIn[s] {
							t.Errorf("%s: after the arc into %s the device runs=%v, want %v", key, s.String(), arcs.runs[i], runsIn[s])
						}
					}
					if d.quiesced == runsIn[to] {
						t.Errorf("%s: quiesced=%v", key, d.quiesced)
					}
					if d.quiesceCalls-d.resumeCalls != map[bool]int{true: 1, false: 0}[d.quiesced] {
						t.Errorf("%s: %d quiesce, %d resume calls", key, d.quiesceCalls, d.resumeCalls)
					}
					// Saving states offer data, starting with the header.
					if isSaving(to) {
						buf := make([]byte, 8)
						if n, err := m.ReadMigrationData(buf); err != nil || n != 8 || [8]byte(buf) != Magic {
							t.Errorf("%s: first data %x, %v", key, buf[:n], err)
						}
					} else if _, err := m.ReadMigrationData(make([]byte, 8)); err == nil {
						t.Errorf("%s: data offered outside a saving state", key)
					}
				}
			}
		})
	}
}

// A stream whose framing and checksum are sound but whose contents the device
// cannot take (here an unknown mandatory section) is refused by the write
// that completes it too, not first at RESUMING→STOP: QEMU ignores a refusal
// that comes only when it starts the device.
func TestMachineRefusesBadContentsAtTheLastWrite(t *testing.T) {
	src := newFakeDev(0, true)
	src.st = busyState(0)
	h, secs, err := Split(mustSave(t, src), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	secs = append(secs, Section{Name: "from-the-future", Mandatory: true, Payload: mustPack(t, 1)})
	bad, err := Assemble(h, secs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newFakeDev(0, true)
	before := dump(dst.state())
	md := NewMachine(dst, Options{})
	setState(t, md, sResuming)
	writeAll(t, md, bad[:len(bad)-1], 1000)
	err = md.WriteMigrationData(bad[len(bad)-1:])
	if err == nil || !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "unknown mandatory section from-the-future") {
		t.Fatalf("the write completing the stream = %v", err)
	}
	if err := md.SetMigrationState(sStop); err == nil {
		t.Fatal("RESUMING→STOP accepted a refused stream")
	}
	if dump(dst.state()) != before {
		t.Fatal("the refused stream changed the device")
	}
}
