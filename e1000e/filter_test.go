package e1000e

import (
	"encoding/binary"
	"testing"

	"e1000e-vfu/device"
)

// mapRegs is a register file for the pure filter and RSS functions.
type mapRegs map[uint32]uint32

func (m mapRegs) reg(off uint32) uint32 { return m[off] }

func setRA(m mapRegs, i int, mac []byte, valid bool) {
	m[uint32(RA+8*i)] = binary.LittleEndian.Uint32(mac)
	h := uint32(binary.LittleEndian.Uint16(mac[4:]))
	if valid {
		h |= RAH_AV
	}
	m[uint32(RA+8*i+4)] = h
}

func frameTo(dst []byte) []byte {
	f := make([]byte, 60)
	copy(f, dst)
	copy(f[6:], dpSrcMAC)
	binary.BigEndian.PutUint16(f[12:], etherTypeIPv4)
	return f
}

func TestFilterRules(t *testing.T) {
	own := []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	foreign := []byte{0x52, 0x54, 0x00, 0x99, 0x88, 0x77}
	bcast := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	mcast := []byte{0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB}
	second := []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}

	base := func() mapRegs {
		m := mapRegs{RCTL: RCTL_EN, VET: etherTypeVLAN}
		setRA(m, 0, own, true)
		return m
	}
	mtaSet := func(m mapRegs, dst []byte) {
		h := mtaHash(dst, m[RCTL])
		m[uint32(MTA+4*(h>>5))] |= 1 << (h & 31)
	}
	cases := []struct {
		name   string
		setup  func(m mapRegs)
		dst    []byte
		raSize int
		accept bool
		inex   bool
	}{
		{"own unicast", nil, own, 16, true, false},
		{"foreign unicast rejected", nil, foreign, 16, false, false},
		{"foreign unicast, filter size 0", nil, foreign, 0, true, false},
		{"foreign unicast with UPE", func(m mapRegs) { m[RCTL] |= rctlUPE }, foreign, 16, true, false},
		{"foreign unicast in RA[3]", func(m mapRegs) { setRA(m, 3, foreign, true) }, foreign, 16, true, false},
		{"RA entry not valid", func(m mapRegs) { setRA(m, 3, foreign, false) }, foreign, 16, false, false},
		{"RA entry beyond filter size", func(m mapRegs) { setRA(m, 3, foreign, true) }, foreign, 2, false, false},
		{"foreign unicast via MTA", func(m mapRegs) { mtaSet(m, foreign) }, foreign, 16, true, true},
		{"second address in RA[1]", func(m mapRegs) { setRA(m, 1, second, true) }, second, 16, true, false},
		{"broadcast with BAM", func(m mapRegs) { m[RCTL] |= rctlBAM }, bcast, 16, true, false},
		{"broadcast without BAM", nil, bcast, 16, false, false},
		{"broadcast without BAM, filter size 0", nil, bcast, 0, false, false},
		{"multicast with MPE", func(m mapRegs) { m[RCTL] |= rctlMPE }, mcast, 16, true, false},
		{"multicast rejected", nil, mcast, 16, false, false},
		{"multicast via MTA", func(m mapRegs) { mtaSet(m, mcast) }, mcast, 16, true, true},
		{"multicast via MTA, MO=3", func(m mapRegs) { m[RCTL] |= 3 << rctlMOShift; mtaSet(m, mcast) }, mcast, 16, true, true},
		{"multicast, MTA bit of another MO", func(m mapRegs) {
			mtaSet(m, mcast)
			m[RCTL] |= 1 << rctlMOShift
		}, mcast, 16, false, false},
	}
	for _, c := range cases {
		m := base()
		if c.setup != nil {
			c.setup(m)
		}
		got := filterFrame(m, frameTo(c.dst), c.raSize)
		if got.accept != c.accept || got.inexact != c.inex {
			t.Errorf("%s: accept %v inexact %v, want %v %v", c.name, got.accept, got.inexact, c.accept, c.inex)
		}
	}
}

func TestMTAHashOffsets(t *testing.T) {
	// The 12 bits the MTA hash takes from destination bytes 4 and 5, per
	// RCTL.MO: bits 47:36, 46:35, 45:34 and 43:32 of the address.
	dst := []byte{0x01, 0, 0, 0, 0xAB, 0xCD}
	v := uint32(0xCD)<<8 | 0xAB
	for mo, shift := range []uint{4, 3, 2, 0} {
		if got, want := mtaHash(dst, uint32(mo)<<rctlMOShift), v>>shift&0xFFF; got != want {
			t.Errorf("MO=%d: hash %#x, want %#x", mo, got, want)
		}
	}
}

func TestVLANFilter(t *testing.T) {
	m := mapRegs{RCTL: RCTL_EN | rctlUPE | rctlVFE, VET: etherTypeVLAN}
	f := frameTo([]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56})
	tagged := make([]byte, 64)
	copy(tagged, f[:12])
	binary.BigEndian.PutUint16(tagged[12:], etherTypeVLAN)
	binary.BigEndian.PutUint16(tagged[14:], 0xA000|100) // priority 5, VID 100
	binary.BigEndian.PutUint16(tagged[16:], etherTypeIPv4)
	if filterFrame(m, tagged, 16).accept {
		t.Error("VLAN 100 accepted with an empty VFTA")
	}
	m[uint32(VFTA+4*(100>>5))] = 1 << (100 & 31)
	if !filterFrame(m, tagged, 16).accept {
		t.Error("VLAN 100 rejected although its VFTA bit is set")
	}
	if !filterFrame(m, f, 16).accept {
		t.Error("untagged frame rejected by the VLAN filter")
	}
	m[VFTA+4*(100>>5)] = 0
	m[RCTL] &^= rctlVFE
	if !filterFrame(m, tagged, 16).accept {
		t.Error("VLAN filter applied with RCTL.VFE clear")
	}
}

// TestFilterOnNIC checks the filter inside the receive path, with the
// model parameter rx-filter-size at 0 (first model: no exact matching) and
// at 16.
func TestFilterOnNIC(t *testing.T) {
	foreign := frameTo([]byte{0x52, 0x54, 0x00, 0x99, 0x88, 0x77})
	for _, c := range []struct {
		size   int
		accept bool
	}{{0, true}, {16, false}} {
		r := newRig(t, device.IRQModeMSIX, Config{RXFilterSize: c.size})
		r.w(RCTL, RCTL_EN|rctlBAM) // no promiscuous modes
		idx := r.rxTail
		r.pushRX(1)
		r.n.Receive(foreign)
		got := rxExtDesc(r.rxDesc(idx)).statusError()&rxdStatDD != 0
		if got != c.accept {
			t.Errorf("rx-filter-size %d: foreign unicast delivered %v, want %v", c.size, got, c.accept)
		}
		// Our own address (RAR0, loaded from the NVM) always passes.
		own := frameTo(r.n.MAC())
		next := r.rd(RDH0)
		r.pushRX(1)
		r.n.Receive(own)
		if rxExtDesc(r.rxDesc(next)).statusError()&rxdStatDD == 0 {
			t.Errorf("rx-filter-size %d: own unicast not delivered", c.size)
		}
	}
}
