package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"e1000e-vfu/internal/unixsock"
	"e1000e-vfu/qmp"
)

// NIC kinds.
const (
	BuiltinE1000E = "e1000e"    // QEMU's own in-process e1000e
	VFIOUser      = "vfio-user" // our server, attached with vfio-user-pci
)

// GuestMAC is the MAC address tests give QEMU's built-in NIC.
const GuestMAC = "52:54:00:12:34:56"

// NIC says which network card the guest gets.
type NIC struct {
	Kind string
	// Netdev is QEMU's -netdev value for the built-in NIC; its id must be
	// "n0" (e.g. "tap,id=n0,ifname=tap0,script=no,downscript=no"), or
	// "nK" for VMConfig.MoreNICs[K-1].
	Netdev string
	// Socket is the vfio-user socket of our server.
	Socket string
	// MAC is the built-in NIC's address; GuestMAC when empty. (Our
	// server's NIC has the address the server was given.)
	MAC string
}

// VMConfig describes one guest.
type VMConfig struct {
	Cache     *Cache
	Initramfs string
	Dir       string // sockets and logs
	NIC       NIC
	// MoreNICs are further network cards, in this order after NIC: the
	// K-th (from 1) is QEMU device nicK, and a built-in one's netdev
	// must have id nK. Each of our servers' NICs has its own socket.
	MoreNICs []NIC
	// NetNS, if set, is where QEMU runs (for the built-in NIC's TAP).
	NetNS      *NetNS
	KernelArgs string // added to the kernel command line
	MemMiB     int    // 512 when 0
	CPUs       int    // 1 when 0
	// Echo, if set, receives a copy of the console.
	Echo io.Writer
	// QEMU, if set, builds QEMU's argv and environment in place of
	// Cache.QEMUCommand (another QEMU build, e.g. MigQEMU.Command).
	QEMU func(args ...string) (argv, env []string)
	// Incoming, if set, starts QEMU waiting for a migration (-incoming
	// VALUE, e.g. "defer"); StartVM then does not wait for the agent's
	// greeting, which the guest sent before, on the source.
	Incoming string
	// DeviceProps are extra properties of the vfio-user-pci device.
	DeviceProps map[string]any
	// Agent2 adds a third serial port (the guest's ttyS2) for a second
	// agent, which the test starts in the guest (StartAgent2).
	Agent2 bool
	// ExtraQMP adds a second QMP socket (VM.QMP2Path): QEMU serves one
	// client per socket, and the harness keeps the first.
	ExtraQMP bool
	// PrivateRAM gives the guest plain anonymous RAM in place of a shared
	// memfd: QEMU then has no fd to pass with DMA_MAP, and the server
	// reaches guest memory only through DMA_READ and DMA_WRITE messages.
	PrivateRAM bool
	// ExtraArgs are further QEMU arguments (e.g. a pcie-root-port for a
	// NIC hot-plugged later).
	ExtraArgs []string
}

// VM is a running QEMU with its console, agent and QMP connections.
type VM struct {
	cfg     VMConfig
	cmd     *exec.Cmd
	Console *Console
	Agent   *Agent
	QMP     *qmp.Client
	// Agent2 is the third serial port's agent (VMConfig.Agent2).
	Agent2 *Agent
	// QMP2Path is the second QMP socket (VMConfig.ExtraQMP).
	QMP2Path string
	stderr   *os.File
	exited   chan struct{}
	waitErr  error
	conns    []net.Conn
	once     sync.Once
}

