package vfiouser

import (
	"bytes"
	"testing"
)

// TestWireSizes checks each fixed part against the sizes of the
// specification.
func TestWireSizes(t *testing.T) {
	sizes := map[string][2]int{
		"header":              {HeaderSize, 16},
		"dma map":             {DMAMapSize, 32},
		"dma unmap":           {DMAUnmapSize, 24},
		"bitmap":              {BitmapSize, 16},
		"dma rw":              {DMARWSize, 16},
		"device info":         {DeviceInfoSize, 16},
		"region info":         {RegionInfoSize, 32},
		"irq info":            {IRQInfoSize, 16},
		"region io fds":       {RegionIOFDsSize, 16},
		"irq set":             {IRQSetSize, 20},
		"region rw":           {RegionRWSize, 16},
		"write multi item":    {WriteMultiItemSize, 24},
		"device feature":      {FeatureSize, 8},
		"mig device state":    {MigStateSize, 8},
		"logging start":       {LoggingStartSize, 16},
		"logging range":       {LoggingRangeSize, 16},
		"logging report":      {LoggingReportSize, 24},
		"mig data":            {MigDataSize, 8},
		"dirty pages":         {DirtyPagesSize, 8},
		"dirty pages bitmap":  {DirtyBitmapSize, 32},
		"sparse mmap area":    {sparseAreaSize, 16},
		"capability header":   {capHeaderSize, 8},
		"write multi wr_cnt":  {writeMultiHdrSize, 8},
		"sparse mmap nr+rsvd": {sparseFixedSize, 8},
	}
	for name, s := range sizes {
		if s[0] != s[1] {
			t.Errorf("%s: %d bytes, the specification says %d", name, s[0], s[1])
		}
	}
}

// TestWireLayout checks field offsets with known bytes.
func TestWireLayout(t *testing.T) {
	b := make([]byte, HeaderSize)
	Header{MsgID: 0x0102, Command: CmdRegionRead, Size: 0x20, Flags: FlagTypeReply | FlagError, Error: 22}.Encode(b)
	want := []byte{2, 1, 9, 0, 0x20, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("header %x, want %x", b, want)
	}
	b = make([]byte, DMAMapSize)
	DMAMap{Argsz: 32, Flags: 3, Offset: 0x1000, Addr: 0x2000, Size: 0x3000}.Encode(b)
	if b[0] != 32 || b[4] != 3 || b[9] != 0x10 || b[17] != 0x20 || b[25] != 0x30 {
		t.Fatalf("dma map %x", b)
	}
	b = make([]byte, RegionInfoSize)
	RegionInfo{Argsz: 88, Flags: 0xf, Index: 2, CapOffset: 32, Size: 0x4000, Offset: 0x5000}.Encode(b)
	if b[0] != 88 || b[4] != 0xf || b[8] != 2 || b[12] != 32 || b[17] != 0x40 || b[25] != 0x50 {
		t.Fatalf("region info %x", b)
	}
	b = make([]byte, IRQSetSize)
	IRQSet{Argsz: 20, Flags: 0x24, Index: 2, Start: 3, Count: 4}.Encode(b)
	if b[4] != 0x24 || b[8] != 2 || b[12] != 3 || b[16] != 4 {
		t.Fatalf("irq set %x", b)
	}
	// A capability chain: SPARSE_MMAP at 32 pointing to TYPE at 56.
	full, first := encodeRegionCaps(make([]byte, RegionInfoSize),
		RegionCaps{Sparse: []SparseArea{{0x1000, 0x1000}}, HasType: true, Type: 3, Subtype: 1})
	if first != 32 || len(full) != 32+8+8+16+8+8 || le.Uint16(full[32:]) != CapSparseMMap ||
		le.Uint32(full[36:]) != 64 || le.Uint32(full[40:]) != 1 || le.Uint16(full[64:]) != CapType || le.Uint32(full[72:]) != 3 {
		t.Fatalf("caps %x (first %d)", full, first)
	}
}

func TestDecodeRejectsShortInput(t *testing.T) {
	decoders := map[string]func([]byte) error{
		"header":      func(b []byte) error { _, err := DecodeHeader(b); return err },
		"version":     func(b []byte) error { _, err := DecodeVersion(b); return err },
		"dma map":     func(b []byte) error { _, err := DecodeDMAMap(b); return err },
		"dma unmap":   func(b []byte) error { _, err := DecodeDMAUnmap(b); return err },
		"region info": func(b []byte) error { _, err := DecodeRegionInfo(b); return err },
		"irq set":     func(b []byte) error { _, err := DecodeIRQSet(b); return err },
		"region rw":   func(b []byte) error { _, err := DecodeRegionRW(b); return err },
		"feature":     func(b []byte) error { _, err := DecodeFeature(b); return err },
		"mig data":    func(b []byte) error { _, err := DecodeMigData(b); return err },
		"logging":     func(b []byte) error { _, err := DecodeLoggingStart(b); return err },
	}
	for name, dec := range decoders {
		if err := dec(make([]byte, 3)); err == nil {
			t.Errorf("%s accepted 3 bytes", name)
		}
	}
	// Version JSON without its NUL, and a JSON value that is not an object.
	if _, err := DecodeVersion([]byte("\x00\x00\x00\x00{}")); err == nil {
		t.Error("version JSON without NUL accepted")
	}
	if _, err := DecodeVersion([]byte("\x00\x00\x00\x00[1]\x00")); err == nil {
		t.Error("version JSON array accepted")
	}
	// A capability chain that loops back.
	p := make([]byte, 64)
	le.PutUint16(p[32:], CapType)
	le.PutUint32(p[36:], 32)
	if _, err := DecodeRegionCaps(p, 32); err == nil {
		t.Error("looping capability chain accepted")
	}
}

// TestDMALayout pins DMA_READ/DMA_WRITE byte by byte: the specification's
// layout, which QEMU 10.1 to 11.1 use too (data at offset 16: a real
// guest's TX descriptors read at offset 12 came out shifted by 4 bytes).
func TestDMALayout(t *testing.T) {
	data := []byte{0xa1, 0xa2, 0xa3}
	p := encodeDMARW(0x1122, 3, data)
	want := []byte{0x22, 0x11, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0xa1, 0xa2, 0xa3}
	if !bytes.Equal(p, want) {
		t.Fatalf("%x, want %x", p, want)
	}
	if req := encodeDMARW(8, 4096, nil); len(req) != DMARWSize || le.Uint64(req[8:]) != 4096 {
		t.Fatalf("read request %x", req)
	}
	addr, count, got, err := decodeDMARW(p, true)
	if err != nil || addr != 0x1122 || count != 3 || !bytes.Equal(got, data) {
		t.Fatalf("%#x %d %x %v", addr, count, got, err)
	}
	le.PutUint64(p[8:], 1000)
	if _, _, _, err := decodeDMARW(p, true); err == nil {
		t.Fatal("count beyond the data accepted")
	}
}
