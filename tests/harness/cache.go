// Package harness runs a real QEMU with a real Linux guest for the
// integration tests, the demo and the guest benchmark: it prepares the
// cached Debian 13 root (tests/prepare.sh), builds the guest initramfs with
// our agent, starts and stops QEMU and our server, speaks QMP and the agent
// protocol, and sets up network namespaces with TAP devices. Every wait has a
// deadline; nothing here waits forever.
package harness

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Cache is a prepared directory made by tests/prepare.sh.
type Cache struct {
	Dir           string // the keyed cache directory
	Root          string // the Debian 13 root holding QEMU
	Firmware      string // QEMU's data files, symlinks resolved
	Kernel        string // the guest kernel
	BaseInitramfs string // busybox, e1000e.ko and /init, without the agent
	KernelRelease string
	QEMUVersion   string
}

// RepoRoot finds the module root (the directory with go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 32 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("harness: no go.mod above the working directory")
}

// Prepare runs the preparation recipe (quick when its cache is complete) and
// returns the cache it names. Progress goes to progress, if not nil.
func Prepare(ctx context.Context, repo string, progress *os.File) (*Cache, error) {
	var w io.Writer
	if progress != nil {
		w = progress
	}
	dir, err := runRecipe(ctx, repo, "tests/prepare.sh", 30*time.Minute, w)
	if err != nil {
		return nil, err
	}
	return OpenCache(dir)
}

// runRecipe runs a preparation recipe (a script under repo that prints the
// directory it made as its last line) within timeout and returns that
// directory. Its progress (stderr) goes to progress, if not nil.
func runRecipe(ctx context.Context, repo, script string, timeout time.Duration, progress io.Writer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(repo, filepath.FromSlash(script)))
	var out bytes.Buffer
	cmd.Stdout = &out
	if progress != nil {
		cmd.Stderr = progress
	} else {
		cmd.Stderr = &out
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("harness: %s: %w\n%s", script, err, tail(out.Bytes(), 4096))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], nil
}

// OpenCache checks a prepared directory and describes it.
func OpenCache(dir string) (*Cache, error) {
	if _, err := os.Stat(filepath.Join(dir, "complete")); err != nil {
		return nil, fmt.Errorf("harness: %s is not a complete cache: %w", dir, err)
	}
	c := &Cache{
		Dir:           dir,
		Root:          filepath.Join(dir, "root"),
		Firmware:      filepath.Join(dir, "firmware"),
		Kernel:        filepath.Join(dir, "vmlinuz"),
		BaseInitramfs: filepath.Join(dir, "base.cpio.gz"),
	}
	rel, err1 := os.ReadFile(filepath.Join(dir, "kernel-release"))
	ver, err2 := os.ReadFile(filepath.Join(dir, "qemu-version"))
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("harness: cache %s: %w", dir, err)
	}
	c.KernelRelease = strings.TrimSpace(string(rel))
	c.QEMUVersion = strings.TrimSpace(string(ver))
	return c, nil
}

// QEMUCommand returns the argv that runs the root's QEMU from the host: the
// root's own dynamic loader with the root's libraries, so that no chroot and
// no mounts are needed and every path QEMU sees is a host path.
func (c *Cache) QEMUCommand(args ...string) (argv []string, env []string) {
	lib := filepath.Join(c.Root, "usr/lib/x86_64-linux-gnu") + ":" + filepath.Join(c.Root, "lib/x86_64-linux-gnu")
	argv = []string{
		filepath.Join(c.Root, "lib64/ld-linux-x86-64.so.2"),
		"--library-path", lib,
		filepath.Join(c.Root, "usr/bin/qemu-system-x86_64"),
		"-L", c.Firmware,
	}
	env = []string{"QEMU_MODULE_DIR=" + filepath.Join(c.Root, "usr/lib/x86_64-linux-gnu/qemu")}
	return append(argv, args...), env
}

// BuildInitramfs builds the guest agent from source (static, no cgo) and
// writes DIR/initramfs.cpio.gz: the cached base archive followed by a second
// archive holding /agent. The kernel unpacks concatenated archives in order.
func (c *Cache) BuildInitramfs(ctx context.Context, repo, dir string) (string, error) {
	agent := filepath.Join(dir, "agent")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", agent, "./tests/guestagent")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: building the guest agent: %w\n%s", err, out)
	}
	bin, err := os.ReadFile(agent)
	if err != nil {
		return "", err
	}
	base, err := os.ReadFile(c.BaseInitramfs)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	buf.Write(base)
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	cw := newCPIOWriter(zw)
	if err := errors.Join(cw.file("agent", 0o755, bin), cw.close(), zw.Close()); err != nil {
		return "", fmt.Errorf("harness: initramfs: %w", err)
	}
	out := filepath.Join(dir, "initramfs.cpio.gz")
	return out, os.WriteFile(out, buf.Bytes(), 0o644)
}

// tail returns at most the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
