package harness

import (
	"bytes"
	"testing"
)

func TestSectionBytes(t *testing.T) {
	var s []byte
	s = append(s, 0x51, 0x45, 0x56, 0x4d) // magic, then "RAM" that mentions the id
	s = append(s, []byte("noise /e1000e more noise \x04\x00\x00\x00\x09\x05/e1000e")...)
	s = appendSection(s, 7, "0000:00:01.0/e1000e", bytes.Repeat([]byte{0x7e, 0, 0, 0}, 100))
	s = appendSection(s, 8, "0000:00:02.0/vfio", make([]byte, 33))
	s = appendSection(s, 9, "0000:00:03.0/e1000e", []byte{1, 2, 3})
	s = append(s, 0x1f)
	n, k, err := SectionBytes(s, "/e1000e")
	if err != nil || n != 403 || k != 2 {
		t.Errorf("e1000e: %d bytes in %d sections, %v; want 403 in 2", n, k, err)
	}
	n, k, err = SectionBytes(s, "/vfio")
	if err != nil || n != 33 || k != 1 {
		t.Errorf("vfio: %d bytes in %d sections, %v; want 33 in 1", n, k, err)
	}
	if _, _, err := SectionBytes(s, "/virtio-net"); err == nil {
		t.Error("found a section that is not there")
	}
	// A header without its footer is not a section.
	cut := appendSection(nil, 7, "0000:00:01.0/e1000e", []byte{1, 2, 3})
	if _, _, err := SectionBytes(cut[:len(cut)-5], "/e1000e"); err == nil {
		t.Error("a section without a footer was counted")
	}
}

func FuzzSectionBytes(f *testing.F) {
	f.Add(appendSection(nil, 1, "0000:00:01.0/e1000e", []byte{1, 2, 3}), "/e1000e")
	f.Add([]byte("\x04\x00\x00\x00\x01\x07/e1000e"), "/e1000e")
	f.Add([]byte{}, "/vfio")
	f.Fuzz(func(t *testing.T, stream []byte, suffix string) {
		n, k, err := SectionBytes(stream, suffix)
		if err != nil {
			if n != 0 || k != 0 {
				t.Fatalf("error with %d bytes in %d sections", n, k)
			}
			return
		}
		if k < 1 || k > vmMaxSections || n < 0 || n > len(stream) {
			t.Fatalf("%d bytes in %d sections of a %d-byte stream", n, k, len(stream))
		}
	})
}
