package vfiouser

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/device"
	"e1000e-vfu/internal/leakcheck"
)

// qemuVersionJSON is what QEMU 11.1 sends in VERSION.
const qemuVersionJSON = `{"capabilities":{"pgsizes":4096,"max_msg_fds":16,"max_dma_maps":65535,"max_data_xfer_size":1048576,"migration":{"max_bitmap_size":268435456,"pgsize":4096},"write_multiple":true}}`

func qemuVersionPayload() []byte {
	p := []byte{0, 0, 0, 0}
	p = append(p, qemuVersionJSON...)
	return append(p, 0)
}

func TestVersionQEMU(t *testing.T) {
	leakcheck.FDs(t)
	srv, _, cl := pair(t, newFakeDevice(t), true, Options{})
	r, err := cl.Call(CmdVersion, qemuVersionPayload(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Payload[len(r.Payload)-1] != 0 {
		t.Fatal("reply JSON not NUL-terminated")
	}
	v, err := DecodeVersion(r.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != 0 || v.Minor != 0 {
		t.Fatalf("version %d.%d", v.Major, v.Minor)
	}
	var js map[string]map[string]any
	if err := json.Unmarshal(bytes.TrimRight(r.Payload[4:], "\x00"), &js); err != nil {
		t.Fatal(err)
	}
	caps := js["capabilities"]
	want := map[string]any{"max_msg_fds": 16.0, "max_data_xfer_size": 1048576.0, "pgsizes": 4096.0,
		"write_multiple": true, "max_dma_maps": float64(srv.opts.DMALimits.MaxMaps)}
	for k, w := range want {
		if caps[k] != w {
			t.Errorf("%s = %v, want %v", k, caps[k], w)
		}
	}
	mig, ok := caps["migration"].(map[string]any)
	if !ok || mig["pgsize"] != 4096.0 || mig["max_bitmap_size"].(float64) > 268435456 {
		t.Errorf("migration = %v", caps["migration"])
	}
	if len(caps) != 6 {
		t.Errorf("capabilities %v: want only the six offered", caps)
	}
}

func TestVersionWithoutCapsReplyHasEmptyCaps(t *testing.T) {
	_, _, cl := pair(t, newFakeDevice(t), true, Options{})
	r, err := cl.Call(CmdVersion, []byte{0, 0, 3, 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := DecodeVersion(r.Payload)
	if v.Minor != 0 || v.Caps == nil || !reflect.DeepEqual(*v.Caps, Capabilities{}) {
		t.Fatalf("reply %+v, want minor 0 and empty capabilities", v)
	}
}

func TestVersionRefusals(t *testing.T) {
	leakcheck.FDs(t)
	t.Run("before version", func(t *testing.T) {
		_, _, cl := pair(t, newFakeDevice(t), true, Options{})
		_, err := cl.GetInfo()
		wantErrno(t, err, syscall.EINVAL)
		if _, err := cl.Negotiate(nil); err != nil {
			t.Fatal("negotiation after a refused command:", err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		_, cl := negotiated(t, newFakeDevice(t))
		_, err := cl.Negotiate(nil)
		wantErrno(t, err, syscall.EINVAL)
	})
	t.Run("bad json", func(t *testing.T) {
		_, _, cl := pair(t, newFakeDevice(t), true, Options{})
		_, err := cl.Call(CmdVersion, append([]byte{0, 0, 0, 0}, "{nope\x00"...), nil)
		wantErrno(t, err, syscall.EINVAL)
		_, err = cl.Call(CmdVersion, append([]byte{0, 0, 0, 0}, "{}"...), nil)
		wantErrno(t, err, syscall.EINVAL)
	})
	t.Run("major 1", func(t *testing.T) {
		_, _, cl := pair(t, newFakeDevice(t), true, Options{})
		_, err := cl.Call(CmdVersion, []byte{1, 0, 0, 0}, nil)
		wantErrno(t, err, syscall.ENOTSUP)
		// The server hangs up after refusing the major.
		if _, err := cl.Call(CmdVersion, []byte{0, 0, 0, 0}, nil); err == nil {
			t.Fatal("connection still served after an incompatible major")
		}
	})
	t.Run("no 4k pages", func(t *testing.T) {
		_, _, cl := pair(t, newFakeDevice(t), true, Options{})
		caps := DefaultCapabilities()
		caps.PgSizes = ptr(uint64(1 << 21))
		_, err := cl.Negotiate(caps)
		wantErrno(t, err, syscall.ENOTSUP)
	})
}

func TestGetInfo(t *testing.T) {
	leakcheck.FDs(t)
	_, cl := negotiated(t, newFakeDevice(t))
	info, err := cl.GetInfo()
	if err != nil {
		t.Fatal(err)
	}
	want := DeviceInfo{Argsz: 16, Flags: DeviceFlagReset | DeviceFlagPCI, NumRegions: fakeMigIndex + 1, NumIRQs: 5}
	if info != want {
		t.Fatalf("info %+v, want %+v", info, want)
	}
	_, err = cl.Call(CmdDeviceGetInfo, make([]byte, 16), nil) // argsz 0
	wantErrno(t, err, syscall.EINVAL)
	_, err = cl.Call(CmdDeviceGetInfo, make([]byte, 8), nil) // short
	wantErrno(t, err, syscall.EINVAL)
}

func TestRegionInfo(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, cl := negotiated(t, dev)

	// Plain region: no caps, no fd.
	ri, caps, f, err := cl.RegionInfo(device.RegionBAR0)
	if err != nil {
		t.Fatal(err)
	}
	if ri.Size != fakeBAR0Size || ri.Flags != 3 || ri.CapOffset != 0 || f != nil || caps.Sparse != nil {
		t.Fatalf("BAR0 %+v caps %+v file %v", ri, caps, f)
	}

	// First ask with argsz 32 as QEMU does: the reply says what it needs.
	var p [RegionInfoSize]byte
	RegionInfo{Argsz: 32, Index: device.RegionBAR2}.Encode(p[:])
	r, err := cl.Call(CmdGetRegionInfo, p[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	short, _ := DecodeRegionInfo(r.Payload)
	if len(r.Payload) != 32 || short.Argsz != 32+8+8+16 || len(r.FDs) != 0 {
		t.Fatalf("short reply %+v (%d bytes, %d fds)", short, len(r.Payload), len(r.FDs))
	}

	// The full answer: sparse mmap cap and the fd, which maps the BAR.
	ri, caps, f, err = cl.RegionInfo(device.RegionBAR2)
	if err != nil {
		t.Fatal(err)
	}
	if f == nil {
		t.Fatal("no fd for a mappable region")
	}
	defer f.Close()
	if ri.Flags != 1|2|4|8 || len(caps.Sparse) != 1 || caps.Sparse[0] != (SparseArea{4096, 4096}) {
		t.Fatalf("BAR2 %+v caps %+v", ri, caps)
	}
	m, err := unix.Mmap(int(f.Fd()), int64(ri.Offset), fakeBAR2Size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	dev.mmap.Data[4100] = 0x5a
	if m[4100] != 0x5a {
		t.Fatal("mapped region does not show device memory")
	}

	// Type capability on the device-specific region.
	_, caps, _, err = cl.RegionInfo(fakeMigIndex)
	if err != nil {
		t.Fatal(err)
	}
	if !caps.HasType || caps.Type != 3 || caps.Subtype != 1 {
		t.Fatalf("migration region caps %+v", caps)
	}

	_, _, _, err = cl.RegionInfo(99)
	wantErrno(t, err, syscall.EINVAL)
	RegionInfo{Argsz: 16, Index: 0}.Encode(p[:])
	_, err = cl.Call(CmdGetRegionInfo, p[:], nil)
	wantErrno(t, err, syscall.EINVAL)
}

func TestRegionIOFDsAndIRQInfo(t *testing.T) {
	leakcheck.FDs(t)
	_, cl := negotiated(t, newFakeDevice(t))
	io, err := cl.RegionIOFDs(0)
	if err != nil {
		t.Fatal(err)
	}
	if io != (RegionIOFDs{Argsz: 16, Index: 0, Count: 0}) {
		t.Fatalf("io fds %+v", io)
	}
	_, err = cl.RegionIOFDs(50)
	wantErrno(t, err, syscall.EINVAL)
	q, err := cl.IRQInfo(device.IRQMSIX)
	if err != nil {
		t.Fatal(err)
	}
	if q != (IRQInfo{Argsz: 16, Flags: uint32(device.IRQEventFD | device.IRQNoResize), Index: 2, Count: 8}) {
		t.Fatalf("irq info %+v", q)
	}
	_, err = cl.IRQInfo(5)
	wantErrno(t, err, syscall.EINVAL)
}

func TestRegionReadWrite(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, cl := negotiated(t, dev)
	if err := cl.WriteRegion(0, 0x100, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if err := cl.ReadRegion(0, 0x100, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte{1, 2, 3, 4}) || !bytes.Equal(dev.peek(0, 0x100, 4), got) {
		t.Fatalf("read back %x", got)
	}
	// Posted writes get no reply, and are applied before the next reply.
	for i := range 10 {
		if err := cl.WritePosted(0, uint64(0x200+i), []byte{byte(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	got = make([]byte, 10)
	if err := cl.ReadRegion(0, 0x200, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("posted writes read back %x", got)
	}
	// A failing posted write is only logged: the next call gets its own reply.
	if err := cl.WritePosted(0, 0xfff0, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := cl.ReadRegion(0, 0, got[:1]); err != nil {
		t.Fatal("reply after a failed posted write:", err)
	}
	// Errors.
	wantErrno(t, cl.WriteRegion(0, 0xfff0, []byte{1}), syscall.EIO) // the device's errno
	wantErrno(t, cl.ReadRegion(0, fakeBAR0Size-2, got[:4]), syscall.EINVAL)
	wantErrno(t, cl.ReadRegion(0, 1<<63, got[:4]), syscall.EINVAL)
	wantErrno(t, cl.ReadRegion(0, ^uint64(0)-1, got[:4]), syscall.EINVAL)
	wantErrno(t, cl.ReadRegion(device.RegionROM, 0, got[:4]), syscall.EINVAL) // absent
	wantErrno(t, cl.ReadRegion(42, 0, got[:4]), syscall.EINVAL)
	wantErrno(t, cl.WriteRegion(device.RegionBAR4, 0, got[:4]), syscall.EINVAL) // read-only
	wantErrno(t, cl.ReadRegion(0, 0, make([]byte, DefaultMaxDataXferSize+1)), syscall.EINVAL)
	// Payload that disagrees with count.
	p := regionWritePayload(0, 0, []byte{1, 2, 3, 4})
	le.PutUint32(p[12:], 8)
	_, err := cl.Call(CmdRegionWrite, p, nil)
	wantErrno(t, err, syscall.EINVAL)
	_, err = cl.Call(CmdRegionRead, p, nil) // read with data
	wantErrno(t, err, syscall.EINVAL)
}

func TestWriteMulti(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, cl := negotiated(t, dev)
	items := []WriteMultiItem{
		{Offset: 0x10, Region: 0, Count: 4, Data: [8]byte{0xa, 0xb, 0xc, 0xd}},
		{Offset: 0x20, Region: 0, Count: 8, Data: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{Offset: 4, Region: device.RegionConfig, Count: 2, Data: [8]byte{7, 1}},
	}
	n, err := cl.WriteMulti(items)
	if err != nil || n != 3 {
		t.Fatalf("write multi: %d, %v", n, err)
	}
	if !bytes.Equal(dev.peek(0, 0x10, 4), []byte{0xa, 0xb, 0xc, 0xd}) || dev.peek(0, 0x27, 1)[0] != 8 || dev.peek(device.RegionConfig, 4, 1)[0] != 7 {
		t.Fatal("writes not applied")
	}
	// One bad item: nothing is written.
	bad := []WriteMultiItem{{Offset: 0x40, Count: 1, Data: [8]byte{9}}, {Offset: fakeBAR0Size, Count: 4}}
	_, err = cl.WriteMulti(bad)
	wantErrno(t, err, syscall.EINVAL)
	if dev.peek(0, 0x40, 1)[0] != 0 {
		t.Fatal("first write applied although the second was invalid")
	}
	_, err = cl.WriteMulti([]WriteMultiItem{{Offset: 0, Count: 9}})
	wantErrno(t, err, syscall.EINVAL)
	p := make([]byte, 8+24)
	le.PutUint64(p, 2) // wr_cnt larger than the items sent
	_, err = cl.Call(CmdRegionWriteMulti, p, nil)
	wantErrno(t, err, syscall.EINVAL)
}

func TestReset(t *testing.T) {
	dev := newFakeDevice(t)
	_, cl := negotiated(t, dev)
	if err := cl.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, _, r := dev.counts(); r != 1 {
		t.Fatalf("%d resets", r)
	}
	dev2 := newFakeDevice(t)
	dev2.info.Resettable = false
	_, cl2 := negotiated(t, dev2)
	wantErrno(t, cl2.Reset(), syscall.ENOTSUP)
}

func TestUnknownCommandAndStrayFDs(t *testing.T) {
	leakcheck.FDs(t)
	_, cl := negotiated(t, newFakeDevice(t))
	_, err := cl.Call(Command(99), nil, nil)
	wantErrno(t, err, syscall.ENOSYS)
	_, err = cl.Call(CmdDMARead, make([]byte, 16), nil) // server-to-client command
	wantErrno(t, err, syscall.ENOSYS)
	efd, _ := NewEventFD()
	defer efd.Close()
	var p [16]byte
	DeviceInfo{Argsz: 16}.Encode(p[:])
	_, err = cl.Call(CmdDeviceGetInfo, p[:], []int{efd.FD(), efd.FD()})
	wantErrno(t, err, syscall.EINVAL)
	many := make([]int, MaxMsgFDs+1)
	for i := range many {
		many[i] = efd.FD()
	}
	_, err = cl.Call(CmdDeviceGetInfo, p[:], many)
	wantErrno(t, err, syscall.EINVAL)
	if _, err := cl.GetInfo(); err != nil {
		t.Fatal("connection broken after refused fds:", err)
	}
}

// TestBrokenStreams sends what cannot be parsed: the server drops the client
// without a panic and without leaking descriptors.
func TestBrokenStreams(t *testing.T) {
	leakcheck.FDs(t)
	cases := map[string]func(cl *Client) error{
		"size below header": func(cl *Client) error {
			return cl.Send(Header{MsgID: 1, Command: CmdDeviceGetInfo, Size: 8}, make([]byte, 16), nil)
		},
		"size over max": func(cl *Client) error {
			return cl.Send(Header{MsgID: 1, Command: CmdRegionWrite, Size: 1 << 30}, make([]byte, 64), nil)
		},
		"bad type": func(cl *Client) error {
			return cl.Send(Header{MsgID: 1, Command: CmdDeviceGetInfo, Size: 32, Flags: 7}, make([]byte, 16), nil)
		},
		"truncated": func(cl *Client) error {
			if err := cl.Send(Header{MsgID: 1, Command: CmdRegionRead, Size: 64}, make([]byte, 10), nil); err != nil {
				return err
			}
			return unix.Shutdown(cl.fd, unix.SHUT_WR)
		},
		"too many fds": func(cl *Client) error {
			fds := make([]int, maxRecvFDs+8)
			for i := range fds {
				fds[i] = 0
			}
			var p [16]byte
			DeviceInfo{Argsz: 16}.Encode(p[:])
			return cl.Send(Header{MsgID: 1, Command: CmdDeviceGetInfo, Size: 32}, p[:], fds)
		},
	}
	// A healthy connection to another device must not notice anything.
	_, healthy := negotiated(t, newFakeDevice(t))
	for name, send := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if _, err := healthy.GetInfo(); err != nil {
					t.Fatal("other connection disturbed:", err)
				}
			}()
			dev := newFakeDevice(t)
			_, conn, cl := pair(t, dev, false, Options{})
			go func() {
				if err := send(cl); err != nil {
					t.Error(err)
				}
			}()
			err := conn.Step()
			for err == nil {
				err = conn.Step()
			}
			if !errors.Is(err, errStream) {
				t.Fatalf("Step: %v, want a broken stream", err)
			}
		})
	}
}

func TestStepOneMessage(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, false, Options{})
	if err := cl.Send(Header{MsgID: 7, Command: CmdVersion, Size: uint32(HeaderSize + len(qemuVersionPayload()))}, qemuVersionPayload(), nil); err != nil {
		t.Fatal(err)
	}
	var p [16]byte
	DeviceInfo{Argsz: 16}.Encode(p[:])
	if err := cl.Send(Header{MsgID: 8, Command: CmdDeviceGetInfo, Size: 32}, p[:], nil); err != nil {
		t.Fatal(err)
	}
	if !conn.negotiated {
		if err := conn.Step(); err != nil {
			t.Fatal(err)
		}
	}
	if !conn.negotiated {
		t.Fatal("VERSION not handled by one step")
	}
	r, err := cl.wait(7)
	if err != nil || r.hdr.Flags != FlagTypeReply {
		t.Fatalf("version reply %+v %v", r.hdr, err)
	}
	if err := conn.Step(); err != nil {
		t.Fatal(err)
	}
	r, err = cl.wait(8)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := DecodeDeviceInfo(r.payload); info.NumIRQs != 5 {
		t.Fatalf("info %+v", info)
	}
	// Orderly close at a message boundary is io.EOF.
	unix.Shutdown(cl.fd, unix.SHUT_WR)
	if err := conn.Step(); err == nil || errors.Is(err, errStream) {
		t.Fatalf("Step after close: %v, want EOF", err)
	}
}

func TestClientReplyTimeout(t *testing.T) {
	leakcheck.FDs(t)
	_, _, cl := pair(t, newFakeDevice(t), false, Options{}) // nobody steps the server
	cl.SetTimeout(50 * time.Millisecond)
	start := time.Now()
	if _, err := cl.GetInfo(); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("call to a silent server: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("timeout not honoured")
	}
}

func TestDisconnectCallsDevice(t *testing.T) {
	leakcheck.FDs(t)
	dev := newFakeDevice(t)
	_, conn, cl := pair(t, dev, false, Options{})
	done := make(chan error)
	go func() { done <- conn.Serve() }()
	if _, err := cl.Negotiate(nil); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the client left")
	}
	if c, d, _ := dev.counts(); c != 1 || d != 1 {
		t.Fatalf("connects %d disconnects %d", c, d)
	}
}
