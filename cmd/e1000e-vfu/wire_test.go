package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"e1000e-vfu/control"
	"e1000e-vfu/device"
	"e1000e-vfu/device/model"
	"e1000e-vfu/e1000e"
)

// fakeDev is a device that records Connect/Disconnect and, as migDev,
// migrates.
type fakeDev struct {
	device.Device // nil: only the methods below are called
	connects      int
	disconnects   int
}

func (d *fakeDev) Connect(device.GuestMemory) { d.connects++ }
func (d *fakeDev) Disconnect()                { d.disconnects++ }

type migDev struct {
	fakeDev
	device.Migratable // nil except MigrationState
	state             device.MigrationState
}

func (d *migDev) MigrationState() device.MigrationState { return d.state }

func TestClientWatch(t *testing.T) {
	dev := &fakeDev{}
	w := newClientWatch(dev, slog.New(slog.DiscardHandler))
	if _, ok := w.served().(device.Migratable); ok {
		t.Error("a device that does not migrate is served as Migratable")
	}
	if w.connected() {
		t.Error("connected before any client")
	}
	if err := w.waitIdle(context.Background()); err != nil {
		t.Fatalf("waitIdle with no client: %v", err)
	}

	w.served().Connect(nil)
	if !w.connected() || dev.connects != 1 {
		t.Fatalf("after Connect: connected %v, device saw %d", w.connected(), dev.connects)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := w.waitIdle(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitIdle with a client: %v, want the deadline", err)
	}

	idle := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		idle <- w.waitIdle(ctx)
	}()
	w.served().Disconnect()
	if err := <-idle; err != nil {
		t.Fatalf("waitIdle across Disconnect: %v", err)
	}
	if w.connected() || dev.disconnects != 1 {
		t.Fatalf("after Disconnect: connected %v, device saw %d", w.connected(), dev.disconnects)
	}
}

// Wrapping keeps migration visible to the vfio-user server.
func TestClientWatchKeepsMigratable(t *testing.T) {
	dev := &migDev{state: device.MigStopCopy}
	w := newClientWatch(dev, slog.New(slog.DiscardHandler))
	served := w.served()
	m, ok := served.(device.Migratable)
	if !ok {
		t.Fatal("a migratable device is served without Migratable")
	}
	if m.MigrationState() != device.MigStopCopy {
		t.Errorf("MigrationState %d through the wrapper", m.MigrationState())
	}
	served.Connect(nil)
	if !w.connected() || dev.connects != 1 {
		t.Error("Connect through the migratable wrapper was not watched")
	}

	// The control socket reports the client and the migration state.
	nic := newTestNIC(t)
	tgt := &nicTarget{nic: nic, watch: w}
	if s := tgt.Status(); s.State != "running" || s.Migration != "STOP_COPY" {
		t.Errorf("status %+v, want running and STOP_COPY", s)
	}
	served.Disconnect()
	dev.state = device.MigRunning
	if s := tgt.Status(); s.State != "waiting" || s.Migration != "" {
		t.Errorf("status %+v, want waiting and no migration", s)
	}
}

func newTestNIC(t *testing.T) *e1000e.NIC {
	t.Helper()
	nic, err := e1000e.New(e1000e.Config{AutonegDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nic.Close() })
	return nic
}

func TestNICTarget(t *testing.T) {
	nic := newTestNIC(t)
	cfg, err := model.E1000E().Resolve(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	tgt := &nicTarget{nic: nic, cfg: cfg, watch: newClientWatch(nic, slog.New(slog.DiscardHandler))}
	if got := tgt.Config(); got.Version != 1 || got.Int(model.RXFilterSize) != 0 {
		t.Errorf("Config %+v, want version 1 as started", got)
	}
	st := tgt.Stats()
	for _, name := range []string{"gprc", "gptc", "gorc", "gotc", "crcerrs"} {
		if _, ok := st[name]; !ok {
			t.Errorf("Stats lacks %q: %v", name, st)
		}
	}
	for name := range st {
		if name != toLowerASCII(name) {
			t.Errorf("Stats name %q is not lower case", name)
		}
	}
	if s := tgt.Status(); s.State != "waiting" || s.Migration != "" {
		t.Errorf("status %+v without a client", s)
	}
	if !tgt.LinkUp() {
		t.Fatal("a new NIC's link is down")
	}
	if err := tgt.SetLink(false); err != nil || tgt.LinkUp() {
		t.Fatalf("SetLink(false): %v, link up %v", err, tgt.LinkUp())
	}
	if err := tgt.SetLink(true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !tgt.LinkUp() {
		if time.Now().After(deadline) {
			t.Fatal("link still down 5 s after SetLink(true)")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func toLowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// The control socket's announce reaches the NIC: what a round sends, and
// the server's counters.
func TestNICTargetAnnounce(t *testing.T) {
	nic := newTestNIC(t)
	nic.WriteReg(e1000e.RCTL, e1000e.RCTL_EN) // a driver runs it
	tgt := &nicTarget{nic: nic, watch: newClientWatch(nic, slog.New(slog.DiscardHandler))}
	if s := tgt.AnnounceStats(); s != (control.AnnounceStats{}) {
		t.Errorf("a new NIC's announce stats %+v", s)
	}
	res, err := tgt.Announce()
	if err != nil || res != (control.AnnounceResult{Addresses: 1, Rounds: 5}) {
		t.Errorf("Announce = %+v, %v", res, err)
	}
	nic.Quiesce()
	if _, err := tgt.Announce(); err == nil {
		t.Error("a NIC stopped for migration announced")
	}
}
