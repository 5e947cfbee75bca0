package e1000e

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// What the NIC wrote back into receive descriptors, for the tests to read.

func (d rxExtDesc) statusError() uint32 { return binary.LittleEndian.Uint32(d[8:]) }
func (d rxExtDesc) length() int         { return int(binary.LittleEndian.Uint16(d[12:])) }
func (d rxExtDesc) vlan() uint16        { return binary.LittleEndian.Uint16(d[14:]) }

func (d rxPSDesc) statusError() uint32 { return binary.LittleEndian.Uint32(d[8:]) }
func (d rxPSDesc) length(i int) int {
	if i == 0 {
		return int(binary.LittleEndian.Uint16(d[12:]))
	}
	return int(binary.LittleEndian.Uint16(d[16+2*i:]))
}
func (d rxPSDesc) hdrStatus() uint16 { return binary.LittleEndian.Uint16(d[16:]) }

// Descriptor layouts, checked byte by byte against the structures of the
// Linux driver (hw.h): each accessor must read the bytes the driver writes.

func TestTXDescriptorLayouts(t *testing.T) {
	b := make([]byte, txDescSize)
	for i := range b {
		b[i] = byte(0x10 + i)
	}
	d := txDesc(b)
	// struct e1000_tx_desc (legacy).
	if d.addr() != 0x1716151413121110 {
		t.Errorf("buffer_addr %#x", d.addr())
	}
	if d.legacyLen() != 0x1918 || d.legacyCSO() != 0x1A || d.legacyCSS() != 0x1D || d.special() != 0x1F1E {
		t.Errorf("legacy length %#x cso %#x css %#x special %#x", d.legacyLen(), d.legacyCSO(), d.legacyCSS(), d.special())
	}
	// struct e1000_context_desc.
	if d.ipcss() != 0x10 || d.ipcso() != 0x11 || d.ipcse() != 0x1312 {
		t.Errorf("ipcss %#x ipcso %#x ipcse %#x", d.ipcss(), d.ipcso(), d.ipcse())
	}
	if d.tucss() != 0x14 || d.tucso() != 0x15 || d.tucse() != 0x1716 {
		t.Errorf("tucss %#x tucso %#x tucse %#x", d.tucss(), d.tucso(), d.tucse())
	}
	if d.payLen() != 0xA1918 || d.hdrLen() != 0x1D || d.mss() != 0x1F1E {
		t.Errorf("paylen %#x hdr_len %#x mss %#x", d.payLen(), d.hdrLen(), d.mss())
	}
	// struct e1000_data_desc.
	if d.dataLen() != 0xA1918 || d.popts() != 0x1D {
		t.Errorf("data length %#x popts %#x", d.dataLen(), d.popts())
	}
	// Kinds: DEXT (bit 29) and DTYP data (bit 20).
	for _, c := range []struct {
		cmd           uint32
		ctx, data, ex bool
	}{
		{0, false, false, false},
		{txdCmdDEXT, true, false, true},
		{txdCmdDEXT | txdDTYPD, false, true, true},
		{txdCmdDEXT | 0x00E00000, true, false, true}, // reserved DTYP bits
		{txdDTYPD, false, false, false},              // legacy: DTYP ignored
	} {
		k := txDesc(make([]byte, txDescSize))
		k[8], k[9], k[10], k[11] = byte(c.cmd), byte(c.cmd>>8), byte(c.cmd>>16), byte(c.cmd>>24)
		if k.isContext() != c.ctx || k.isData() != c.data || k.isExt() != c.ex {
			t.Errorf("cmd %#x: context %v data %v ext %v", c.cmd, k.isContext(), k.isData(), k.isExt())
		}
	}
}

