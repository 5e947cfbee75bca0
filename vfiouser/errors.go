package vfiouser

import (
	"errors"
	"syscall"
)

// errnoOf is the one place that turns a handler's error into the errno of
// the reply: the first syscall.Errno in the chain, else EINVAL.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	return syscall.EINVAL
}

// ReplyError is a client-side error for a reply that carried the error flag.
type ReplyError struct {
	Command Command
	Errno   syscall.Errno
}

func (e *ReplyError) Error() string {
	return e.Command.String() + ": server replied " + e.Errno.Error()
}

// Unwrap lets errors.Is(err, syscall.EINVAL) and errors.As work on replies.
func (e *ReplyError) Unwrap() error { return e.Errno }
