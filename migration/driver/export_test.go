package driver

import "fmt"

// recorder passes each step to a transport and notes its name first, so a
// test sees the order the algorithm takes the steps in.
type recorder struct {
	t     transport
	steps *[]string
}

func (r recorder) note(s string) { *r.steps = append(*r.steps, s) }

func (r recorder) startLogging(ps uint64) (uint64, error) {
	r.note("startLogging")
	return r.t.startLogging(ps)
}

func (r recorder) dirtyPages(ps uint64) ([]byte, error) {
	r.note("dirtyPages")
	return r.t.dirtyPages(ps)
}

func (r recorder) stopLogging() error { r.note("stopLogging"); return r.t.stopLogging() }
func (r recorder) resuming() error    { r.note("resuming"); return r.t.resuming() }
func (r recorder) preCopy() (bool, error) {
	r.note("preCopy")
	return r.t.preCopy()
}
func (r recorder) stopCopy() (uint64, error) { r.note("stopCopy"); return r.t.stopCopy() }
func (r recorder) transfer() (int, error)    { r.note("transfer"); return r.t.transfer() }
func (r recorder) resume() error             { r.note("resume"); return r.t.resume() }
func (r recorder) stopSource() error         { r.note("stopSource"); return r.t.stopSource() }
func (r recorder) close()                    { r.note("close"); r.t.close() }

// recording wraps what open opens in a recorder writing to steps.
func recording(open opener, steps *[]string) opener {
	return func(src, dst Endpoint, opts Options) (transport, error) {
		t, err := open(src, dst, opts)
		if err != nil {
			return nil, err
		}
		return recorder{t: t, steps: steps}, nil
	}
}

// MigrateRecorded migrates as MigrateV1 or MigrateV2 ("v1", "v2") does,
// and returns the steps the algorithm took through the protocol's
// transport; Options.BeforeStop shows up among them as "beforeStop".
func MigrateRecorded(protocol string, src, dst Endpoint, opts Options) (Report, []string, error) {
	open := map[string]opener{"v1": openV1, "v2": openV2}[protocol]
	if open == nil {
		return Report{}, nil, fmt.Errorf("no protocol %q", protocol)
	}
	var steps []string
	before := opts.BeforeStop
	opts.BeforeStop = func() {
		steps = append(steps, "beforeStop")
		if before != nil {
			before()
		}
	}
	rep, err := migrate(protocol, recording(open, &steps), src, dst, opts)
	return rep, steps, err
}
