package harness

import "net"

// NewConsole and NewAgent wrap the serial ports of a QEMU the harness did
// not start (one that libvirt starts, whose chardevs connect to sockets a
// test listens on): the console logged to logPath, the agent's protocol
// on the second port.
func NewConsole(conn net.Conn, logPath string) (*Console, error) {
	return newConsole(conn, logPath, nil)
}

func NewAgent(conn net.Conn) *Agent { return newAgent(conn) }
