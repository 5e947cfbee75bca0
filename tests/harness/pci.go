package harness

import (
	"encoding/binary"
	"fmt"
)

// PCICaps walks a config space's standard capability list and returns
// offset → capability id, bounded so a looping list cannot hang the test.
func PCICaps(cfg []byte) (map[int]byte, error) {
	caps := map[int]byte{}
	if len(cfg) < 64 {
		return caps, fmt.Errorf("config space of %d bytes", len(cfg))
	}
	if cfg[6]&0x10 == 0 {
		return caps, fmt.Errorf("no capability list (status %#x)", cfg[6])
	}
	off := int(cfg[0x34]) &^ 3
	for i := 0; off != 0 && i < 48; i++ {
		if off < 0x40 || off+2 > len(cfg) {
			return caps, fmt.Errorf("capability pointer %#x out of range", off)
		}
		caps[off] = cfg[off]
		off = int(cfg[off+1]) &^ 3
	}
	return caps, nil
}

// PCIExtCaps walks the extended capability list (config space beyond 256
// bytes) and returns offset → extended capability id.
func PCIExtCaps(cfg []byte) (map[int]uint16, error) {
	caps := map[int]uint16{}
	off := 0x100
	for i := 0; off != 0 && i < 64; i++ {
		if off < 0x100 || off+4 > len(cfg) {
			return caps, fmt.Errorf("extended capability at %#x out of range (config is %d bytes)", off, len(cfg))
		}
		h := binary.LittleEndian.Uint32(cfg[off:])
		if h == 0 {
			break
		}
		caps[off] = uint16(h)
		off = int(h>>20) &^ 3
	}
	return caps, nil
}
