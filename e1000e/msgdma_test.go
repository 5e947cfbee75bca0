package e1000e

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"e1000e-vfu/device"
)

// Guest memory reached by messages to the client (vfio-user memory shared
// without fd): the datapath touches it only from the worker and never with
// n.mu held, so register accesses are answered while a message waits for
// its reply.

// msgMem is guest memory that says every access is a message. It records
// accesses made with n.mu held, and can hold each access until the test
// lets it go (a reply that has not come yet).
type msgMem struct {
	*dpMem
	n *NIC

	mu        sync.Mutex
	accesses  int
	underLock int
	// With gate set, an access announces itself on entered and waits
	// for a token on gate, once pass accesses have gone through.
	gate, entered chan struct{}
	pass          int
}

func (m *msgMem) Messaged() bool { return true }

func (m *msgMem) note() {
	held := !m.n.mu.TryLock()
	if !held {
		m.n.mu.Unlock()
	}
	m.mu.Lock()
	m.accesses++
	if held {
		m.underLock++
	}
	gate, entered := m.gate, m.entered
	if gate != nil && m.pass > 0 {
		m.pass--
		gate = nil
	}
	m.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		<-gate
	}
}

func (m *msgMem) Read(addr uint64, p []byte) error {
	m.note()
	return m.dpMem.Read(addr, p)
}

func (m *msgMem) Write(addr uint64, p []byte) error {
	m.note()
	return m.dpMem.Write(addr, p)
}

func (m *msgMem) counts() (accesses, underLock int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accesses, m.underLock
}

// setGate makes later accesses wait for the test (or stops that).
func (m *msgMem) setGate(on bool) { m.setGateAfter(on, 0) }

// setGateAfter makes accesses after the next pass wait for the test.
func (m *msgMem) setGateAfter(on bool, pass int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pass = pass
	if on {
		m.gate, m.entered = make(chan struct{}), make(chan struct{}, 1)
	} else {
		m.gate, m.entered = nil, nil
	}
}

// useMsgMem gives the rig's NIC its memory as messaged memory.
func useMsgMem(r *dpRig) *msgMem {
	m := &msgMem{dpMem: r.mem, n: r.n}
	r.n.mu.Lock()
	r.n.setMem(m)
	r.n.mu.Unlock()
	return m
}

func rxTestFrame(seq byte) []byte {
	f := append([]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x08, 0x00}, bytes.Repeat([]byte{seq}, 100)...)
	return f
}

// No register access, no frame from the backend touches messaged memory
// itself, nor does the worker with n.mu held; all of it is done by the
// worker.
func TestMessagedMemoryOnlyFromWorkerWithoutLock(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	r.pushRX(8)
	m := useMsgMem(r)

	frame := bytes.Repeat([]byte{0x5a}, 100)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	for i := byte(0); i < 3; i++ {
		r.n.Receive(rxTestFrame(i))
	}
	if a, _ := m.counts(); a != 0 {
		t.Fatalf("%d guest memory accesses from the register write or Receive", a)
	}
	finish(t, h, 10)
	a, under := m.counts()
	if a == 0 {
		t.Fatal("the worker did not touch guest memory")
	}
	if under != 0 {
		t.Fatalf("%d of %d guest memory messages made with the NIC's lock held", under, a)
	}
	if got := r.be.take(); len(got) != 1 || !bytes.Equal(got[0], frame) {
		t.Fatalf("transmit: %d frames", len(got))
	}
	if hd := r.rd(RDH0); hd != 3 {
		t.Fatalf("RDH %d, want 3 frames received", hd)
	}
	for i := uint32(0); i < 3; i++ {
		if got := r.mem.get(r.rxBufAddr(i), 114); !bytes.Equal(got, rxTestFrame(byte(i))) {
			t.Fatalf("frame %d not in its buffer", i)
		}
	}
}

// While a message waits for its reply, register accesses are answered;
// the frame is written once the reply comes.
func TestRegisterReadWhileMessagePending(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	r.pushRX(8)
	m := useMsgMem(r)
	m.setGate(true)
	r.n.Receive(rxTestFrame(7)) // the real worker picks it up
	select {
	case <-m.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker sent no message")
	}
	m.mu.Lock()
	gate := m.gate
	m.mu.Unlock()
	// openGate lets the waiting message and every later one through.
	openGate := func() {
		m.setGate(false)
		close(gate)
	}
	answered := make(chan uint32, 1)
	go func() { answered <- r.rd(STATUS) }()
	select {
	case st := <-answered:
		if st&STATUS_LU == 0 {
			t.Errorf("STATUS %#x", st)
		}
	case <-time.After(10 * time.Second):
		openGate()
		t.Fatal("a register read was not answered while a message waited for its reply")
	}
	openGate()
	deadline := time.Now().Add(10 * time.Second)
	for r.rd(RDH0) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the frame was not delivered after the reply")
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.mem.get(r.rxBufAddr(0), 114); !bytes.Equal(got, rxTestFrame(7)) {
		t.Fatal("frame not in its buffer")
	}
}

// gatedStep runs one worker turn on a goroutine of its own and returns once
// its first guest memory message waits; release lets it (and every later
// message) through and waits for the turn to end.
func gatedStep(t *testing.T, h *handWorker, m *msgMem) (release func()) {
	t.Helper()
	return gatedStepAfter(t, h, m, 0)
}

