package e1000e

import "fmt"

// NVMState is the NVM words the guest changed (EEWR), by word index: a
// destination without it serves the image its configuration builds.
type NVMState struct {
	Words map[uint8]uint16 `msgpack:"words"`
}

// saveNVM lists the words that differ from the configured image. Called
// with n.mu held.
func (n *NIC) saveNVM() NVMState {
	img := n.nvmImage()
	s := NVMState{Words: map[uint8]uint16{}}
	for i, w := range n.nvm {
		if w != img[i] {
			s.Words[uint8(i)] = w
		}
	}
	return s
}

// nvmImage is the NVM a fresh NIC with this configuration holds.
func (n *NIC) nvmImage() [nvmWords]uint16 {
	saved := n.nvm
	n.buildNVM()
	img := n.nvm
	n.nvm = saved
	return img
}

// Validate checks word indexes.
func (s *NVMState) Validate() error {
	for i := range s.Words {
		if int(i) >= nvmWords {
			return fmt.Errorf("e1000e: nvm: word %#x beyond the %d-word NVM", i, nvmWords)
		}
	}
	return nil
}

// restoreNVM applies a validated NVMState over the configured image.
// Called with n.mu held.
func (n *NIC) restoreNVM(s *NVMState) {
	n.nvm = n.nvmImage()
	for i, w := range s.Words {
		n.nvm[i] = w
	}
}
