package harness

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"e1000e-vfu/qmp"
)

// DialQMP connects to a QEMU's QMP socket with qmp.Dial, retrying until ctx
// ends while the socket is not there yet or nobody listens on it: QEMU
// creates it a moment after it starts. Any other failure is returned at
// once.
func DialQMP(ctx context.Context, path string) (*qmp.Client, error) {
	// last is the latest reason the socket was not there yet: when the
	// deadline ends a dial half-way, that, not the deadline, says why.
	var last error
	for {
		c, err := qmp.Dial(ctx, path)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil && last != nil {
			err = last
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("harness: QEMU's QMP socket: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
