// Command guestagent runs inside the test guest and executes the host's
// requests, one at a time, on a dedicated serial port. The protocol is
// described in package agentproto.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"e1000e-vfu/tests/agentproto"
)

type (
	Request = agentproto.Request
	Reply   = agentproto.Reply
)

func main() {
	port := flag.String("port", "/dev/ttyS1", "serial port that carries the protocol")
	flag.Parse()
	f, err := os.OpenFile(*port, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
	if err := makeRaw(int(f.Fd())); err != nil {
		fmt.Fprintln(os.Stderr, "agent: raw mode:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "agent: serving on", *port)
	serve(f, f)
}

// makeRaw turns off echo, line editing and newline translation so that the
// port carries our lines byte for byte.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

func serve(r io.Reader, w io.Writer) {
	out := bufio.NewWriter(w)
	send := func(rep Reply) {
		b, _ := json.Marshal(rep)
		out.WriteString("\n" + agentproto.Prefix)
		out.Write(b)
		out.WriteString("\n")
		out.Flush()
	}
	send(Reply{OK: true, Out: "ready"})
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), agentproto.MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // noise, or the host's empty keep-alive
		}
		req, err := decodeRequest(line)
		if err != nil {
			send(Reply{Err: err.Error()})
			continue
		}
		send(run(req))
	}
	fmt.Fprintln(os.Stderr, "agent: input ended:", sc.Err())
}

// decodeRequest parses one request line, refusing what run could not use.
func decodeRequest(line []byte) (Request, error) {
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Request{}, fmt.Errorf("bad request: %w", err)
	}
	if req.Cmd == "" {
		return Request{}, fmt.Errorf("bad request: no command")
	}
	if len(req.Args) > 16 {
		return Request{}, fmt.Errorf("bad request: %d arguments (at most 16)", len(req.Args))
	}
	return req, nil
}

// timeout is the request's deadline, 60 s when none is given, at most 30 min.
func timeout(r Request) time.Duration {
	d := time.Duration(r.TimeoutMS) * time.Millisecond
	if d <= 0 {
		d = time.Minute
	}
	return min(d, 30*time.Minute)
}
