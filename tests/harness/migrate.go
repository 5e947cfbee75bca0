package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"e1000e-vfu/qmp"
	"e1000e-vfu/tests/agentproto"
)

// MigQEMU is the QEMU built with live migration for vfio-user devices by
// tests/qemu-migration/build.sh: a Debian 13 root holding the build's run-time
// libraries and the patched binary under /opt/qemu-mig.
type MigQEMU struct {
	Dir     string // the keyed cache directory build.sh printed
	Root    string // DIR/root
	Version string // the QEMU source version the patches went into
}

// BuildMigQEMU runs tests/qemu-migration/build.sh (quick when its result is
// cached; it waits on a lock when another run builds) and opens the result.
// Progress goes to progress, if not nil.
func BuildMigQEMU(ctx context.Context, repo string, progress io.Writer) (*MigQEMU, error) {
	dir, err := runRecipe(ctx, repo, "tests/qemu-migration/build.sh", 60*time.Minute, progress)
	if err != nil {
		return nil, err
	}
	return OpenMigQEMU(dir)
}

// OpenMigQEMU checks a directory build.sh made and describes it.
func OpenMigQEMU(dir string) (*MigQEMU, error) {
	if _, err := os.Stat(filepath.Join(dir, "complete")); err != nil {
		return nil, fmt.Errorf("harness: %s is not a complete QEMU build: %w", dir, err)
	}
	m := &MigQEMU{Dir: dir, Root: filepath.Join(dir, "root")}
	if _, err := os.Stat(m.binary()); err != nil {
		return nil, fmt.Errorf("harness: QEMU build %s: %w", dir, err)
	}
	if v, err := os.ReadFile(filepath.Join(dir, "qemu-version")); err == nil {
		m.Version = strings.TrimSpace(string(v))
	}
	return m, nil
}

func (m *MigQEMU) binary() string {
	return filepath.Join(m.Root, "opt/qemu-mig/bin/qemu-system-x86_64")
}

// Command returns the argv that runs the patched QEMU from the host, as
// Cache.QEMUCommand does for the stock one: the root's dynamic loader and
// libraries, and the root's firmware (SeaBIOS first: QEMU's own data
// directory holds absolute symlinks that only resolve inside the root).
func (m *MigQEMU) Command(args ...string) (argv []string, env []string) {
	lib := filepath.Join(m.Root, "usr/lib/x86_64-linux-gnu") + ":" + filepath.Join(m.Root, "lib/x86_64-linux-gnu")
	argv = []string{
		filepath.Join(m.Root, "lib64/ld-linux-x86-64.so.2"),
		"--library-path", lib,
		m.binary(),
		"-L", filepath.Join(m.Root, "usr/share/seabios"),
		"-L", filepath.Join(m.Root, "usr/share/qemu"),
	}
	return append(argv, args...), nil
}

// Begin sends one request to the agent without waiting for its reply: the
// reply may come on another VM's agent port, after a migration (Await).
func (a *Agent) Begin(timeout time.Duration, cmd string, args ...string) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.nextID.Add(1)
	b, err := json.Marshal(agentproto.Request{ID: id, Cmd: cmd, Args: args, TimeoutMS: timeout.Milliseconds()})
	if err != nil {
		return 0, err
	}
	a.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.conn.Write(append(b, '\n')); err != nil {
		return 0, fmt.Errorf("agent %s: %w", cmd, err)
	}
	return id, nil
}

// Await waits up to wait for the reply to request id, sent with Begin on
// this agent or on the one this agent follows (FollowIDs). A reply that is
// not OK is an error.
func (a *Agent) Await(ctx context.Context, id int64, wait time.Duration) (agentproto.Reply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case r := <-a.replies:
			if r.ID != id {
				continue
			}
			if !r.OK {
				return r, fmt.Errorf("agent request %d: %s", id, r.Err)
			}
			return r, nil
		case <-a.done:
			return agentproto.Reply{}, fmt.Errorf("agent request %d: port closed", id)
		case <-t.C:
			return agentproto.Reply{}, fmt.Errorf("agent request %d: no reply in %v", id, wait)
		case <-ctx.Done():
			return agentproto.Reply{}, fmt.Errorf("agent request %d: %w", id, ctx.Err())
		}
	}
}

