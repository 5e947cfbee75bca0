package harness

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
)

// QEMU's migration stream markers (migration/savevm.c).
const (
	vmSectionFull   = 0x04
	vmSectionFooter = 0x7e
	// vmMaxSections bounds the sections SectionBytes counts, so that a
	// hostile file cannot make it loop for long.
	vmMaxSections = 64
)

// SectionBytes sizes a device's state in a migration stream QEMU saved to a
// file: it finds the non-iterative ("full") sections whose id string ends
// with suffix (e.g. "/e1000e": QEMU names a PCI device's section
// "0000:00:01.0/e1000e") and sums their payloads. A section header is the
// marker, a big-endian 32-bit section id, the id string after its length
// byte, and 32-bit instance and version ids; the payload ends at the
// footer marker with the same section id. Guest RAM comes first in the
// stream and may hold any bytes, so a match must also have an id string
// that starts like a PCI address and a footer. It returns the bytes and
// the number of sections.
func SectionBytes(stream []byte, suffix string) (total, sections int, err error) {
	if suffix == "" || len(suffix) > 255 {
		return 0, 0, errors.New("vmstate: suffix must be 1 to 255 bytes")
	}
	for i := 0; i < len(stream) && sections < vmMaxSections; {
		j := bytes.Index(stream[i:], []byte(suffix))
		if j < 0 {
			break
		}
		end := i + j + len(suffix) // just past the id string
		i = end
		start := -1
		for l := len(suffix); l < 256 && end-l-6 >= 0; l++ {
			if int(stream[end-l-1]) == l && stream[end-l-6] == vmSectionFull {
				start = end - l - 6
				break
			}
		}
		if start < 0 || end+8 > len(stream) {
			continue
		}
		if !strings.HasPrefix(string(stream[start+6:end]), "0000:") {
			continue
		}
		footer := []byte{vmSectionFooter, 0, 0, 0, 0}
		copy(footer[1:], stream[start+1:start+5])
		data := end + 8
		k := bytes.Index(stream[data:], footer)
		if k < 0 {
			continue
		}
		total += k
		sections++
		i = data + k + len(footer)
	}
	if sections == 0 {
		return 0, 0, errors.New("vmstate: no section whose id ends in " + suffix)
	}
	return total, sections, nil
}

// appendSection appends a full section as QEMU writes it (for tests).
func appendSection(b []byte, id uint32, idstr string, payload []byte) []byte {
	b = append(b, vmSectionFull)
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, byte(len(idstr)))
	b = append(b, idstr...)
	b = binary.BigEndian.AppendUint32(b, 0) // instance
	b = binary.BigEndian.AppendUint32(b, 1) // version
	b = append(b, payload...)
	b = append(b, vmSectionFooter)
	return binary.BigEndian.AppendUint32(b, id)
}
