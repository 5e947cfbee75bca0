package e1000e

import (
	"encoding/binary"
	"errors"
	"math/bits"

	"e1000e-vfu/device/announce"
)

// Self-announce: after an incoming migration the guest's addresses sit
// behind another switch port, and a learning switch only finds them again
// from a frame they send. QEMU announces its own NICs but cannot announce
// this one, so the NIC does, through device/announce: it says which
// addresses are the guest's (AnnounceAddresses), starts the rounds when it
// first runs after a load (Resume or Apply), and cancels them on reset and
// on Quiesce. The frames go to the backend directly and are not counted in
// the guest-visible statistics registers.

var _ announce.Source = (*NIC)(nil)

// errQuiesced refuses an announcement asked for while migration has
// stopped the NIC.
var errQuiesced = errors.New("e1000e: the NIC is stopped for migration; it announces itself when it runs")

// AnnounceAddresses implements announce.Source: none while the NIC is
// stopped for migration or its receiver is off; else every receive address
// the guest made valid (RAH.AV) among the entries the filter honours (all 16
// when rx-filter-size is 0), once each and never a multicast or all-zero
// one; and, when VLAN filtering is on (RCTL.VFE), each of them again on
// every VLAN id whose VFTA bit is set (ids 0 and 4095 are not VLANs). The
// guest is reachable untagged too: untagged frames pass the VLAN filter.
func (n *NIC) AnnounceAddresses(dst []announce.Address) []announce.Address {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.announceAddressesLocked(dst)
}

func (n *NIC) announceAddressesLocked(dst []announce.Address) []announce.Address {
	// A NIC stopped for migration has nothing to announce: its frames
	// would point the switch back at a host the guest is leaving. Nor has
	// one whose receiver the guest has not enabled (a destination waiting
	// for its state, a NIC no driver runs): the guest is not reachable
	// through it, and announcing its NVM address would take the guest's
	// traffic from where it is.
	if n.mig.quiesced || n.reg(RCTL)&RCTL_EN == 0 {
		return dst
	}
	entries := n.rxFilter
	if entries <= 0 {
		entries = numRA
	}
	start := len(dst)
	for i := 0; i < entries; i++ {
		rah := n.reg(uint32(RA + 8*i + 4))
		if rah&RAH_AV == 0 {
			continue
		}
		var mac [6]byte
		binary.LittleEndian.PutUint32(mac[0:], n.reg(uint32(RA+8*i)))
		binary.LittleEndian.PutUint16(mac[4:], uint16(rah))
		if mac[0]&1 != 0 || mac == [6]byte{} || hasMAC(dst[start:], mac) {
			continue
		}
		dst = append(dst, announce.Address{MAC: mac})
	}
	macs := len(dst) - start
	if macs == 0 || n.reg(RCTL)&rctlVFE == 0 {
		return dst
	}
	for w := uint32(0); w < vftaEntries; w++ {
		for set := n.reg(VFTA + 4*w); set != 0; set &= set - 1 {
			vid := uint16(w*32 + uint32(bits.TrailingZeros32(set)))
			if vid == 0 || vid == 4095 {
				continue
			}
			for j := 0; j < macs; j++ {
				if len(dst)-start >= announce.MaxAddresses {
					return dst
				}
				dst = append(dst, announce.Address{MAC: dst[start+j].MAC, Tagged: true, VLAN: vid})
			}
		}
	}
	return dst
}

// vftaEntries is the VLAN filter table's length in dwords: a bit per id.
const vftaEntries = 4096 / 32

func hasMAC(as []announce.Address, mac [6]byte) bool {
	for _, a := range as {
		if a.MAC == mac {
			return true
		}
	}
	return false
}

// Announce announces the NIC's addresses now, as QMP announce-self does:
// on the configured schedule or, when that is off, on the default one (an
// operator who asks wants frames). It replaces an announcement in
// progress. A NIC stopped for migration refuses: its frames would point
// the switch back at a host the guest is leaving.
func (n *NIC) Announce() (announce.Started, error) {
	n.mu.Lock()
	quiesced := n.mig.quiesced
	n.mu.Unlock()
	if quiesced {
		return announce.Started{}, errQuiesced
	}
	s := n.announceSched
	if s.Off() {
		s = announce.Default()
	}
	return n.ann.Start(announce.ReasonControl, s)
}

// AnnounceStats returns the announcer's cumulative counts.
func (n *NIC) AnnounceStats() announce.Stats { return n.ann.Stats() }

// announceAfterLoad starts the announcement a loaded state owes the
// network once the NIC runs. Called without n.mu (the announcer reads the
// addresses under it) after Resume and after Apply.
func (n *NIC) announceAfterLoad() {
	n.mu.Lock()
	due := n.mig.loaded && !n.mig.quiesced && !n.closed
	if due {
		n.mig.loaded = false
	}
	n.mu.Unlock()
	if due && !n.announceSched.Off() {
		// Start fails only once the NIC is closed.
		_, _ = n.ann.Start(announce.ReasonMigration, n.announceSched)
	}
}
