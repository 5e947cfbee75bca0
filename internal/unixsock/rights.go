package unixsock

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Rights returns the descriptors that the SCM_RIGHTS control messages in
// oob (from a recvmsg) carry, in order; other control messages are
// ignored. When a message of rights cannot be read, it closes the
// descriptors it had already taken and returns none. (A buffer whose
// headers cannot be parsed at all returns none and closes nothing; the
// kernel does not produce one, even when it truncates.)
func Rights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %v", err)
	}
	var fds []int
	for _, cm := range msgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		r, err := unix.ParseUnixRights(&cm)
		if err != nil {
			CloseFDs(fds)
			return nil, fmt.Errorf("rights: %v", err)
		}
		fds = append(fds, r...)
	}
	return fds, nil
}

// CloseFDs closes every descriptor of fds that is not negative (-1 marks
// one already taken).
func CloseFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
