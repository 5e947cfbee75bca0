//go:build integration

package migration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"e1000e-vfu/tests/harness"
)

// A guest saved to a file whose device state has one byte flipped does not
// load: the destination server refuses the stream by its checksum, QEMU's
// load fails, and the source, resumed, runs on with a working NIC. The same
// file uncorrupted loads into a fresh side, so the flipped byte, not the
// way the state moved, made the load fail.
func TestMigrateCorrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newRig(t, ctx, rigOpts{})
	r.transfer("on a", 4<<20)
	cfg := r.sourceConfig()

	good := filepath.Join(r.dir, "saved.mig")
	r.saveToFile(good)
	a := r.cur
	if st, err := status(ctx, a.vm); err != nil || st != "postmigrate" {
		t.Fatalf("QEMU a after saving: %q %v, want postmigrate", st, err)
	}
	stream, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	off, err := deviceStateByte(stream)
	if err != nil {
		t.Fatalf("%s: %v", good, err)
	}
	corrupt := bytes.Clone(stream)
	corrupt[off] ^= 0x5a
	bad := filepath.Join(r.dir, "corrupt.mig")
	if err := os.WriteFile(bad, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %d bytes; flipped the byte at %d, inside the device's registers section", len(stream), off)

	t.Log("--- the corrupted file into b")
	b := r.startSide(cfg, true)
	ms := r.loadFile(b, bad)
	if ms.Status != "failed" {
		t.Fatalf("QEMU b loading the corrupted file: status %q, want failed (%s)", ms.Status, ms.ErrorDesc)
	}
	t.Logf("QEMU b: load failed: %s", ms.ErrorDesc)
	if !strings.Contains(ms.ErrorDesc, "vfio") && !strings.Contains(ms.ErrorDesc, "load") {
		t.Errorf("QEMU b's error names neither the vfio device nor the load: %s", ms.ErrorDesc)
	}
	if log := b.srv.Log(); !strings.Contains(log, "checksum mismatch") {
		t.Errorf("server b's log does not say it refused the stream by its checksum:\n%s", b.srv.LogTail(2048))
	}
	b.vm.Kill()
	b.srv.Kill()

	t.Log("--- a resumed")
	if err := a.vm.QMP.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.waitRunning(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.transfer("on a, resumed", 8<<20)
	r.checkDevice()
	r.ping(3)
	r.checkDriver()
	if t.Failed() {
		t.FailNow()
	}

	t.Log("--- the uncorrupted file into c")
	c := r.startSide(cfg, true)
	if ms := r.loadFile(c, good); ms.Status != "completed" {
		t.Fatalf("QEMU c loading the saved file: status %q (%s)", ms.Status, ms.ErrorDesc)
	}
	if err := r.waitStatus(c, "running", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if log := c.srv.Log(); strings.Contains(log, "checksum mismatch") {
		t.Errorf("server c refused the uncorrupted stream:\n%s", c.srv.LogTail(2048))
	}
	r.adopt(c)
	r.ping(3)
	r.checkDevice()
	r.checkDriver()
}

// transfer moves size bytes host → guest over TCP on the current side and
// fails the test unless they arrive whole (byte count and SHA-256).
func (r *rig) transfer(what string, size int64) {
	r.t.Helper()
	res, err := harness.TCPTransfer(r.ctx, r.ns, r.cur.vm.Agent, hostIP, false, size)
	if err != nil {
		r.t.Fatalf("TCP transfer %s: %v", what, err)
	}
	r.t.Logf("TCP transfer %s: %d bytes whole, %.0f Mbit/s", what, size, res.Mbps())
}

// incomingStatus is what query-migrate says on a destination.
type incomingStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// loadFile has dst's QEMU (started -incoming defer) load a saved guest from
// path and waits, bounded, until the load completed or failed. QEMU is
// told not to exit on a failed load, so that it can be asked why.
func (r *rig) loadFile(dst *side, path string) incomingStatus {
	r.t.Helper()
	if err := dst.vm.QMP.Execute(r.ctx, "migrate-incoming", map[string]any{
		"uri": "file:" + path, "exit-on-error": false,
	}, nil); err != nil {
		r.t.Fatalf("QEMU %s: migrate-incoming: %v", dst.name, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	var ms incomingStatus
	for {
		if dst.vm.Exited() {
			r.t.Fatalf("QEMU %s exited while loading %s:\n%s", dst.name, path, dst.vm.Dump())
		}
		if err := dst.vm.QMP.Execute(r.ctx, "query-migrate", nil, &ms); err != nil {
			r.t.Fatalf("QEMU %s: query-migrate: %v", dst.name, err)
		}
		switch ms.Status {
		case "completed", "failed", "cancelled":
			return ms
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("QEMU %s: still %q loading %s after 2 minutes", dst.name, ms.Status, path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Our device stream's magic and the start of its mandatory "registers"
// section record (migration/FORMAT.md): tag 'S', flags MANDATORY, the
// name after its length byte, then the payload's u32 length.
var (
	streamMagic   = []byte("\x89DST\r\n\x1a\n")
	registersHead = []byte("S\x01\x09registers")
)

// deviceStateByte finds, in a guest saved to a file, a byte inside the
// payload of our device stream's registers section: state our server
// produced, which QEMU carries as opaque device data, so that flipping it
// leaves QEMU's own framing intact and only the destination server can
// notice. The section comes after the stream's header (its magic), in the
// data QEMU read from the device in stop-copy; it must be found once.
func deviceStateByte(stream []byte) (int, error) {
	m := bytes.LastIndex(stream, streamMagic)
	if m < 0 {
		return 0, errors.New("no device stream header in the file")
	}
	i := bytes.Index(stream[m:], registersHead)
	if i < 0 {
		return 0, errors.New("no registers section after the device stream header")
	}
	i += m
	if j := bytes.Index(stream[i+1:], registersHead); j >= 0 {
		return 0, fmt.Errorf("the registers section is found twice (at %d and %d)", i, i+1+j)
	}
	p := i + len(registersHead)
	if p+4 > len(stream) {
		return 0, errors.New("the registers section is truncated")
	}
	n := int(binary.LittleEndian.Uint32(stream[p:]))
	p += 4
	if n < 2 || p+n > len(stream) {
		return 0, fmt.Errorf("the registers section's payload length %d does not fit", n)
	}
	return p + n/2, nil
}
