package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"e1000e-vfu/tests/agentproto"
)

// consoleKeep is how much of the console is kept in memory for waits and
// failure dumps; everything also goes to the log file.
const consoleKeep = 512 << 10

// Console collects the guest's serial console: in memory (the last
// consoleKeep bytes) and in a log file.
type Console struct {
	mu     sync.Mutex
	buf    []byte
	total  int64 // bytes seen, so a wait can start at a position
	notify chan struct{}
	log    *os.File
	echo   io.Writer
	done   chan struct{}
}

func newConsole(conn net.Conn, logPath string, echo io.Writer) (*Console, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	c := &Console{notify: make(chan struct{}), log: f, echo: echo, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer f.Close()
		b := make([]byte, 32<<10)
		for {
			n, err := conn.Read(b)
			if n > 0 {
				c.add(b[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	return c, nil
}

func (c *Console) add(p []byte) {
	c.log.Write(p)
	if c.echo != nil {
		c.echo.Write(p)
	}
	c.mu.Lock()
	c.buf = append(c.buf, p...)
	if len(c.buf) > consoleKeep {
		c.buf = append(c.buf[:0], c.buf[len(c.buf)-consoleKeep/2:]...)
	}
	c.total += int64(len(p))
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
}

// Mark is a position in the console output to wait from.
func (c *Console) Mark() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Since returns the output after mark that is still in memory.
func (c *Console) Since(mark int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	skip := len(c.buf) - int(c.total-mark)
	if skip < 0 {
		skip = 0
	}
	if skip > len(c.buf) {
		skip = len(c.buf)
	}
	return string(c.buf[skip:])
}

// WaitFor waits until text appears after mark.
func (c *Console) WaitFor(ctx context.Context, mark int64, text string) error {
	for {
		c.mu.Lock()
		ch := c.notify
		c.mu.Unlock()
		if strings.Contains(c.Since(mark), text) {
			return nil
		}
		select {
		case <-ch:
		case <-c.done:
			if strings.Contains(c.Since(mark), text) {
				return nil
			}
			return fmt.Errorf("console closed before %q appeared", text)
		case <-ctx.Done():
			return fmt.Errorf("console: %q did not appear: %w", text, ctx.Err())
		}
	}
}

// Tail returns the last n bytes of the console.
func (c *Console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(tail(c.buf, n))
}

// Agent talks to the agent in the guest over the second serial port.
type Agent struct {
	conn    net.Conn
	mu      sync.Mutex // one request at a time
	nextID  atomic.Int64
	replies chan agentproto.Reply
	done    chan struct{}
}

func newAgent(conn net.Conn) *Agent {
	a := &Agent{conn: conn, replies: make(chan agentproto.Reply, 4), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 64<<10), agentproto.MaxLine+1024)
		for sc.Scan() {
			r, ok := parseReply(sc.Bytes())
			if !ok {
				continue // noise, or a garbled line whose caller times out
			}
			select {
			case a.replies <- r:
			case <-time.After(time.Minute):
				return // nobody reads replies any more
			}
		}
	}()
	return a
}

// parseReply finds an agent reply in a line from the agent port.
func parseReply(line []byte) (agentproto.Reply, bool) {
	i := bytes.Index(line, []byte(agentproto.Prefix))
	if i < 0 {
		return agentproto.Reply{}, false
	}
	var r agentproto.Reply
	if err := json.Unmarshal(line[i+len(agentproto.Prefix):], &r); err != nil {
		return agentproto.Reply{}, false
	}
	return r, true
}

// WaitReady waits for the agent's greeting.
func (a *Agent) WaitReady(ctx context.Context) error {
	for {
		select {
		case r := <-a.replies:
			if r.ID == 0 && r.Out == "ready" {
				return nil
			}
		case <-a.done:
			return fmt.Errorf("agent: port closed before the agent was ready")
		case <-ctx.Done():
			return fmt.Errorf("agent: not ready: %w", ctx.Err())
		}
	}
}

// Call sends one request and waits for its reply. The guest-side timeout is
// timeout; the host waits a little longer for the reply to travel.
func (a *Agent) Call(ctx context.Context, timeout time.Duration, cmd string, args ...string) (agentproto.Reply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.nextID.Add(1)
	req := agentproto.Request{ID: id, Cmd: cmd, Args: args, TimeoutMS: timeout.Milliseconds()}
	b, err := json.Marshal(req)
	if err != nil {
		return agentproto.Reply{}, err
	}
	a.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.conn.Write(append(b, '\n')); err != nil {
		return agentproto.Reply{}, fmt.Errorf("agent %s: %w", cmd, err)
	}
	wait := time.NewTimer(timeout + 15*time.Second)
	defer wait.Stop()
	for {
		select {
		case r := <-a.replies:
			if r.ID != id {
				continue // a late reply to an abandoned request
			}
			if !r.OK {
				return r, fmt.Errorf("agent %s %q: %s", cmd, args, r.Err)
			}
			return r, nil
		case <-a.done:
			return agentproto.Reply{}, fmt.Errorf("agent %s: port closed", cmd)
		case <-wait.C:
			return agentproto.Reply{}, fmt.Errorf("agent %s %q: no reply in %v", cmd, args, timeout+15*time.Second)
		case <-ctx.Done():
			return agentproto.Reply{}, fmt.Errorf("agent %s: %w", cmd, ctx.Err())
		}
	}
}

// Sh runs a shell command line in the guest and returns its output; a
// non-zero exit status is an error carrying the output.
func (a *Agent) Sh(ctx context.Context, timeout time.Duration, cmdline string) (string, error) {
	r, err := a.Call(ctx, timeout, "sh", cmdline)
	if err != nil {
		return r.Out, err
	}
	if r.Code != 0 {
		return r.Out, fmt.Errorf("guest: %q exited %d: %s", cmdline, r.Code, strings.TrimSpace(r.Out))
	}
	return r.Out, nil
}
