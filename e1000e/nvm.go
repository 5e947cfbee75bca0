package e1000e

// NVM (EEPROM) of 64 words, read by the driver through EERD.
const (
	nvmWords    = 64
	nvmChecksum = 0x3F   // word that makes the sum come out right
	nvmSum      = 0xBABA // what words 0x00-0x3F add up to
	pciDeviceID = 0x10D3
	pciVendorID = 0x8086
)

// NVM word offsets the Linux driver reads.
const (
	nvmCompat      = 0x03
	nvmLEDSettings = 0x04 // 0xFFFF: use the driver's default LED setup
	nvmPBA0        = 0x08 // printed board assembly number
	nvmPBA1        = 0x09
	nvmInitCtrl1   = 0x0A
	nvmSubsysID    = 0x0B
	nvmSubsysVen   = 0x0C
	nvmDeviceID    = 0x0D
	nvmVendorID    = 0x0E
	nvmInitCtrl2   = 0x0F // bits 13-14 zero: no manageability mode
	nvmInitCtrl3   = 0x24 // APME (bit 10) clear: no wake-up by default
)

// buildNVM fills the NVM from the permanent MAC address: the words the
// driver reads have meaningful values, the rest read as erased (0xFFFF),
// and the checksum word closes the sum at 0xBABA.
func (n *NIC) buildNVM() {
	for i := range n.nvm {
		n.nvm[i] = 0xFFFF
	}
	for i := 0; i < 3; i++ {
		n.nvm[i] = uint16(n.perm[2*i]) | uint16(n.perm[2*i+1])<<8
	}
	n.nvm[nvmCompat] = 0x0000
	n.nvm[nvmLEDSettings] = 0xFFFF
	n.nvm[nvmPBA0] = 0x0000
	n.nvm[nvmPBA1] = 0x0000
	n.nvm[nvmInitCtrl1] = 0x0000
	n.nvm[nvmSubsysID] = pciDeviceID
	n.nvm[nvmSubsysVen] = pciVendorID
	n.nvm[nvmDeviceID] = pciDeviceID
	n.nvm[nvmVendorID] = pciVendorID
	n.nvm[nvmInitCtrl2] = 0x0000
	n.nvm[nvmInitCtrl3] = 0x0000
	n.fixNVMChecksum()
}

func (n *NIC) fixNVMChecksum() {
	var sum uint16
	for i := 0; i < nvmChecksum; i++ {
		sum += n.nvm[i]
	}
	n.nvm[nvmChecksum] = nvmSum - sum
}

// loadFromNVM does what the hardware's NVM auto-read does at reset: the
// first receive address comes from words 0-2 and is marked valid.
func (n *NIC) loadFromNVM() {
	n.mac[RA>>2] = uint32(n.nvm[0]) | uint32(n.nvm[1])<<16
	n.mac[RA>>2+1] = uint32(n.nvm[2]) | RAH_AV
}

// writeEERD performs an NVM read at once: DONE, the address and the data.
// Words beyond the NVM read as erased.
func (n *NIC) writeEERD(v uint32) {
	if v&EERD_START == 0 {
		n.mac[EERD>>2] = v &^ (EERD_START | EERD_DONE)
		return
	}
	addr := v >> eerdAddrShift & eerdAddrMask
	data := uint32(0xFFFF)
	if addr < nvmWords {
		data = uint32(n.nvm[addr])
	}
	n.mac[EERD>>2] = EERD_DONE | addr<<eerdAddrShift | data<<eerdDataShift
}

// writeEEWR writes an NVM word; the driver recomputes the checksum word
// itself, as on hardware.
func (n *NIC) writeEEWR(v uint32) {
	if v&EERD_START == 0 {
		return
	}
	addr := v >> eerdAddrShift & eerdAddrMask
	data := v >> eerdDataShift
	if addr < nvmWords {
		n.nvm[addr] = uint16(data)
	}
	n.mac[EEWR>>2] = EERD_DONE | addr<<eerdAddrShift | data<<eerdDataShift
}

// writeEECD keeps the read-only presence, auto-read and size bits; the
// request bit is granted at once.
func (n *NIC) writeEECD(v uint32) {
	const ro = EECD_PRES | EECD_AUTO_RD | eecdSizeEx | eecdFlash | EECD_GNT
	v = n.mac[EECD>>2]&ro | v&^ro
	v &^= eecdFlash // never report a flash part
	if v&EECD_REQ != 0 {
		v |= EECD_GNT
	} else {
		v &^= EECD_GNT
	}
	n.mac[EECD>>2] = v
}