// FollowIDs continues prev's request numbering: after a migration the
// guest's agent is the same process, reached through the destination's
// port, and a new request must not reuse an id still in flight.
func (a *Agent) FollowIDs(prev *Agent) {
	a.nextID.Store(prev.nextID.Load() + 1000)
}

// StartAgent2 starts a second agent in the guest on ttyS2 (VMConfig.Agent2)
// and waits for its greeting, so that two requests can run at once.
func (vm *VM) StartAgent2(ctx context.Context) error {
	if vm.Agent2 == nil {
		return fmt.Errorf("harness: the VM has no second agent port")
	}
	if _, err := vm.Agent.Sh(ctx, 10*time.Second, "setsid /agent -port /dev/ttyS2 </dev/null >/dev/null 2>&1 &"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return vm.Agent2.WaitReady(ctx)
}

// PCIRegion is one BAR as query-pci reports it.
type PCIRegion struct {
	BAR     int    `json:"bar"`
	Type    string `json:"type"`
	Address int64  `json:"address"` // PCIUnmapped when not mapped
	Size    uint64 `json:"size"`
}

// PCIUnmapped is the address query-pci gives a BAR that is not mapped (its
// decoding is off in the command register, or it was never assigned).
const PCIUnmapped = -1

// PCIDevice is the part of query-pci's answer about one device the tests
// read.
type PCIDevice struct {
	Bus, Slot, Function int
	QdevID              string      `json:"qdev_id"`
	Regions             []PCIRegion `json:"regions"`
	ID                  struct {
		Vendor int `json:"vendor"`
		Device int `json:"device"`
	} `json:"id"`
}

// queryPCIEntry is one device of query-pci; a bridge (a PCIe root port,
// say) lists the devices behind it.
type queryPCIEntry struct {
	PCIDevice
	Slot     int `json:"slot"`
	Function int `json:"function"`
	Bridge   *struct {
		Bus struct {
			Number int `json:"number"`
		} `json:"bus"`
		Devices []queryPCIEntry `json:"devices"`
	} `json:"pci_bridge"`
}

// QueryPCIDevice finds the device with qdev id in QEMU's query-pci, also
// behind bridges.
func QueryPCIDevice(ctx context.Context, q *qmp.Client, id string) (PCIDevice, error) {
	var buses []struct {
		Bus     int             `json:"bus"`
		Devices []queryPCIEntry `json:"devices"`
	}
	if err := q.Execute(ctx, "query-pci", nil, &buses); err != nil {
		return PCIDevice{}, err
	}
	// QEMU nests no deeper than its bridges do; 8 levels is plenty.
	var find func(bus int, devs []queryPCIEntry, depth int) (PCIDevice, bool)
	find = func(bus int, devs []queryPCIEntry, depth int) (PCIDevice, bool) {
		for _, d := range devs {
			if d.QdevID == id {
				dev := d.PCIDevice
				dev.Bus, dev.Slot, dev.Function = bus, d.Slot, d.Function
				return dev, true
			}
			if d.Bridge != nil && depth < 8 {
				if dev, ok := find(d.Bridge.Bus.Number, d.Bridge.Devices, depth+1); ok {
					return dev, true
				}
			}
		}
		return PCIDevice{}, false
	}
	for _, b := range buses {
		if dev, ok := find(b.Bus, b.Devices, 0); ok {
			return dev, nil
		}
	}
	return PCIDevice{}, fmt.Errorf("query-pci: no device %q", id)
}

// MemoryBARsMapped reports whether every memory BAR of d is mapped.
func (d PCIDevice) MemoryBARsMapped() bool {
	n := 0
	for _, r := range d.Regions {
		if r.Type != "memory" {
			continue
		}
		n++
		if r.Address == PCIUnmapped || r.Address <= 0 {
			return false
		}
	}
	return n > 0
}
