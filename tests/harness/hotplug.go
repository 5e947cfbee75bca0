package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// RootPortArgs are QEMU arguments for an empty PCIe root port with the
// given id, into which a NIC can be hot-plugged: q35's root bus takes no
// hot-plug, a root port does (native PCIe hot-plug, the guest's pciehp).
func RootPortArgs(id string, chassis int) []string {
	return []string{"-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d", id, chassis)}
}

// HotAdd plugs our NIC into bus (a root port) as device id, served by the
// server at socket; props are further vfio-user-pci properties.
func (vm *VM) HotAdd(ctx context.Context, id, bus, socket string, props map[string]any) error {
	args := map[string]any{
		"driver": "vfio-user-pci", "id": id, "bus": bus,
		"socket": map[string]string{"type": "unix", "path": socket},
	}
	for k, v := range props {
		args[k] = v
	}
	if err := vm.QMP.Execute(ctx, "device_add", args, nil); err != nil {
		return fmt.Errorf("device_add %s: %w", id, err)
	}
	return nil
}

// HotDel asks QEMU to unplug device id (device_del: QEMU presses the slot's
// attention button, the guest releases the device and powers the slot off)
// and waits up to wait for QEMU's DEVICE_DELETED for it. A wait of zero
// only asks.
func (vm *VM) HotDel(ctx context.Context, id string, wait time.Duration) error {
	if err := vm.QMP.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return fmt.Errorf("device_del %s: %w", id, err)
	}
	if wait == 0 {
		return nil
	}
	return vm.WaitDeleted(ctx, id, wait)
}

// WaitDeleted waits up to wait for QEMU's DEVICE_DELETED event for id,
// failing early if QEMU exits.
func (vm *VM) WaitDeleted(ctx context.Context, id string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		ev, err := vm.QMP.WaitEvent(ctx, "DEVICE_DELETED")
		if err != nil {
			if vm.Exited() {
				return fmt.Errorf("QEMU exited (%v) while %s was being unplugged", vm.waitErr, id)
			}
			return fmt.Errorf("unplugging %s: %w", id, err)
		}
		var d struct {
			Device string `json:"device"`
		}
		if json.Unmarshal(ev.Data, &d) == nil && d.Device == id {
			return nil
		}
	}
}

// ProcCounts are what a process holds, to compare before and after.
type ProcCounts struct {
	FDs int
	// GuestMaps are mappings of shared memory files (memfd, /dev/shm):
	// guest memory a client mapped.
	GuestMaps int
	Threads   int
	RSSKiB    int64
}

func (c ProcCounts) String() string {
	return fmt.Sprintf("%d fds, %d guest memory mappings, %d threads, RSS %d KiB", c.FDs, c.GuestMaps, c.Threads, c.RSSKiB)
}

// ReadProcCounts reads pid's open descriptors, threads and resident set.
func ReadProcCounts(pid int) (ProcCounts, error) {
	var c ProcCounts
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return c, err
	}
	c.FDs = len(fds)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.Contains(line, "/memfd:") || strings.Contains(line, "/dev/shm/") {
			c.GuestMaps++
		}
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "Threads":
			c.Threads, _ = strconv.Atoi(f[0])
		case "VmRSS":
			c.RSSKiB, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return c, nil
}
