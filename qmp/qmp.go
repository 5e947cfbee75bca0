// Package qmp is a small client for the QEMU Machine Protocol: connect to a
// QMP socket, leave capabilities negotiation, execute commands and collect
// the events that arrive in between.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// MaxLine bounds one message read from QEMU.
const MaxLine = 4 << 20

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// Error is a QMP error reply.
type Error struct {
	Class, Desc string
}

func (e *Error) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

// Client is one QMP connection. Its methods are safe for concurrent use; one
// command is in flight at a time.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	events []Event
}

// Dial connects to the QMP socket at path and negotiates capabilities.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	line, err := c.readLine(ctx)
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err == nil && greeting.QMP == nil {
		err = errors.New("no QMP greeting")
	}
	if err == nil {
		err = c.Execute(ctx, "qmp_capabilities", nil, nil)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) readLine(ctx context.Context) ([]byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetReadDeadline(dl)
	} else {
		c.conn.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var buf []byte
	for {
		part, err := c.r.ReadSlice('\n')
		buf = append(buf, part...)
		if len(buf) > MaxLine {
			return nil, fmt.Errorf("message longer than %d bytes", MaxLine)
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
	}
}

// Execute runs cmd with args (nil for none) and decodes the reply's return
// value into result (nil to ignore it). Events that arrive before the reply
// are kept for Events.
func (c *Client) Execute(ctx context.Context, cmd string, args any, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	msg, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	if _, err := c.conn.Write(append(msg, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := c.readLine(ctx)
		if err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var rep struct {
			Event  string          `json:"event"`
			Data   json.RawMessage `json:"data"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &rep); err != nil {
			return fmt.Errorf("qmp %s: bad reply: %w", cmd, err)
		}
		switch {
		case rep.Event != "":
			if len(c.events) < 1024 {
				c.events = append(c.events, Event{Name: rep.Event, Data: rep.Data})
			}
		case rep.Error != nil:
			return &Error{Class: rep.Error.Class, Desc: rep.Error.Desc}
		case rep.Return != nil:
			if result == nil {
				return nil
			}
			if err := json.Unmarshal(rep.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decoding the reply: %w", cmd, err)
			}
			return nil
		default:
			return fmt.Errorf("qmp %s: reply without return or error", cmd)
		}
	}
}

// Events returns and forgets the events received so far (at most 1024 are
// kept between calls).
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events
	c.events = nil
	return ev
}
