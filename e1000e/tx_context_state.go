package e1000e

import "fmt"

// The tx-context section: the offload context of the last context
// descriptor.

// txContextState is txContext in the stream, field by field.
type txContextState struct {
	IPCSS  int  `msgpack:"ipcss,omitempty"`
	IPCSO  int  `msgpack:"ipcso,omitempty"`
	IPCSE  int  `msgpack:"ipcse,omitempty"`
	TUCSS  int  `msgpack:"tucss,omitempty"`
	TUCSO  int  `msgpack:"tucso,omitempty"`
	TUCSE  int  `msgpack:"tucse,omitempty"`
	PayLen int  `msgpack:"paylen,omitempty"`
	HdrLen int  `msgpack:"hdrlen,omitempty"`
	MSS    int  `msgpack:"mss,omitempty"`
	TSE    bool `msgpack:"tse,omitempty"`
	IPv4   bool `msgpack:"ipv4,omitempty"`
	TCP    bool `msgpack:"tcp,omitempty"`
}

// saveTXContext saves the context as it stands at TDH. Called with n.mu
// held.
func (n *NIC) saveTXContext() *txContextState {
	c := &n.tx.ctx
	return &txContextState{
		IPCSS: c.ipcss, IPCSO: c.ipcso, IPCSE: c.ipcse,
		TUCSS: c.tucss, TUCSO: c.tucso, TUCSE: c.tucse,
		PayLen: c.payLen, HdrLen: c.hdrLen, MSS: c.mss,
		TSE: c.tse, IPv4: c.ipv4, TCP: c.tcp,
	}
}

// Validate implements migration.Validator: the fields' descriptor widths.
func (c *txContextState) Validate() error {
	fields := []struct {
		name   string
		v, max int
	}{
		{"ipcss", c.IPCSS, 0xFF}, {"ipcso", c.IPCSO, 0xFF}, {"ipcse", c.IPCSE, 0xFFFF},
		{"tucss", c.TUCSS, 0xFF}, {"tucso", c.TUCSO, 0xFF}, {"tucse", c.TUCSE, 0xFFFF},
		{"paylen", c.PayLen, txdLenMask}, {"hdrlen", c.HdrLen, 0xFF}, {"mss", c.MSS, 0xFFFF},
	}
	for _, f := range fields {
		if f.v < 0 || f.v > f.max {
			return fmt.Errorf("%s = %d is outside [0, %d]", f.name, f.v, f.max)
		}
	}
	return nil
}

// restoreTXContext applies a validated section. Called with n.mu held.
func (n *NIC) restoreTXContext(c *txContextState) {
	n.tx.ctx = txContext{
		ipcss: c.IPCSS, ipcso: c.IPCSO, ipcse: c.IPCSE,
		tucss: c.TUCSS, tucso: c.TUCSO, tucse: c.TUCSE,
		payLen: c.PayLen, hdrLen: c.HdrLen, mss: c.MSS,
		tse: c.TSE, ipv4: c.IPv4, tcp: c.TCP,
	}
}
