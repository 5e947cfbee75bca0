package announce

import (
	"bytes"
	"encoding/hex"
	"net"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var testMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// The frames byte for byte, as QEMU's announce builds them (plus the tag).
func TestAppendRARPGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Address
		want string
	}{
		{"untagged", Address{MAC: testMAC},
			"ffffffffffff 525400123456 8035" +
				"0001 0800 06 04 0003 525400123456 00000000 525400123456 00000000" +
				strings.Repeat("00", 18)},
		{"vlan 100", Address{MAC: testMAC, Tagged: true, VLAN: 100},
			"ffffffffffff 525400123456 8100 0064 8035" +
				"0001 0800 06 04 0003 525400123456 00000000 525400123456 00000000" +
				strings.Repeat("00", 18)},
	} {
		want, err := hex.DecodeString(strings.ReplaceAll(tc.want, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte{1, 2, 3}
		got := AppendRARP(append([]byte(nil), prefix...), tc.a)
		if !bytes.Equal(got[:3], prefix) {
			t.Errorf("%s: the prefix was overwritten: %x", tc.name, got[:3])
		}
		if !bytes.Equal(got[3:], want) {
			t.Errorf("%s:\n got %x\nwant %x", tc.name, got[3:], want)
		}
	}
}

// An independent parser reads the standard fields.
func TestAppendRARPParses(t *testing.T) {
	mac := net.HardwareAddr(testMAC[:])
	for _, a := range []Address{{MAC: testMAC}, {MAC: testMAC, Tagged: true, VLAN: 4094}} {
		f := AppendRARP(nil, a)
		wantLen := FrameLen
		if a.Tagged {
			wantLen = TaggedFrameLen
		}
		if len(f) != wantLen {
			t.Fatalf("%+v: %d bytes, want %d", a, len(f), wantLen)
		}
		var eth layers.Ethernet
		if err := eth.DecodeFromBytes(f, gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if eth.DstMAC.String() != "ff:ff:ff:ff:ff:ff" || !bytes.Equal(eth.SrcMAC, mac) {
			t.Errorf("%+v: ethernet %s > %s", a, eth.SrcMAC, eth.DstMAC)
		}
		payload, typ := eth.Payload, eth.EthernetType
		if a.Tagged {
			if typ != layers.EthernetTypeDot1Q {
				t.Fatalf("%+v: ethertype %#x, want 802.1Q", a, uint16(typ))
			}
			var tag layers.Dot1Q
			if err := tag.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
				t.Fatal(err)
			}
			if tag.VLANIdentifier != a.VLAN || tag.Priority != 0 || tag.DropEligible {
				t.Errorf("%+v: tag %+v", a, tag)
			}
			payload, typ = tag.Payload, tag.Type
		}
		if typ != EtherTypeRARP {
			t.Fatalf("%+v: ethertype %#x, want RARP", a, uint16(typ))
		}
		var arp layers.ARP
		if err := arp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 ||
			arp.HwAddressSize != 6 || arp.ProtAddressSize != 4 || arp.Operation != 3 {
			t.Errorf("%+v: RARP header %+v", a, arp)
		}
		zero := []byte{0, 0, 0, 0}
		if !bytes.Equal(arp.SourceHwAddress, mac) || !bytes.Equal(arp.DstHwAddress, mac) ||
			!bytes.Equal(arp.SourceProtAddress, zero) || !bytes.Equal(arp.DstProtAddress, zero) {
			t.Errorf("%+v: RARP addresses %+v", a, arp)
		}
	}
}

func TestAppendRARPDoesNotAllocateIntoRoom(t *testing.T) {
	buf := make([]byte, 0, TaggedFrameLen)
	a := Address{MAC: testMAC, Tagged: true, VLAN: 7}
	if n := testing.AllocsPerRun(100, func() { buf = AppendRARP(buf[:0], a) }); n != 0 {
		t.Errorf("%v allocations per frame into a buffer with room", n)
	}
}
