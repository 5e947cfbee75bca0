package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// MaxReply bounds one reply line a client reads.
const MaxReply = 1 << 20

// Call sends req to the control socket at path and returns the reply's
// result. An error reply becomes an error carrying the server's message.
// Without a deadline on ctx, the call gives up after 10 seconds.
func Call(ctx context.Context, path string, req Request) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	line, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	r := bufio.NewReaderSize(c, 4096)
	var buf []byte
	for {
		part, err := r.ReadSlice('\n')
		buf = append(buf, part...)
		if len(buf) > MaxReply {
			return nil, fmt.Errorf("control socket: reply longer than %d bytes", MaxReply)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("control socket: reading the reply: %w", err)
		}
	}
	var rep struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(buf, &rep); err != nil {
		return nil, fmt.Errorf("control socket: bad reply: %w", err)
	}
	if !rep.OK {
		return nil, errors.New(rep.Error)
	}
	return rep.Result, nil
}
