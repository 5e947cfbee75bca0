package main

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"

	"e1000e-vfu/control"
	"e1000e-vfu/device"
	"e1000e-vfu/device/model"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/vfiouser"
)

// clientWatch wraps the served device to know whether a client is
// connected: the vfio-user server tears a connection down on its own
// goroutine, and shutdown must wait until the device has let go of the
// client's memory and eventfds before it closes the NIC and the backend.
type clientWatch struct {
	device.Device

	mu      sync.Mutex
	clients int
	changed chan struct{} // closed and replaced on every Connect/Disconnect
	log     *slog.Logger
}

func newClientWatch(dev device.Device, log *slog.Logger) *clientWatch {
	return &clientWatch{Device: dev, changed: make(chan struct{}), log: log}
}

// served is what the vfio-user server gets: the watch, still Migratable
// when the device is, so wrapping never hides migration support.
func (w *clientWatch) served() device.Device {
	if m, ok := w.Device.(device.Migratable); ok {
		return struct {
			*clientWatch
			device.Migratable
		}{w, &migrationLog{Migratable: m, log: w.log}}
	}
	return w
}

func (w *clientWatch) Connect(mem device.GuestMemory) {
	w.Device.Connect(mem)
	w.bump(+1)
}

func (w *clientWatch) Disconnect() {
	w.Device.Disconnect()
	w.bump(-1)
}

func (w *clientWatch) bump(d int) {
	w.mu.Lock()
	w.clients += d
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// connected reports whether a client is being served.
func (w *clientWatch) connected() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clients > 0
}

// waitIdle waits until no client is connected, or ctx ends.
func (w *clientWatch) waitIdle(ctx context.Context) error {
	// Each pass either returns or waits for one change.
	for {
		w.mu.Lock()
		n, ch := w.clients, w.changed
		w.mu.Unlock()
		if n <= 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nicTarget is what the control socket speaks for: the NIC, the
// configuration it was started with, and whether a client is served.
type nicTarget struct {
	nic   *e1000e.NIC
	cfg   model.Config
	watch *clientWatch
	vfu   *vfiouser.Server // for its panic count; nil until it is made
}

var (
	_ control.Target          = (*nicTarget)(nil)
	_ control.StatusReporter  = (*nicTarget)(nil)
	_ control.Announcer       = (*nicTarget)(nil)
	_ control.AddressReporter = (*nicTarget)(nil)
)

func (t *nicTarget) Config() model.Config { return t.cfg }

// Stats names the counters in lower case, as the control protocol does
// ("gprc"); the NIC names them after their registers ("GPRC").
func (t *nicTarget) Stats() map[string]uint64 {
	in := t.nic.Stats()
	out := make(map[string]uint64, len(in))
	for k, v := range in {
		out[strings.ToLower(k)] = v
	}
	return out
}

// MAC is the NIC's permanent address, which the migrated state carries:
// query-config reports it so that a destination is started with it.
func (t *nicTarget) MAC() net.HardwareAddr { return t.nic.MAC() }

func (t *nicTarget) LinkUp() bool { return t.nic.LinkUp() }

func (t *nicTarget) SetLink(up bool) error {
	t.nic.SetLink(up)
	return nil
}

// Status is "running" while a client (QEMU) is served and "waiting" while
// none is; a migration state other than running is reported beside it, and
// the server's goroutine count and the vfio-user server's panics with it.
func (t *nicTarget) Status() control.Status {
	s := control.Status{State: "waiting", Goroutines: runtime.NumGoroutine(), HeapLiveBytes: heapLive()}
	if t.watch.connected() {
		s.State = "running"
	}
	if t.vfu != nil {
		s.Panics = t.vfu.Panics()
	}
	if m, ok := t.watch.Device.(device.Migratable); ok {
		if st := m.MigrationState(); st != device.MigRunning {
			s.Migration = st.String()
		}
	}
	return s
}

// Announce announces the NIC's addresses now (see e1000e's Announce for
// the schedule and when it refuses).
func (t *nicTarget) Announce() (control.AnnounceResult, error) {
	st, err := t.nic.Announce()
	if err != nil {
		return control.AnnounceResult{}, err
	}
	return control.AnnounceResult{Addresses: st.Addresses, Tagged: st.Tagged, Rounds: st.Rounds}, nil
}

// AnnounceStats are the server's counts of its announcement frames.
func (t *nicTarget) AnnounceStats() control.AnnounceStats {
	s := t.nic.AnnounceStats()
	return control.AnnounceStats{Rounds: s.Rounds, Frames: s.Frames, Errors: s.Errors}
}

// heapLive reads the live heap of the last garbage collection.
func heapLive() uint64 {
	m := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return m[0].Value.Uint64()
}
