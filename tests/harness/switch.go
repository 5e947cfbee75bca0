package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Switch joins a TAP device in a namespace to any number of stream-backend
// sockets (QEMU's length-prefixed frames), as a learning Ethernet switch:
// a frame from a port teaches the switch where its source MAC lives; frames
// from the TAP go to the port that last sent from their destination MAC,
// or to every port when it is unknown or a broadcast. A live migration
// attaches the destination server's socket beside the source's; once the
// guest sends through the destination, its traffic follows it there, as a
// physical switch learns a moved host.
type Switch struct {
	tap   *os.File
	mu    sync.Mutex
	ports map[*swPort]struct{}
	where map[[6]byte]*swPort
	wg    sync.WaitGroup
	once  sync.Once
	done  chan struct{}
}

type swPort struct {
	conn net.Conn
	wmu  sync.Mutex
}

// StartSwitch opens tapName in ns; Attach adds ports.
func StartSwitch(ns *NetNS, tapName string) (*Switch, error) {
	var tap *os.File
	err := ns.Do(func() (err error) {
		tap, err = openTAP(tapName)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &Switch{tap: tap, ports: map[*swPort]struct{}{}, where: map[[6]byte]*swPort{}, done: make(chan struct{})}
	s.wg.Add(1)
	go s.fromTAP()
	return s, nil
}

// Attach connects to a stream socket at path (retrying until timeout, as the
// server may still be starting) and adds it as a port. A port whose
// connection fails is dropped; the switch goes on.
func (s *Switch) Attach(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	for {
		var err error
		conn, err = net.Dial("unix", path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("switch: connecting to %s: %w", path, err)
		}
		select {
		case <-s.done:
			return errors.New("switch: closed")
		case <-time.After(50 * time.Millisecond):
		}
	}
	p := &swPort{conn: conn}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		conn.Close()
		return errors.New("switch: closed")
	default:
	}
	s.ports[p] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go s.fromPort(p)
	return nil
}

// Ports is the number of attached ports still connected.
func (s *Switch) Ports() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ports)
}

func (s *Switch) drop(p *swPort) {
	s.mu.Lock()
	delete(s.ports, p)
	for mac, q := range s.where {
		if q == p {
			delete(s.where, mac)
		}
	}
	s.mu.Unlock()
	p.conn.Close()
}

func (s *Switch) fromPort(p *swPort) {
	defer s.wg.Done()
	defer s.drop(p)
	b := make([]byte, maxFrame)
	for {
		frame, err := readFrame(p.conn, b)
		if err != nil {
			return
		}
		if len(frame) >= 12 && frame[6]&1 == 0 {
			var src [6]byte
			copy(src[:], frame[6:12])
			s.mu.Lock()
			s.where[src] = p
			s.mu.Unlock()
		}
		s.tap.Write(frame) // the TAP refuses what its kernel would drop; go on
	}
}

func (s *Switch) fromTAP() {
	defer s.wg.Done()
	b := make([]byte, 4+maxFrame)
	var targets []*swPort
	for {
		n, err := s.tap.Read(b[4:])
		if err != nil {
			return
		}
		if n < 14 {
			continue
		}
		binary.BigEndian.PutUint32(b, uint32(n))
		var dst [6]byte
		copy(dst[:], b[4:10])
		targets = targets[:0]
		s.mu.Lock()
		if p, ok := s.where[dst]; ok && dst[0]&1 == 0 {
			targets = append(targets, p)
		} else {
			for p := range s.ports {
				targets = append(targets, p)
			}
		}
		s.mu.Unlock()
		for _, p := range targets {
			p.wmu.Lock()
			p.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, err := p.conn.Write(b[:4+n])
			p.wmu.Unlock()
			if err != nil {
				s.drop(p)
			}
		}
	}
}

// Close stops the switch and closes the TAP and every port.
func (s *Switch) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.done)
		for p := range s.ports {
			p.conn.Close()
		}
		s.mu.Unlock()
		s.tap.Close()
	})
	s.wg.Wait()
}