func TestRXDescriptorLayouts(t *testing.T) {
	// union e1000_rx_desc_extended, write-back format.
	e := rxExtDesc(make([]byte, rxDescSize))
	e.writeBack(0x11223344, 0x55667788, 0x99AA, 0xBBCC)
	e.setStatusError(0xDDEEFF00)
	want := []byte{0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0x00, 0xFF, 0xEE, 0xDD, 0xAA, 0x99, 0xCC, 0xBB}
	for i := range want {
		if e[i] != want[i] {
			t.Fatalf("extended write-back byte %d = %#x, want %#x", i, e[i], want[i])
		}
	}
	// union e1000_rx_desc_packet_split, write-back format.
	p := rxPSDesc(make([]byte, rxPSDescSize))
	for i := range p {
		p[i] = 0xFF
	}
	lens := [4]int{0x0102, 0x0304, 0x0506, 0x0708}
	p.writeBack(1, 2, &lens, 0x8036, 0x0A0B)
	p.setStatusError(3)
	for _, c := range []struct {
		off  int
		want uint64
		size int
	}{{0, 1, 4}, {4, 2, 4}, {8, 3, 4}, {12, 0x0102, 2}, {14, 0x0A0B, 2}, {16, 0x8036, 2},
		{18, 0x0304, 2}, {20, 0x0506, 2}, {22, 0x0708, 2}, {24, 0, 8}} {
		var v uint64
		for i := c.size - 1; i >= 0; i-- {
			v = v<<8 | uint64(p[c.off+i])
		}
		if v != c.want {
			t.Errorf("packet split byte %d: %#x, want %#x", c.off, v, c.want)
		}
	}
	for i := 0; i < 4; i++ {
		if p.length(i) != lens[i] {
			t.Errorf("length(%d) = %#x", i, p.length(i))
		}
	}
	// struct e1000_rx_desc (legacy): length 8, csum 10, status 12,
	// errors 13, special 14.
	l := rxLegacyDesc(make([]byte, rxDescSize))
	l.writeBack(0x0102, 0x0304, 0x05, 0x0607)
	l.setStatus(0x08)
	if l[8] != 2 || l[9] != 1 || l[10] != 4 || l[11] != 3 || l[12] != 8 || l[13] != 5 || l[14] != 7 || l[15] != 6 {
		t.Errorf("legacy write-back % x", l[8:])
	}
}

// Ring arithmetic: the free count and the descriptor count a frame needs,
// over random rings.
func TestRingArithmetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		size := rng.Uint32N(4096) + 1
		r := ringView{size: size, head: rng.Uint32N(size), tail: rng.Uint32N(size), slotShift: rxRingSlotShift}
		f := r.avail()
		if f >= size || (r.head+f)%size != r.tail {
			t.Fatalf("ring %+v: free %d", r, f)
		}
	}
	for i := 0; i < 10000; i++ {
		l := rxLayout{ps: rng.IntN(2) == 0}
		for j := range l.sizes {
			l.sizes[j] = rng.IntN(5) * 512
		}
		if l.ps && rng.IntN(2) == 0 && l.sizes[0] > 0 {
			l.hdrLen = rng.IntN(l.sizes[0]) + 1
		}
		total := rng.IntN(20000) + 1
		n := l.descsFor(total)
		first, next := l.capacity(true), l.capacity(false)
		if n == 0 {
			if first > 0 && (total <= first || next > 0) {
				t.Fatalf("layout %+v: %d bytes declared unstorable", l, total)
			}
			continue
		}
		if got := first + (n-1)*next; got < total {
			t.Fatalf("layout %+v: %d descriptors hold %d < %d bytes", l, n, got, total)
		}
		if n > 1 && first+(n-2)*next >= total {
			t.Fatalf("layout %+v: %d descriptors are more than needed for %d bytes", l, n, total)
		}
	}
}

func TestBufferSizeDecoding(t *testing.T) {
	for _, c := range []struct {
		rctl uint32
		want int
	}{
		{0, 2048}, {1 << rctlBSIZESh, 1024}, {2 << rctlBSIZESh, 512}, {3 << rctlBSIZESh, 256},
		{rctlBSEX | 1<<rctlBSIZESh, 16384}, {rctlBSEX | 2<<rctlBSIZESh, 8192}, {rctlBSEX | 3<<rctlBSIZESh, 4096},
	} {
		if got := rxBSIZE(c.rctl); got != c.want {
			t.Errorf("RCTL %#x: buffer size %d, want %d", c.rctl, got, c.want)
		}
	}
	if s := psBufSizes(0x04040402); s != (rxBufSizes{256, 4096, 4096, 4096}) {
		t.Errorf("PSRCTL sizes %v", s)
	}
}
