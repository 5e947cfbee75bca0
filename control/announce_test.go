package control

import (
	"errors"
	"testing"
)

// announceTarget is a target that announces, counting the requests.
type announceTarget struct {
	*fakeTarget
	calls int
	err   error
}

func (a *announceTarget) Announce() (AnnounceResult, error) {
	a.calls++
	if a.err != nil {
		return AnnounceResult{}, a.err
	}
	return AnnounceResult{Addresses: 2, Tagged: 4, Rounds: 5}, nil
}

func (a *announceTarget) AnnounceStats() AnnounceStats {
	return AnnounceStats{Rounds: uint64(5 * a.calls), Frames: uint64(30 * a.calls), Errors: 1}
}

func TestAnnounce(t *testing.T) {
	tgt := &announceTarget{fakeTarget: newTarget(t, 2)}
	c := dial(t, start(t, &Server{Target: tgt}))
	rep := c.send(t, `{"cmd":"announce","id":4}`)
	if rep["ok"] != true || rep["id"] != float64(4) || asJSON(t, rep["result"]) != `{"addresses":2,"rounds":5,"tagged":4}` {
		t.Errorf("announce: %v", rep)
	}
	if tgt.calls != 1 {
		t.Errorf("%d announcements, want 1", tgt.calls)
	}
	// query-stats carries the server's announcement counters beside the
	// device's.
	rep = c.send(t, `{"cmd":"query-stats"}`)
	if got := asJSON(t, rep["result"]); got != `{"announce":{"errors":1,"frames":30,"rounds":5},"link_up":true,"stats":{"gprc":7,"gptc":3}}` {
		t.Errorf("query-stats: %s", got)
	}
	if rep := c.send(t, `{"cmd":"announce","up":true}`); rep["ok"] != false || rep["error"] != "announce takes no arguments" {
		t.Errorf("announce with an argument: %v", rep)
	}
	tgt.err = errors.New("the NIC is stopped for migration")
	if rep := c.send(t, `{"cmd":"announce"}`); rep["ok"] != false || rep["error"] != "announce: the NIC is stopped for migration" {
		t.Errorf("failing announce: %v", rep)
	}
}

// A target that cannot announce refuses the command, and its query-stats
// has no announce counters.
func TestAnnounceUnsupported(t *testing.T) {
	c := dial(t, start(t, &Server{Target: newTarget(t, 2)}))
	if rep := c.send(t, `{"cmd":"announce"}`); rep["ok"] != false || rep["error"] != "announce: the device cannot announce itself" {
		t.Errorf("announce: %v", rep)
	}
	if got := asJSON(t, c.send(t, `{"cmd":"query-stats"}`)["result"]); got != `{"link_up":true,"stats":{"gprc":7,"gptc":3}}` {
		t.Errorf("query-stats: %s", got)
	}
}
