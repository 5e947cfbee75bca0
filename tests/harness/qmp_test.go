package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDialQMPGivesUpOnAMissingSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := DialQMP(ctx, filepath.Join(t.TempDir(), "absent.sock"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("dial of a missing socket: %v", err)
	}
}

// A socket that answers, but not with QMP, is not worth waiting for.
func TestDialQMPDoesNotRetryAPeerThatIsNotQMP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, `{"hello":1}`)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = DialQMP(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "no QMP greeting") || ctx.Err() != nil {
		t.Errorf("err = %v (context: %v)", err, ctx.Err())
	}
}
