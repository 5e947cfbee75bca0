// Package agentproto is the line protocol between the integration harness
// and the agent inside the test guest, shared by both ends.
//
// One JSON line each way per request, on the guest's second serial port:
//
//	host  → guest: {"id":7,"cmd":"sh","args":["ip link"],"timeout_ms":5000}
//	guest → host:  @@agent {"id":7,"ok":true,"code":0,"out":"...","data":{...}}
//
// Every reply line starts with Prefix, so the host can pick replies out of
// anything else on the port. On start the agent sends an unsolicited reply
// with id 0 and out "ready". Requests are handled one at a time, in order.
//
// Commands:
//
//	sh CMDLINE            run /bin/sh -c CMDLINE; code is its exit status
//	read PATH             data.bytes: the file's bytes (base64 in JSON)
//	send ADDR SIZE SEED   dial TCP ADDR, send SIZE bytes of Stream(SEED)
//	recv ADDR             dial TCP ADDR, read to EOF
//	udpecho ADDR N SIZE   N datagrams to ADDR, count intact echoes
//	udprecv PORT SECONDS  receive numbered datagrams on PORT for SECONDS
//	                      (data: received, first, last, lost, max_gap_ms,
//	                      gap_end_ms, tail_ms; see the agent)
//	ethtool IFACE [FEATURE on|off]  offloads rx, tx, sg, tso (data: state)
//	selftest IFACE        the driver's offline self-test (ethtool -t IFACE
//	                      offline); data: names, results (one per test,
//	                      0 = pass), failed
//	mcast IFACE GROUP:PORT N   join GROUP on IFACE, wait for N datagrams
//	wait-link IFACE up|down
//
// send and recv report data.bytes, data.sha256 and data.seconds.
package agentproto

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// Prefix starts every reply line.
const Prefix = "@@agent "

// MaxLine bounds a line in either direction.
const MaxLine = 4 << 20

// Request is one command from the host.
type Request struct {
	ID        int64    `json:"id"`
	Cmd       string   `json:"cmd"`
	Args      []string `json:"args,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
}

// Reply is the agent's answer to one Request. OK means the command ran;
// for sh, Code is the exit status.
type Reply struct {
	ID   int64          `json:"id"`
	OK   bool           `json:"ok"`
	Code int            `json:"code"`
	Out  string         `json:"out,omitempty"`
	Err  string         `json:"err,omitempty"`
	Data map[string]any `json:"data,omitempty"`
}

// Stream is the deterministic byte stream both ends can produce from a seed,
// so that a transfer is checked end to end without storing it.
func Stream(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}
