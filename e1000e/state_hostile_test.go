package e1000e

import (
	"encoding/binary"
	"runtime"
	"testing"

	"e1000e-vfu/migration"
)

// allocated is what f allocates, by the runtime's count.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// hostileSection is a section of about size bytes: a map with one key
// whose value is a container of count elements, each elem.
func hostileSection(key string, code byte, elem func(i int) []byte, size int) []byte {
	p := append([]byte{0x81, 0xa0 | byte(len(key))}, key...)
	p = append(p, code, 0, 0, 0, 0)
	hdr := len(p)
	n := 0
	for len(p) < size {
		p = append(p, elem(n)...)
		n++
	}
	binary.BigEndian.PutUint32(p[hdr-4:], uint32(n))
	return p
}

// Decoding a hostile section costs at most migration.DecodeMultiple times
// its payload (plus migration.DecodeSlack) before it is refused: 4 MiB of
// empty frames or of short keys no longer take 96 or 55 MiB.
func TestHostileSectionsBoundedMemory(t *testing.T) {
	const size = 4 << 20
	key4 := func(i int) []byte { return []byte{0xa4, byte(i >> 16), byte(i >> 8), byte(i), 'k'} }
	cases := []struct {
		name, section, key string
		code               byte // array32 or map32
		elem               func(i int) []byte
	}{
		{"empty frames", secRXFIFO, "frames", 0xdd, func(int) []byte { return []byte{0xc4, 0} }},
		{"nil frames", secRXFIFO, "frames", 0xdd, func(int) []byte { return []byte{0xc0} }},
		{"short frames", secRXFIFO, "frames", 0xdd, func(int) []byte { return append([]byte{0xc4, 60}, make([]byte, 60)...) }},
		{"register names", secRegisters, "regs", 0xdf, func(i int) []byte { return append(key4(i), 0) }},
		{"array names", secRegisters, "arrays", 0xdf, func(i int) []byte { return append(key4(i), 0x90) }},
		{"counter names", secStats, "counters", 0xdf, func(i int) []byte { return append(key4(i), 0) }},
		{"phy registers", secPHY, "regs", 0xdf, func(i int) []byte { return append(key4(i), 0) }},
		{"timers", secInterrupts, "timers", 0xdf, func(i int) []byte { return append(key4(i), 0) }},
		{"nvm word repeated", secNVM, "words", 0xdf, func(int) []byte { return []byte{1, 2} }},
		{"empty config runs", secPCI, "config", 0xdd, func(int) []byte { return []byte{0x80} }},
		{"empty receive addresses", secFilters, "ra", 0xdd, func(int) []byte { return []byte{0x80} }},
		{"queues", secRXRing, "queues", 0xdd, func(int) []byte { return []byte{0x80} }},
	}
	n := newStateNIC(t, 16)
	bound := migration.DecodeMultiple*uint64(size+64) + migration.DecodeSlack
	for _, c := range cases {
		p := hostileSection(c.key, c.code, c.elem, size)
		l := &nicLoader{n: n}
		var err error
		got := allocated(func() {
			err = l.DecodeSection(migration.Section{Name: c.section, Payload: p})
		})
		if err == nil {
			t.Errorf("%s (%d bytes) accepted", c.name, len(p))
		}
		if got > bound {
			t.Errorf("%s: decoding %d bytes allocated %d, over %d", c.name, len(p), got, bound)
		}
		t.Logf("%-24s %d bytes: allocated %9d (%.2fx): %v", c.name, len(p), got, float64(got)/float64(len(p)), err)
	}
}

// A whole stream carrying a hostile section is refused within the same
// bound, relative to the stream.
func TestHostileStreamBoundedMemory(t *testing.T) {
	src := busyNIC(t, -1)
	good, err := migration.Save(nil, src, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	h, secs, err := migration.Split(good, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	fifo := hostileSection("frames", 0xdd, func(int) []byte { return []byte{0xc4, 0} }, 4<<20-64)
	for i := range secs {
		if secs[i].Name == secRXFIFO {
			secs = append(secs[:i], secs[i+1:]...)
			break
		}
	}
	secs = append(secs, migration.Section{Name: secRXFIFO, Payload: fifo})
	bad, err := migration.Assemble(h, secs, migration.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newStateNIC(t, -1)
	got := allocated(func() { err = migration.Load(bad, dst, migration.Limits{}, nil) })
	if err == nil {
		t.Fatal("the stream loaded")
	}
	if bound := migration.DecodeMultiple*uint64(len(bad)) + migration.DecodeSlack; got > bound {
		t.Fatalf("loading %d bytes allocated %d, over %d", len(bad), got, bound)
	}
	t.Logf("%d bytes: allocated %d (%.2fx): %v", len(bad), got, float64(got)/float64(len(bad)), err)
}
