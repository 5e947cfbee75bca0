package e1000e

import "encoding/binary"

// Descriptors are views on bytes copied out of guest memory. Every accessor
// reads or writes at an explicit little-endian offset; nothing is ever cast
// to a Go struct, so a descriptor cannot be longer or shorter than the bytes
// it was built from.

// Descriptor sizes in bytes.
const (
	txDescSize   = 16
	rxDescSize   = 16 // legacy and extended
	rxPSDescSize = 32 // packet split

	txDescShift = 4 // log2(txDescSize)
)

// Transmit descriptor command bits, in the 32-bit word at offset 8 (legacy
// cmd byte shifted to bits 24-31; DTYP at bits 20-23).
const (
	txdCmdEOP  = 0x01000000 // end of packet
	txdCmdIFCS = 0x02000000 // insert FCS (the backend never carries one)
	txdCmdIC   = 0x04000000 // legacy: insert checksum
	txdCmdTSE  = 0x04000000 // extended: TCP segmentation enable
	txdCmdRS   = 0x08000000 // report status
	txdCmdDEXT = 0x20000000 // extended descriptor
	txdCmdVLE  = 0x40000000 // VLAN insertion
	txdCmdIDE  = 0x80000000 // interrupt delay enable

	txdDTYPD = 0x00100000 // extended data (clear: context)
	txdDTYPC = 0x00000000

	txdLenMask = 0x000FFFFF // extended descriptors' 20-bit length

	// Context command bits.
	txdCmdTCP = 0x01000000 // TCP (else UDP) for checksum and TSO
	txdCmdIP  = 0x02000000 // IPv4 (else IPv6) for TSO

	txdStatDD = 0x01 // status byte: descriptor done

	txdPoptsIXSM = 0x01 // insert IP checksum
	txdPoptsTXSM = 0x02 // insert TCP/UDP checksum
)

// txDesc is one 16-byte transmit descriptor of any kind.
type txDesc []byte

func (d txDesc) addr() uint64   { return binary.LittleEndian.Uint64(d[0:]) }
func (d txDesc) cmdLen() uint32 { return binary.LittleEndian.Uint32(d[8:]) }
func (d txDesc) isExt() bool    { return d.cmdLen()&txdCmdDEXT != 0 }

// isContext is true for an extended context descriptor. Like the
// hardware, only the DTYP bit that tells data from context is looked at;
// the other DTYP bits are reserved.
func (d txDesc) isContext() bool {
	return d.isExt() && d.cmdLen()&txdDTYPD == 0
}

// isData is true for an extended data descriptor.
func (d txDesc) isData() bool {
	return d.isExt() && d.cmdLen()&txdDTYPD != 0
}

// Legacy descriptor fields.
func (d txDesc) legacyLen() int  { return int(binary.LittleEndian.Uint16(d[8:])) }
func (d txDesc) legacyCSO() int  { return int(d[10]) }
func (d txDesc) legacyCSS() int  { return int(d[13]) }
func (d txDesc) special() uint16 { return binary.LittleEndian.Uint16(d[14:]) }

// Extended data descriptor fields.
func (d txDesc) dataLen() int { return int(d.cmdLen() & txdLenMask) }
func (d txDesc) popts() byte  { return d[13] }

// Context descriptor fields.
func (d txDesc) ipcss() int  { return int(d[0]) }
func (d txDesc) ipcso() int  { return int(d[1]) }
func (d txDesc) ipcse() int  { return int(binary.LittleEndian.Uint16(d[2:])) }
func (d txDesc) tucss() int  { return int(d[4]) }
func (d txDesc) tucso() int  { return int(d[5]) }
func (d txDesc) tucse() int  { return int(binary.LittleEndian.Uint16(d[6:])) }
func (d txDesc) payLen() int { return int(d.cmdLen() & txdLenMask) }
func (d txDesc) hdrLen() int { return int(d[13]) }
func (d txDesc) mss() int    { return int(binary.LittleEndian.Uint16(d[14:])) }

