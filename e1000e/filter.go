package e1000e

import "encoding/binary"

// Receive control bits the datapath interprets (RCTL, 0x100).
const (
	rctlSBP      = 0x00000004 // store bad packets
	rctlUPE      = 0x00000008 // unicast promiscuous
	rctlMPE      = 0x00000010 // multicast promiscuous
	rctlLPE      = 0x00000020 // long packets
	rctlLBMMAC   = 0x00000040 // MAC loopback
	rctlRDMTS    = 0x00000300 // descriptor minimum threshold size
	rctlRDMTSSh  = 8
	rctlDTYPPS   = 0x00000400 // packet split descriptors
	rctlDTYPMask = 0x00000C00
	rctlMO       = 0x00003000 // multicast offset for the MTA hash
	rctlMOShift  = 12
	rctlBAM      = 0x00008000 // accept broadcast
	rctlBSIZE    = 0x00030000
	rctlBSIZESh  = 16
	rctlVFE      = 0x00040000 // VLAN filter enable
	rctlBSEX     = 0x02000000 // buffer size extension (x16)
	rctlSECRC    = 0x04000000 // strip the FCS
)

// regReader is read access to the register file by BAR0 offset. The NIC
// implements it; filter and RSS decisions depend on nothing else, so tests
// can drive them with a plain map.
type regReader interface {
	reg(off uint32) uint32
}

// filterResult says whether a frame passes the receive filters and whether
// it passed only an inexact (MTA hash) filter.
type filterResult struct {
	accept  bool
	inexact bool
}

// filterFrame decides whether frame is accepted, as the 82574 does: broadcast
// with RCTL.BAM, multicast with RCTL.MPE, unicast with RCTL.UPE; otherwise an
// exact match against the first raSize valid receive addresses, else the
// multicast table hash; and in every case the VLAN filter when RCTL.VFE is
// set. raSize 0 is the model parameter rx-filter-size at its off value: no
// exact-match filtering, so every unicast frame is accepted.
//
// frame is at least 14 bytes (the caller pads short frames).
func filterFrame(r regReader, frame []byte, raSize int) filterResult {
	rctl := r.reg(RCTL)
	if !vlanFilterPass(r, frame, rctl) {
		return filterResult{}
	}
	dst := frame[:6]
	switch {
	case isBroadcast(dst):
		if rctl&rctlBAM != 0 {
			return filterResult{accept: true}
		}
	case dst[0]&1 != 0: // multicast
		if rctl&rctlMPE != 0 {
			return filterResult{accept: true}
		}
	default:
		if rctl&rctlUPE != 0 || raSize <= 0 {
			return filterResult{accept: true}
		}
	}
	if raSize > numRA {
		raSize = numRA
	}
	lo := binary.LittleEndian.Uint32(dst[0:])
	hi := uint32(binary.LittleEndian.Uint16(dst[4:]))
	for i := 0; i < raSize; i++ {
		rah := r.reg(uint32(RA + 8*i + 4))
		if rah&RAH_AV != 0 && rah&0xFFFF == hi && r.reg(uint32(RA+8*i)) == lo {
			return filterResult{accept: true}
		}
	}
	if mtaMatch(r, dst, rctl) {
		return filterResult{accept: true, inexact: true}
	}
	return filterResult{}
}

func isBroadcast(dst []byte) bool {
	return binary.LittleEndian.Uint32(dst) == 0xFFFFFFFF &&
		binary.LittleEndian.Uint16(dst[4:]) == 0xFFFF
}

// mtaShift is the right shift of the 16 bits made of destination bytes 4 and
// 5 that gives the 12-bit MTA hash, for each RCTL.MO setting.
var mtaShift = [4]uint{4, 3, 2, 0}

// mtaHash is the 12-bit multicast table index of a destination address.
func mtaHash(dst []byte, rctl uint32) uint32 {
	v := uint32(dst[4]) | uint32(dst[5])<<8
	return (v >> mtaShift[(rctl&rctlMO)>>rctlMOShift]) & 0xFFF
}

func mtaMatch(r regReader, dst []byte, rctl uint32) bool {
	h := mtaHash(dst, rctl)
	return r.reg(uint32(MTA+4*(h>>5)))&(1<<(h&31)) != 0
}

// vlanFilterPass applies the VLAN filter table to a tagged frame when
// RCTL.VFE is set; untagged frames always pass.
func vlanFilterPass(r regReader, frame []byte, rctl uint32) bool {
	if rctl&rctlVFE == 0 || len(frame) < ethHdrLen+vlanTagLen {
		return true
	}
	vet := uint16(r.reg(VET))
	if binary.BigEndian.Uint16(frame[12:]) != vet {
		return true
	}
	vid := uint32(binary.BigEndian.Uint16(frame[14:]) & 0x0FFF)
	return r.reg(uint32(VFTA+4*(vid>>5)))&(1<<(vid&31)) != 0
}
