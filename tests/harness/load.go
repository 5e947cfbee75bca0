package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// LoadEnv turns on load mode for the real-QEMU tests: its value is the
// number of CPU hogs to run for the whole test run ("0" or unset: none;
// "cpus": one per CPU). A host that migrates guests away is usually a busy
// one, and timing bugs of the migration hand-over show there first.
const LoadEnv = "E1000E_VFU_LOAD"

// Load is a set of running CPU hogs.
type Load struct {
	cmds []*exec.Cmd
}

// StartLoadFromEnv starts the hogs LoadEnv asks for (none when it is unset)
// and says so through logf.
func StartLoadFromEnv(logf func(format string, args ...any)) (*Load, error) {
	v := os.Getenv(LoadEnv)
	if v == "" || v == "0" {
		return &Load{}, nil
	}
	n := runtime.NumCPU()
	if v != "cpus" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > 64 {
			return nil, fmt.Errorf("harness: %s=%q: want a count of CPU hogs (0..64) or \"cpus\"", LoadEnv, v)
		}
	}
	l, err := StartLoad(n)
	if err == nil {
		logf("load mode: %d CPU hogs, pinned one per CPU in turn, running with QEMU and the servers", n)
	}
	return l, err
}

// StartLoad starts n processes that each spin on one CPU (hog i pinned to
// CPU i modulo the CPU count), at the scheduler's normal priority, so that
// they compete with QEMU and the servers for every core. Stop ends them;
// they also die with the test process.
func StartLoad(n int) (*Load, error) {
	l := &Load{}
	for i := range n {
		// yes writes to /dev/null as fast as it can: pure CPU, no I/O.
		cmd := exec.Command("taskset", "-c", strconv.Itoa(i%runtime.NumCPU()), "yes")
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			l.Stop()
			return nil, err
		}
		cmd.Stdout = devnull
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = cmd.Start()
		devnull.Close()
		if err != nil {
			l.Stop()
			return nil, fmt.Errorf("harness: starting a CPU hog: %w", err)
		}
		l.cmds = append(l.cmds, cmd)
	}
	// A hog that cannot pin itself (taskset fails at once) is an error,
	// not a quieter machine than asked for.
	time.Sleep(100 * time.Millisecond)
	for _, c := range l.cmds {
		if c.ProcessState != nil || c.Process.Signal(syscall.Signal(0)) != nil {
			l.Stop()
			return nil, errors.New("harness: a CPU hog exited at once")
		}
	}
	return l, nil
}

// Stop kills the hogs and waits for them.
func (l *Load) Stop() {
	if l == nil {
		return
	}
	for _, c := range l.cmds {
		c.Process.Kill()
		c.Wait()
	}
	l.cmds = nil
}