// Receive status bits: the legacy status byte, and the low bits of the
// extended and packet-split status_error word.
const (
	rxdStatDD    = 0x01
	rxdStatEOP   = 0x02
	rxdStatIXSM  = 0x04 // ignore checksum indication
	rxdStatVP    = 0x08 // VLAN stripped, tag in the descriptor
	rxdStatUDPCS = 0x10
	rxdStatTCPCS = 0x20
	rxdStatIPCS  = 0x40
	rxdStatPIF   = 0x80  // passed in-exact filter
	rxdStatIPIDV = 0x200 // extended: IP identification valid
	rxdStatUDPV  = 0x400 // extended: UDP checksum valid

	// Extended error bits in status_error.
	rxdExtErrTCPE = 0x20000000
	rxdExtErrIPE  = 0x40000000

	// Packet split: header status word.
	rxdPSHdrStatHDRSP   = 0x8000 // header was split off
	rxdPSHdrStatLenMask = 0x03FF
)

// rxLegacyDesc is one 16-byte legacy receive descriptor: the guest writes the
// buffer address, the device writes back the rest.
type rxLegacyDesc []byte

// writeBack fills the write-back fields except the status, which the caller
// writes last with setStatus.
func (d rxLegacyDesc) writeBack(length int, csum uint16, errs byte, vlan uint16) {
	binary.LittleEndian.PutUint16(d[8:], uint16(length))
	binary.LittleEndian.PutUint16(d[10:], csum)
	d[13] = errs
	binary.LittleEndian.PutUint16(d[14:], vlan)
}

func (d rxLegacyDesc) setStatus(s byte) { d[12] = s }

// rxExtDesc is one 16-byte extended receive descriptor. In the read format
// the guest gives the buffer address at 0; the write-back format overlays
// MRQ/RSS at 0, the status and errors at 8, the length at 12, the VLAN at 14.
type rxExtDesc []byte

// writeBack fills everything but the status_error word. hiDword is the RSS
// hash, or the IP id and packet checksum when RSS is off.
func (d rxExtDesc) writeBack(mrq, hiDword uint32, length int, vlan uint16) {
	binary.LittleEndian.PutUint32(d[0:], mrq)
	binary.LittleEndian.PutUint32(d[4:], hiDword)
	binary.LittleEndian.PutUint16(d[12:], uint16(length))
	binary.LittleEndian.PutUint16(d[14:], vlan)
}

func (d rxExtDesc) setStatusError(v uint32) { binary.LittleEndian.PutUint32(d[8:], v) }

// rxPSDesc is one 32-byte packet-split receive descriptor: four buffer
// addresses in the read format; in write-back MRQ/RSS at 0, status_error at
// 8, the first length at 12, VLAN at 14, header status at 16, the three other
// lengths at 18, 20 and 22.
type rxPSDesc []byte

func (d rxPSDesc) addr(i int) uint64 { return binary.LittleEndian.Uint64(d[8*i:]) }

// writeBack fills everything but the status_error word.
func (d rxPSDesc) writeBack(mrq, hiDword uint32, lens *[4]int, hdrStatus, vlan uint16) {
	binary.LittleEndian.PutUint32(d[0:], mrq)
	binary.LittleEndian.PutUint32(d[4:], hiDword)
	binary.LittleEndian.PutUint16(d[12:], uint16(lens[0]))
	binary.LittleEndian.PutUint16(d[14:], vlan)
	binary.LittleEndian.PutUint16(d[16:], hdrStatus)
	binary.LittleEndian.PutUint16(d[18:], uint16(lens[1]))
	binary.LittleEndian.PutUint16(d[20:], uint16(lens[2]))
	binary.LittleEndian.PutUint16(d[22:], uint16(lens[3]))
	binary.LittleEndian.PutUint64(d[24:], 0)
}

func (d rxPSDesc) setStatusError(v uint32) { binary.LittleEndian.PutUint32(d[8:], v) }