// StartVM starts QEMU and waits until the agent in the guest is ready or
// ctx ends. On error everything started is stopped again.
func StartVM(ctx context.Context, cfg VMConfig) (vm *VM, err error) {
	if cfg.MemMiB == 0 {
		cfg.MemMiB = 512
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	conL, err := listenUnix(filepath.Join(cfg.Dir, "console.sock"))
	if err != nil {
		return nil, err
	}
	defer conL.Close()
	agtL, err := listenUnix(filepath.Join(cfg.Dir, "agent.sock"))
	if err != nil {
		return nil, err
	}
	defer agtL.Close()
	qmpPath := filepath.Join(cfg.Dir, "qmp.sock")
	os.Remove(qmpPath)
	var agt2L *net.UnixListener
	if cfg.Agent2 {
		if agt2L, err = listenUnix(filepath.Join(cfg.Dir, "agent2.sock")); err != nil {
			return nil, err
		}
		defer agt2L.Close()
	}

	args := []string{"-nodefaults", "-display", "none", "-accel", "tcg"}
	if cfg.PrivateRAM {
		args = append(args, "-machine", "q35")
	} else {
		args = append(args, "-machine", "q35,memory-backend=mem",
			"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", cfg.MemMiB))
	}
	args = append(args,
		"-m", fmt.Sprintf("%dM", cfg.MemMiB), "-smp", fmt.Sprint(cfg.CPUs),
		"-kernel", cfg.Cache.Kernel, "-initrd", cfg.Initramfs,
		"-append", strings.TrimSpace("console=ttyS0 loglevel=6 "+cfg.KernelArgs),
		"-chardev", "socket,id=con,path="+conL.Addr().String(), "-serial", "chardev:con",
		"-chardev", "socket,id=agt,path="+agtL.Addr().String(), "-serial", "chardev:agt",
		"-qmp", "unix:"+qmpPath+",server=on,wait=off",
	)
	if agt2L != nil {
		args = append(args, "-chardev", "socket,id=agt2,path="+agt2L.Addr().String(), "-serial", "chardev:agt2")
	}
	qmp2Path := ""
	if cfg.ExtraQMP {
		qmp2Path = filepath.Join(cfg.Dir, "qmp2.sock")
		os.Remove(qmp2Path)
		args = append(args, "-qmp", "unix:"+qmp2Path+",server=on,wait=off")
	}
	if cfg.Incoming != "" {
		args = append(args, "-incoming", cfg.Incoming)
	}
	for i, nic := range append([]NIC{cfg.NIC}, cfg.MoreNICs...) {
		var props map[string]any
		if i == 0 {
			props = cfg.DeviceProps
		}
		dev, err := nicArgs(i, nic, props)
		if err != nil {
			return nil, err
		}
		args = append(args, dev...)
	}
	args = append(args, cfg.ExtraArgs...)
	qemuCommand := cfg.Cache.QEMUCommand
	if cfg.QEMU != nil {
		qemuCommand = cfg.QEMU
	}
	argv, env := qemuCommand(args...)
	var cmd *exec.Cmd
	if cfg.NetNS != nil {
		cmd = cfg.NetNS.Command(context.Background(), argv...)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	cmd.Env = append(os.Environ(), env...)
	stderr, err := os.Create(filepath.Join(cfg.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	os.WriteFile(filepath.Join(cfg.Dir, "qemu.cmd"), []byte(strings.Join(argv, " ")+"\n"), 0o644)
	if err := cmd.Start(); err != nil {
		stderr.Close()
		return nil, fmt.Errorf("harness: starting QEMU: %w", err)
	}
	vm = &VM{cfg: cfg, cmd: cmd, stderr: stderr, exited: make(chan struct{}), QMP2Path: qmp2Path}
	go func() {
		vm.waitErr = cmd.Wait()
		close(vm.exited)
	}()
	defer func() {
		if err != nil {
			vm.Kill()
			err = fmt.Errorf("%w\n%s", err, vm.Dump())
		}
	}()

	// QEMU connects its chardevs at start-up, before the guest runs.
	con, err := vm.accept(ctx, conL)
	if err != nil {
		return vm, fmt.Errorf("harness: console: %w", err)
	}
	if vm.Console, err = newConsole(con, filepath.Join(cfg.Dir, "console.log"), cfg.Echo); err != nil {
		return vm, err
	}
	agt, err := vm.accept(ctx, agtL)
	if err != nil {
		return vm, fmt.Errorf("harness: agent port: %w", err)
	}
	vm.Agent = newAgent(agt)
	if agt2L != nil {
		agt2, err := vm.accept(ctx, agt2L)
		if err != nil {
			return vm, fmt.Errorf("harness: second agent port: %w", err)
		}
		vm.Agent2 = newAgent(agt2)
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if vm.QMP, err = DialQMP(qctx, qmpPath); err != nil {
		return vm, err
	}
	if cfg.Incoming != "" {
		return vm, nil
	}
	if err := vm.WaitAgent(ctx); err != nil {
		return vm, err
	}
	return vm, nil
}

// nicArgs are QEMU's arguments for NIC number i (device nicI): a built-in
// NIC's netdev (id nI) and device, or our server's vfio-user-pci device
// with the extra properties props. The NICs take PCI slots in their order.
func nicArgs(i int, nic NIC, props map[string]any) ([]string, error) {
	id := fmt.Sprintf("nic%d", i)
	switch nic.Kind {
	case BuiltinE1000E:
		mac := nic.MAC
		if mac == "" {
			mac = GuestMAC
		}
		// JSON, as our NICs: QEMU creates every -device given as
		// key=value before any given as JSON, and the guest's names
		// (eth0, eth1, ...) follow the slots that order assigns.
		dev, _ := json.Marshal(map[string]any{
			"driver": "e1000e", "netdev": fmt.Sprintf("n%d", i), "id": id, "romfile": "", "mac": mac,
		})
		return []string{"-netdev", nic.Netdev, "-device", string(dev)}, nil
	case VFIOUser:
		dev := map[string]any{
			"driver": "vfio-user-pci", "id": id,
			"socket": map[string]string{"type": "unix", "path": nic.Socket},
		}
		for k, v := range props {
			dev[k] = v
		}
		b, _ := json.Marshal(dev)
		return []string{"-device", string(b)}, nil
	case "":
		if i > 0 {
			return nil, fmt.Errorf("harness: NIC %d has no kind", i)
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("harness: unknown NIC kind %q", nic.Kind)
	}
}

// WaitAgent waits for the agent's greeting (after a boot or a reboot),
// failing early if QEMU exits.
func (vm *VM) WaitAgent(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-vm.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := vm.Agent.WaitReady(ctx); err != nil {
		if vm.Exited() {
			return fmt.Errorf("QEMU exited (%v) before the guest was ready", vm.waitErr)
		}
		return err
	}
	return nil
}

func (vm *VM) accept(ctx context.Context, l *net.UnixListener) (net.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for time.Now().Before(deadline) {
		l.SetDeadline(time.Now().Add(200 * time.Millisecond))
		c, err := l.Accept()
		if err == nil {
			vm.conns = append(vm.conns, c)
			return c, nil
		}
		if vm.Exited() {
			return nil, fmt.Errorf("QEMU exited: %v", vm.waitErr)
		}
	}
	return nil, errors.New("QEMU did not connect")
}

// Exited reports whether QEMU has exited.
func (vm *VM) Exited() bool {
	select {
	case <-vm.exited:
		return true
	default:
		return false
	}
}

// Pid is QEMU's process id.
func (vm *VM) Pid() int { return vm.cmd.Process.Pid }

// Kill kills QEMU at once and waits (bounded) for it to go.
func (vm *VM) Kill() {
	vm.cmd.Process.Kill()
	vm.waitExit(10 * time.Second)
	vm.closeConns()
}

// Stop asks QEMU to quit over QMP and kills it if it has not gone in 10 s.
func (vm *VM) Stop() {
	if vm.QMP != nil && !vm.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		vm.QMP.Execute(ctx, "quit", nil, nil)
		cancel()
	}
	if !vm.waitExit(10 * time.Second) {
		vm.cmd.Process.Kill()
		vm.waitExit(10 * time.Second)
	}
	vm.closeConns()
}

// WaitExit waits up to d for QEMU to exit on its own: exited reports
// whether it did, and status is then its exit status (cmd.Wait's error,
// nil for a clean exit).
func (vm *VM) WaitExit(d time.Duration) (exited bool, status error) {
	if !vm.waitExit(d) {
		return false, nil
	}
	return true, vm.waitErr
}

// Stderr is what QEMU has written so far to its stderr (and stdout), the
// file qemu.log of the VM's directory.
func (vm *VM) Stderr() (string, error) {
	b, err := os.ReadFile(filepath.Join(vm.cfg.Dir, "qemu.log"))
	return string(b), err
}

func (vm *VM) waitExit(d time.Duration) bool {
	select {
	case <-vm.exited:
		return true
	case <-time.After(d):
		return false
	}
}

func (vm *VM) closeConns() {
	vm.once.Do(func() {
		if vm.QMP != nil {
			vm.QMP.Close()
		}
		for _, c := range vm.conns {
			c.Close()
		}
		vm.stderr.Close()
	})
}

// Dump returns what helps to understand a failure: QEMU's exit status, the
// end of its stderr and of the console.
func (vm *VM) Dump() string {
	var b strings.Builder
	if vm.Exited() {
		fmt.Fprintf(&b, "QEMU exited: %v\n", vm.waitErr)
	}
	if log, err := os.ReadFile(filepath.Join(vm.cfg.Dir, "qemu.log")); err == nil && len(log) > 0 {
		fmt.Fprintf(&b, "--- QEMU stderr (tail) ---\n%s\n", tail(log, 4096))
	}
	if vm.Console != nil {
		fmt.Fprintf(&b, "--- guest console (tail) ---\n%s\n", vm.Console.Tail(8192))
	}
	return b.String()
}

// listenUnix listens at path for QEMU to connect to, replacing a socket a
// dead run left there (unixsock's rule: never a live one, nor anything
// else).
func listenUnix(path string) (*net.UnixListener, error) {
	ln, err := unixsock.Listen(path, 0)
	if err != nil {
		return nil, fmt.Errorf("harness: socket %s: %w", path, err)
	}
	return ln, nil
}
