// Package qmp is a small client for the QEMU Machine Protocol: connect to a
// QMP socket, leave capabilities negotiation, execute commands one at a
// time, and wait for the asynchronous events QEMU sends in between.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// MaxLine bounds one message read from QEMU.
const MaxLine = 4 << 20

// MaxEvents bounds the events kept for WaitEvent. QEMU sends events nobody
// waits for (RTC_CHANGE, MIGRATION_PASS, ...) for as long as it runs; when
// the buffer is full the oldest is dropped, so the event a caller is about
// to wait for is never the one lost.
const MaxEvents = 256

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// Error is a QMP error reply. Execute returns it wrapped with the command's
// name; errors.As finds it.
type Error struct {
	Class, Desc string
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Client is one QMP connection. Its methods are safe for concurrent use; one
// command is in flight at a time.
type Client struct {
	conn net.Conn
	cmd  sync.Mutex // one command in flight; guards nextID
	// nextID numbers requests. QEMU copies a request's "id" into its
	// reply, so a reply that comes after its command was given up (its
	// context ended) is recognised and dropped instead of being taken for
	// the next command's.
	nextID uint64

	mu      sync.Mutex
	pending *pending // the command waiting for its reply, if any
	events  []Event
	arrived chan struct{} // closed and replaced when an event arrives

	done chan struct{} // closed when the reader stops
	err  error         // why the reader stopped; read after done is closed
}

type pending struct {
	id    string
	reply chan message // buffered: the reader never blocks on it
}

// message is any line QEMU sends: the greeting, a reply or an event.
type message struct {
	QMP    json.RawMessage `json:"QMP"`
	ID     json.RawMessage `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// Dial connects to the QMP socket at path and negotiates capabilities. It
// does not retry: a socket that is not there yet is an error.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	c := &Client{conn: conn, arrived: make(chan struct{}), done: make(chan struct{})}
	greeting := make(chan error, 1)
	go c.read(greeting)
	select {
	case err = <-greeting:
	case <-ctx.Done():
		err = fmt.Errorf("no greeting: %w", ctx.Err())
	}
	if err == nil {
		err = c.Execute(ctx, "qmp_capabilities", nil, nil)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return c, nil
}

// Close closes the connection and waits for its reader to stop.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		return nil // the reader closed it: QEMU had gone or sent garbage
	}
	return err
}

// read reads QEMU's messages until the connection ends: the greeting first,
// reported on greeting, then replies for the pending command and events
// for the buffer.
func (c *Client) read(greeting chan<- error) {
	first := true
	sc := bufio.NewScanner(c.conn)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	var err error
	for sc.Scan() {
		var m message
		if err = json.Unmarshal(sc.Bytes(), &m); err != nil {
			err = fmt.Errorf("bad message from QEMU: %w", err)
			break
		}
		if first {
			if m.QMP == nil {
				err = errors.New("no QMP greeting")
				break
			}
			first = false
			greeting <- nil
			continue
		}
		if m.Event != "" {
			c.addEvent(Event{Name: m.Event, Data: m.Data})
		} else {
			c.deliver(m)
		}
	}
	if err == nil {
		err = sc.Err()
	}
	if errors.Is(err, bufio.ErrTooLong) {
		err = fmt.Errorf("message longer than %d bytes", MaxLine)
	}
	if err == nil {
		err = errors.New("QEMU closed the connection")
	}
	// A reader that stopped on bad data leaves QEMU talking to nobody:
	// close, so that it sees the end too.
	c.conn.Close()
	c.err = err
	close(c.done)
	if first {
		greeting <- err
	}
}

func (c *Client) addEvent(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) == MaxEvents {
		c.events = append(c.events[:0], c.events[1:]...)
	}
	c.events = append(c.events, ev)
	close(c.arrived)
	c.arrived = make(chan struct{})
}

// deliver hands a reply to the command waiting for it. A reply with
// another id belongs to a command given up and is dropped; one without an
// id (a peer that does not copy ids) goes to the waiting command.
func (c *Client) deliver(m message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending
	if p == nil || (m.ID != nil && string(m.ID) != p.id) {
		return
	}
	c.pending = nil
	p.reply <- m
}

// Execute runs cmd with args (nil for none) and decodes the reply's return
// value into result: nil ignores it, a *json.RawMessage keeps it as it came.
// A QMP error reply is returned as an *Error. When ctx ends first the
// command may still run in QEMU; its late reply is dropped.
func (c *Client) Execute(ctx context.Context, cmd string, args any, result any) error {
	c.cmd.Lock()
	defer c.cmd.Unlock()
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	req := map[string]any{"execute": cmd, "id": c.nextID}
	if args != nil {
		req["arguments"] = args
	}
	msg, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: arguments: %w", cmd, err)
	}
	p := &pending{id: id, reply: make(chan message, 1)}
	c.mu.Lock()
	c.pending = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.pending == p {
			c.pending = nil
		}
		c.mu.Unlock()
	}()
	if err := c.write(ctx, msg); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	var m message
	select {
	case m = <-p.reply:
	case <-c.done:
		// QEMU may answer and then close (quit): the reply counts.
		select {
		case m = <-p.reply:
		default:
			return fmt.Errorf("qmp %s: %w", cmd, c.err)
		}
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
	switch {
	case m.Error != nil:
		return fmt.Errorf("qmp %s: %w", cmd, &Error{Class: m.Error.Class, Desc: m.Error.Desc})
	case m.Return == nil:
		return fmt.Errorf("qmp %s: reply without return or error", cmd)
	case result == nil:
		return nil
	}
	if err := json.Unmarshal(m.Return, result); err != nil {
		return fmt.Errorf("qmp %s: decoding the reply: %w", cmd, err)
	}
	return nil
}

// write sends one request line, giving up when ctx ends. The caller holds
// c.cmd, so no other write runs.
func (c *Client) write(ctx context.Context, msg []byte) error {
	dl, _ := ctx.Deadline() // zero without one: clears an earlier command's
	c.conn.SetWriteDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	_, err := c.conn.Write(append(msg, '\n'))
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// WaitEvent waits for an event named name and returns it. Events are
// consumed in the order they arrived, including those that came before the
// call (up to MaxEvents of them): the ones ahead of the match are
// discarded. A caller that expects an event from a command should make
// sure an older one of that name cannot be in the buffer.
func (c *Client) WaitEvent(ctx context.Context, name string) (Event, error) {
	for {
		c.mu.Lock()
		for i, ev := range c.events {
			if ev.Name == name {
				c.events = append(c.events[:0], c.events[i+1:]...)
				c.mu.Unlock()
				return ev, nil
			}
		}
		c.events = c.events[:0]
		arrived := c.arrived
		c.mu.Unlock()
		select {
		case <-arrived:
		case <-c.done:
			// The reader may have buffered the event just before it stopped.
			c.mu.Lock()
			more := len(c.events) > 0
			c.mu.Unlock()
			if !more {
				return Event{}, fmt.Errorf("qmp: waiting for %s: %w", name, c.err)
			}
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: waiting for %s: %w", name, ctx.Err())
		}
	}
}
