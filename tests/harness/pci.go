package harness

import (
	"encoding/binary"
	"fmt"
)

// PCICap is one entry of the standard capability list.
type PCICap struct {
	Off int
	ID  byte
}

// PCICapList walks a config space's standard capability list and returns
// its entries in list order, bounded so a looping list cannot hang the
// test.
func PCICapList(cfg []byte) ([]PCICap, error) {
	var list []PCICap
	if len(cfg) < 64 {
		return list, fmt.Errorf("config space of %d bytes", len(cfg))
	}
	if cfg[6]&0x10 == 0 {
		return list, fmt.Errorf("no capability list (status %#x)", cfg[6])
	}
	off := int(cfg[0x34]) &^ 3
	for i := 0; off != 0 && i < 48; i++ {
		if off < 0x40 || off+2 > len(cfg) {
			return list, fmt.Errorf("capability pointer %#x out of range", off)
		}
		list = append(list, PCICap{Off: off, ID: cfg[off]})
		off = int(cfg[off+1]) &^ 3
	}
	return list, nil
}

// PCICaps walks the standard capability list as PCICapList does and
// returns offset → capability id.
func PCICaps(cfg []byte) (map[int]byte, error) {
	list, err := PCICapList(cfg)
	caps := make(map[int]byte, len(list))
	for _, c := range list {
		caps[c.Off] = c.ID
	}
	return caps, err
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
