package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"e1000e-vfu/tests/agentproto"
)

// A request begun on one agent port is answered on another (the guest
// migrated in between); the new port continues the numbering, so its own
// requests cannot be mistaken for the one in flight.
func TestAgentBeginAwaitAcrossPorts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srcHost, srcGuest := net.Pipe()
	dstHost, dstGuest := net.Pipe()
	src, dst := newAgent(srcHost), newAgent(dstHost)
	defer srcHost.Close()
	defer dstHost.Close()

	reqs := make(chan agentproto.Request, 1)
	go func() {
		line, err := bufio.NewReader(srcGuest).ReadBytes('\n')
		var r agentproto.Request
		if err == nil && json.Unmarshal(line, &r) == nil {
			reqs <- r
		}
		close(reqs)
	}()
	id, err := src.Begin(time.Minute, "recv", "10.0.2.2:1")
	if err != nil {
		t.Fatal(err)
	}
	req := <-reqs
	if req.ID != id || req.Cmd != "recv" || req.TimeoutMS != 60000 {
		t.Fatalf("guest got %+v, want id %d recv with 60 s", req, id)
	}

	dst.FollowIDs(src)
	go func() {
		w := func(r agentproto.Reply) {
			b, _ := json.Marshal(r)
			dstGuest.Write(append(append([]byte("noise\n"+agentproto.Prefix), b...), '\n'))
		}
		w(agentproto.Reply{ID: id + 1, OK: true}) // not ours
		w(agentproto.Reply{ID: id, OK: true, Data: map[string]any{"bytes": 5.0}})
	}()
	rp, err := dst.Await(ctx, id, 5*time.Second)
	if err != nil || rp.Data["bytes"] != 5.0 {
		t.Fatalf("reply %+v, %v", rp, err)
	}
	if next := dst.nextID.Load() + 1; next <= id {
		t.Errorf("the destination's next id %d reuses the source's %d", next, id)
	}

	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := dst.Await(short, id+5, time.Minute); err == nil {
		t.Error("Await returned for a reply that never came")
	}
	dstGuest.Close()
	if _, err := dst.Await(ctx, id+6, time.Minute); err == nil {
		t.Error("Await on a closed port succeeded")
	}
}

func TestPCIDeviceMapped(t *testing.T) {
	var d PCIDevice
	if d.MemoryBARsMapped() {
		t.Error("a device without BARs counts as mapped")
	}
	d.Regions = []PCIRegion{{BAR: 0, Type: "memory", Address: 0xfeb80000}, {BAR: 2, Type: "io", Address: PCIUnmapped}}
	if !d.MemoryBARsMapped() {
		t.Error("mapped memory BAR not seen")
	}
	d.Regions = append(d.Regions, PCIRegion{BAR: 3, Type: "memory", Address: PCIUnmapped})
	if d.MemoryBARsMapped() {
		t.Error("an unmapped memory BAR was missed")
	}
}