// gatedStepAfter is gatedStep stopping at the message after the next pass.
func gatedStepAfter(t *testing.T, h *handWorker, m *msgMem, pass int) (release func()) {
	t.Helper()
	m.setGateAfter(true, pass)
	m.mu.Lock()
	gate, entered := m.gate, m.entered
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.step()
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker sent no message")
	}
	if !m.n.mu.TryLock() {
		m.setGate(false)
		close(gate)
		<-done
		t.Fatal("the NIC's lock is held while a message waits for its reply")
	}
	m.n.mu.Unlock()
	return func() {
		m.setGate(false)
		close(gate)
		<-done
	}
}

// Quiesce while a receive message waits: the frame is not committed (RDH
// stays, the frame stays in the FIFO the state carries), nothing more is
// written; Resume writes it once.
func TestMessagedRXQuiesceMidFrame(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	r.pushRX(8)
	m := useMsgMem(r)
	r.n.Receive(rxTestFrame(1))
	release := gatedStep(t, h, m)
	r.n.Quiesce()
	before, _ := m.counts()
	release()
	if after, _ := m.counts(); after != before {
		t.Fatalf("%d guest memory messages after Quiesce", after-before)
	}
	if hd := r.rd(RDH0); hd != 0 {
		t.Fatalf("RDH %d: a frame stopped half way was committed", hd)
	}
	r.n.mu.Lock()
	fifo := r.n.saveRXFIFO()
	r.n.mu.Unlock()
	if len(fifo.Frames) != 1 || !bytes.Equal(fifo.Frames[0], rxTestFrame(1)) {
		t.Fatalf("receive FIFO of %d frames, want the one in flight", len(fifo.Frames))
	}
	r.n.Resume()
	finish(t, h, 10)
	if hd := r.rd(RDH0); hd != 1 {
		t.Fatalf("RDH %d after Resume, want 1", hd)
	}
	if got := r.mem.get(r.rxBufAddr(0), 114); !bytes.Equal(got, rxTestFrame(1)) {
		t.Fatal("frame not in its buffer after Resume")
	}
	if _, under := m.counts(); under != 0 {
		t.Fatalf("%d messages with the lock held", under)
	}
}

// A reset while a transmit message waits: the engine stops without
// touching the reset ring; nothing is sent.
func TestMessagedTXResetMidPacket(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x11}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	release := gatedStep(t, h, m)
	r.w(CTRL, CTRL_RST)
	release()
	if got := r.be.take(); len(got) != 0 {
		t.Fatalf("%d frames sent for a packet read across a reset", len(got))
	}
	if hd, tl := r.rd(TDH0), r.rd(TDT0); hd != 0 || tl != 0 {
		t.Fatalf("TDH %d TDT %d after reset", hd, tl)
	}
}

// Quiesce while a transmit message waits: the packet is not sent and TDH
// stays at it; Resume sends it once.
func TestMessagedTXQuiesceMidPacket(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x22}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txDataDesc(dpTxBuf, 40, txdCmdRS, 0, 0), txDataDesc(dpTxBuf+40, 40, txdCmdEOP|txdCmdRS, 0, 0))
	release := gatedStep(t, h, m)
	r.n.Quiesce()
	release()
	if got := r.be.take(); len(got) != 0 {
		t.Fatalf("%d frames sent after Quiesce", len(got))
	}
	if hd := r.rd(TDH0); hd != 0 {
		t.Fatalf("TDH %d: the packet in flight was consumed", hd)
	}
	r.n.Resume()
	finish(t, h, 10)
	if got := r.be.take(); len(got) != 1 || !bytes.Equal(got[0], frame) {
		t.Fatalf("after Resume %d frames, want the packet once", len(got))
	}
	if hd := r.rd(TDH0); hd != 2 {
		t.Fatalf("TDH %d after Resume, want 2", hd)
	}
}

// A state saved while a step's messages wait holds the offload context as
// it was at TDH, not the one the step's own context descriptor has just
// loaded: the step's descriptors are in flight and are read again.
func TestMessagedTXStateMidPacket(t *testing.T) {
	r := newRig(t, device.IRQModeMSIX, Config{})
	h := useHandWorker(r.n)
	m := useMsgMem(r)
	frame := bytes.Repeat([]byte{0x33}, 80)
	r.mem.put(dpTxBuf, frame)
	r.pushTX(txContextDesc(txContext{ipcss: 14, mss: 999}, 0), txDataDesc(dpTxBuf, len(frame), txdCmdEOP|txdCmdRS, 0, 0))
	// The rig writes every descriptor back (IVAR): the context
	// descriptor is read (let through), then its write-back waits, with
	// the new context loaded and TDH still at it.
	release := gatedStepAfter(t, h, m, 1)
	r.n.Quiesce()
	r.n.mu.Lock()
	ctx := r.n.saveTXContext()
	in, ok := r.n.saveTXInflight()
	r.n.mu.Unlock()
	release()
	if ctx.MSS != 0 || ctx.IPCSS != 0 {
		t.Errorf("saved context %+v: the in-flight packet's own context leaked in", ctx)
	}
	if !ok || in.Head != 0 || in.Count != 2 {
		t.Errorf("in flight %+v, want both descriptors from 0", in)
	}
	r.n.Resume()
	finish(t, h, 10)
	if got := r.be.take(); len(got) != 1 {
		t.Fatalf("after Resume %d frames, want 1", len(got))
	}
	r.n.mu.Lock()
	mss := r.n.tx.ctx.mss
	r.n.mu.Unlock()
	if mss != 999 {
		t.Errorf("context MSS %d after the packet, want 999", mss)
	}
}
