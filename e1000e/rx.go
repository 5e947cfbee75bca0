package e1000e

// rxState is the receive side's runtime state (bounded backlog).
type rxState struct{}

// kickRX delivers backlogged frames once buffers are available. Called with
// n.mu held.
func (n *NIC) kickRX() {}

// Receive takes one frame from the backend.
func (n *NIC) Receive(frame []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
}
