package e1000e

import "errors"

// regRow is one register or register array of BAR0, and everything the
// model knows about it: where it is, what it holds after reset, which bits
// the 82574L implements, what a read and a write do, and how it travels in
// a migration stream and is checked when loaded. Behaviour that needs code
// is a function named on the row, so that the row tells what the register
// does and where to read the rest.
type regRow struct {
	name  string
	off   uint32 // byte offset of the first dword
	n     uint32 // dwords covered; arrays have more than one
	reset uint32 // value after reset (every dword of an array)
	// mask are the bits of the register the part implements: what a
	// write stores (writeStore), sets or clears (writeSet, writeClear), or
	// what the row's write function may leave in it (writeFunc). The
	// other bits read as their reset value.
	mask uint32
	// maskOdd, when not zero, is the mask of the odd dwords of an array
	// of register pairs (RAH in RAL/RAH); mask is then the even dwords'.
	maskOdd uint32
	w1c     uint32 // bits a written 1 clears (writeStore)
	// legacy are bits an older server stored although the 82574L does
	// not implement them: a migration stream may carry them, and a load
	// drops them (they read back as the part returns them) instead of
	// refusing the stream.
	legacy uint32
	keep   bool // survives a software reset (CTRL.RST)

	read   readKind
	readFn func(n *NIC, d uint32) uint32 // readFunc: the value of dword d, and the read's side effects

	write  writeKind
	target uint32 // writeSet, writeClear: the register the bits go to
	// effect runs after the write's store with the value written (all 32
	// bits): what the write starts (a transmit, a reset, an interrupt),
	// or for writeFunc the whole write.
	effect func(n *NIC, v uint32)

	// home is the migration section that carries the register:
	// secRegisters (by name, RegistersState), another section (rings,
	// interrupts, link, statistics, receive addresses), or none when
	// the value is a constant, computed, or never held.
	home string
	// check refuses a loaded value (home secRegisters) that no write
	// could have produced, beyond what mask already rules out.
	check func(v uint32) error
}

// readKind is what a read of a register returns.
type readKind uint8

const (
	readStored readKind = iota // the stored value
	readClears                 // the stored value, which the read clears (statistics)
	readZero                   // nothing: write-only registers read as zero
	readFunc                   // computed by the row's readFn
)

// writeKind is what a write stores before the row's effect runs.
type writeKind uint8

const (
	writeStore writeKind = iota // the written bits within mask; a 1 clears w1c bits
	writeSet                    // bits written 1 within mask are set in target (IMS, ICS)
	writeClear                  // bits written 1 within mask are cleared in target (IMC)
	writeFunc                   // nothing: the row's effect is the whole write
)

// maskAt returns the implemented bits of dword i of the row.
func (r *regRow) maskAt(i uint32) uint32 {
	if r.maskOdd != 0 && i&1 == 1 {
		return r.maskOdd
	}
	return r.mask
}

// carriedBy returns the row with another home in the migration state.
func (r regRow) carriedBy(section string) regRow {
	r.home = section
	return r
}

// then returns the row with a write effect.
func (r regRow) then(effect func(n *NIC, v uint32)) regRow {
	r.effect = effect
	return r
}

// kept returns the row marked to survive a software reset.
func (r regRow) kept() regRow {
	r.keep = true
	return r
}

// regAlias maps a legacy offset range onto the canonical registers.
type regAlias struct {
	off, to, n uint32
}

const allBits = 0xFFFFFFFF

// plainReg is a register a write stores within mask, carried by name in
// the registers section.
func plainReg(name string, off, reset, mask uint32) regRow {
	return regRow{name: name, off: off, n: 1, reset: reset, mask: mask, home: secRegisters}
}

// regArray is an array of plain registers, all reset to zero.
func regArray(name string, off, n, mask uint32) regRow {
	return regRow{name: name, off: off, n: n, mask: mask, home: secRegisters}
}

// constReg is a read-only register that always reads as its reset value.
func constReg(name string, off, reset uint32) regRow {
	return regRow{name: name, off: off, n: 1, reset: reset}
}

// stat is a 32-bit statistics counter: read-only, cleared by a read.
func stat(name string, off uint32) regRow {
	return regRow{name: name, off: off, n: 1, read: readClears, home: secStats}
}

// stat64 is a 64-bit counter, its low half at off: reading the high half
// clears both halves, reading the low half clears nothing.
func stat64(name string, off uint32) regRow {
	high := off>>2 + 1
	return regRow{name: name, off: off, n: 2, read: readFunc, home: secStats,
		readFn: func(n *NIC, d uint32) uint32 {
			v := n.mac[d]
			if d == high {
				n.mac[d-1], n.mac[d] = 0, 0
			}
			return v
		}}
}

// Reset values the core relies on.
const (
	ctrlReset   = CTRL_FD | CTRL_SWDPIN2 | CTRL_SWDPIN0 | CTRL_SPD_1000 | CTRL_SLU | CTRL_ADVD3WUC
	statusReset = STATUS_ASDV_1000 | STATUS_LU
	eecdReset   = EECD_AUTO_RD | EECD_PRES
	gcrRO       = 0x06800000 // L1 entry latency bits: read only
	gcrReset    = 0x00000200 | gcrRO
	itrMask     = 0x0000FFFF
	tipgMask    = 0x3FFFFFFF // IPGT, IPGR1, IPGR2; bits 30-31 reserved
	txcwMask    = 0xC000FFFF // TxConfigWord, TxConfig (bit 30), ANE (bit 31)
	rahMask     = 0x8003FFFF // address bits 47:32, ASEL (17:16), AV (31)
	dlenMask    = 0x000FFF80
	dbalMask    = 0xFFFFFFF0
	ringIdxMask = 0x0000FFFF
	// Self-clearing command bits: a write acts on them, a read returns 0.
	ctrlSelfClearing    = CTRL_RST
	ctrlExtSelfClearing = CTRL_EXT_ASDCHK | CTRL_EXT_EE_RST
)

// buildRegTable lists every register of the model, sorted by offset. It is
// a pure function: the table it returns is never modified.
func buildRegTable() []regRow {
	t := []regRow{
		// CTRL.RST resets the device and clears itself.
		plainReg("CTRL", CTRL, ctrlReset, allBits&^ctrlSelfClearing).then((*NIC).writeCTRL),
		// STATUS is computed from CTRL and the link; a write can only
		// clear PHYRA (by writing it 0). The link section carries it.
		{name: "STATUS", off: STATUS, n: 1, reset: statusReset, mask: STATUS_PHYRA,
			read: readFunc, readFn: (*NIC).readSTATUS, write: writeFunc, effect: (*NIC).writeSTATUS, home: secLink},
		// EECD keeps its presence, auto-read and size bits and grants a
		// request at once.
		{name: "EECD", off: EECD, n: 1, reset: eecdReset, mask: allBits,
			write: writeFunc, effect: (*NIC).writeEECD, home: secRegisters, check: checkEECD},
		{name: "EERD", off: EERD, n: 1, reset: EERD_DONE, mask: allBits,
			write: writeFunc, effect: (*NIC).writeEERD, home: secRegisters},
		// ASDCHK and EE_RST are commands that clear themselves.
		plainReg("CTRL_EXT", CTRL_EXT, 0, allBits&^ctrlExtSelfClearing).then((*NIC).writeCTRLExt),
		plainReg("FLA", FLA, 0, allBits).kept(),
		{name: "MDIC", off: MDIC, n: 1, reset: MDIC_READY, mask: allBits,
			write: writeFunc, effect: (*NIC).writeMDIC, home: secRegisters},
		plainReg("SCTL", SCTL, 0, allBits),
		plainReg("FCAL", FCAL, 0, allBits),
		plainReg("FCAH", FCAH, 0, 0xFFFF),
		plainReg("FCT", FCT, 0, 0xFFFF),
		plainReg("VET", VET, 0x8100, 0xFFFF),
		// ICR latches the causes (ICS, IMS and IMC share its mask); a
		// read may clear it, a written 1 clears a cause.
		{name: "ICR", off: ICR, n: 1, mask: imsValid | ICR_INT_ASSERTED,
			read: readFunc, readFn: (*NIC).readICR, write: writeFunc, effect: (*NIC).writeICR, home: secInterrupts},
		plainReg("ITR", ITR, 0, itrMask).carriedBy(secInterrupts),
		// ICS reads as ICR without clearing it.
		{name: "ICS", off: ICS, n: 1, mask: imsValid, read: readFunc, readFn: (*NIC).readICS,
			write: writeSet, target: ICR, effect: (*NIC).writeICS},
		{name: "IMS", off: IMS, n: 1, mask: imsValid,
			write: writeSet, target: IMS, effect: (*NIC).writeIMS, home: secInterrupts},
		{name: "IMC", off: IMC, n: 1, mask: imsValid, read: readZero,
			write: writeClear, target: IMS, effect: (*NIC).writeIMC},
		plainReg("EIAC", EIAC, 0, eiacMask).carriedBy(secInterrupts),
		plainReg("IAM", IAM, 0, allBits).carriedBy(secInterrupts),
		plainReg("IVAR", IVAR, 0, 0x800FFFFF).carriedBy(secInterrupts),
		regArray("EITR", EITR0, numMSIXVecs, itrMask).carriedBy(secInterrupts),
		plainReg("RCTL", RCTL, 0, 0x7FFFFFFE).then((*NIC).writeRCTL),
		plainReg("FCTTV", FCTTV, 0, 0xFFFF),
		{name: "TXCW", off: TXCW, n: 1, mask: txcwMask, legacy: ^uint32(txcwMask), home: secRegisters},
		constReg("RXCW", RXCW, 0),
		plainReg("TCTL", TCTL, 0, allBits).then((*NIC).writeTCTL),
		plainReg("TCTL_EXT", TCTL_EXT, 0, allBits),
		{name: "TIPG", off: TIPG, n: 1, reset: 0x8 | 0x8<<10 | 0x6<<20, mask: tipgMask, legacy: ^uint32(tipgMask), home: secRegisters},
		plainReg("AIT", AIT, 0, 0xFFFF),
		plainReg("LEDCTL", LEDCTL, 0x00068302, allBits),
		plainReg("EXTCNF_CTRL", EXTCNF_CTRL, 0x8, allBits),
		plainReg("EXTCNF_SIZE", EXTCNF_SIZE, 0, allBits),
		plainReg("POEMB", POEMB, 0x30D, allBits),
		plainReg("PBA", PBA, 0x00140014, 0xFFFF).kept(),
		plainReg("PBS", PBS, 0x28, 0x3F).kept(),
		constReg("EEMNGCTL", EEMNGCTL, EEMNGCTL_CFG_DONE0|0x80000000),
		{name: "EEWR", off: EEWR, n: 1, reset: EERD_DONE, mask: allBits,
			write: writeFunc, effect: (*NIC).writeEEWR, home: secRegisters},
		plainReg("FLOP", FLOP, 0, allBits),
		plainReg("ERT", ERT, 0, 0x1FFF),
		plainReg("FCRTL", FCRTL, 0, 0x8000FFF8),
		plainReg("FCRTH", FCRTH, 0, 0xFFF8),
		plainReg("PSRCTL", PSRCTL, 2|4<<8|4<<16, 0x3F3F3F7F),
		plainReg("RDFH", RDFH, 0, 0x1FFF),
		plainReg("RDFT", RDFT, 0, 0x1FFF),
		plainReg("RDFHS", RDFHS, 0, 0x1FFF),
		plainReg("RDFTS", RDFTS, 0, 0x1FFF),
		plainReg("RDFPC", RDFPC, 0, 0x1FFF),
		plainReg("RDBAL0", RDBAL0, 0, dbalMask).carriedBy(secRXRing),
		plainReg("RDBAH0", RDBAH0, 0, allBits).carriedBy(secRXRing),
		plainReg("RDLEN0", RDLEN0, 0, dlenMask).carriedBy(secRXRing),
		plainReg("RDH0", RDH0, 0, ringIdxMask).carriedBy(secRXRing),
		plainReg("RDT0", RDT0, 0, ringIdxMask).carriedBy(secRXRing).then((*NIC).writeRDT),
		// RDTR.FPD (bit 31) flushes the pending receive interrupt and
		// reads as 0.
		plainReg("RDTR", RDTR, 0, 0xFFFF).then((*NIC).writeRDTR),
		// The 82574 shares RXDCTL between the two queues.
		plainReg("RXDCTL", RXDCTL, 0x00010000, 0x3F3F3F3F).then((*NIC).writeRXDCTL),
		plainReg("RADV", RADV, 0, 0xFFFF),
		plainReg("RDBAL1", RDBAL1, 0, dbalMask).carriedBy(secRXRing),
		plainReg("RDBAH1", RDBAH1, 0, allBits).carriedBy(secRXRing),
		plainReg("RDLEN1", RDLEN1, 0, dlenMask).carriedBy(secRXRing),
		plainReg("RDH1", RDH1, 0, ringIdxMask).carriedBy(secRXRing),
		plainReg("RDT1", RDT1, 0, ringIdxMask).carriedBy(secRXRing).then((*NIC).writeRDT),
		plainReg("RXDCTL1", RXDCTL1, 0x00010000, 0x3F3F3F3F),
		plainReg("RSRPD", RSRPD, 0, 0xFFF),
		plainReg("RAID", RAID, 0, 0xFFFF),
		plainReg("CPUVEC", CPUVEC, 0, allBits),
		plainReg("TDFH", TDFH, 0x600, 0x1FFF),
		plainReg("TDFT", TDFT, 0x600, 0x1FFF),
		plainReg("TDFHS", TDFHS, 0x600, 0x1FFF),
		plainReg("TDFTS", TDFTS, 0x600, 0x1FFF),
		plainReg("TDFPC", TDFPC, 0, 0x1FFF),
		plainReg("TDBAL0", TDBAL0, 0, dbalMask).carriedBy(secTXRing),
		plainReg("TDBAH0", TDBAH0, 0, allBits).carriedBy(secTXRing),
		plainReg("TDLEN0", TDLEN0, 0, dlenMask).carriedBy(secTXRing),
		plainReg("TDH0", TDH0, 0, ringIdxMask).carriedBy(secTXRing),
		plainReg("TDT0", TDT0, 0, ringIdxMask).carriedBy(secTXRing).then((*NIC).writeTDT),
		// TIDV.FPD (bit 31) flushes the pending transmit interrupt and
		// reads as 0.
		plainReg("TIDV", TIDV, 0, 0xFFFF).then((*NIC).writeTIDV),
		plainReg("TXDCTL", TXDCTL, 0, allBits),
		plainReg("TADV", TADV, 0, 0xFFFF),
		plainReg("TARC0", TARC0, 0x3|1<<10, 0x7C0007FF),
		plainReg("TDBAL1", TDBAL1, 0, dbalMask).carriedBy(secTXRing),
		plainReg("TDBAH1", TDBAH1, 0, allBits).carriedBy(secTXRing),
		plainReg("TDLEN1", TDLEN1, 0, dlenMask).carriedBy(secTXRing),
		plainReg("TDH1", TDH1, 0, ringIdxMask).carriedBy(secTXRing),
		plainReg("TDT1", TDT1, 0, ringIdxMask).carriedBy(secTXRing).then((*NIC).writeTDT),
		plainReg("TXDCTL1", TXDCTL1, 0, allBits),
		plainReg("TARC1", TARC1, 0x3|1<<10, 0x7C0007FF),

		stat("CRCERRS", CRCERRS), stat("ALGNERRC", ALGNERRC),
		stat("SYMERRS", SYMERRS), stat("RXERRC", RXERRC), stat("MPC", MPC),
		stat("SCC", SCC), stat("ECOL", ECOL), stat("MCC", MCC),
		stat("LATECOL", LATECOL), stat("COLC", COLC), stat("DC", DC),
		stat("TNCRS", TNCRS), stat("SEC", SEC), stat("CEXTERR", CEXTERR),
		stat("RLEC", RLEC), stat("XONRXC", XONRXC), stat("XONTXC", XONTXC),
		stat("XOFFRXC", XOFFRXC), stat("XOFFTXC", XOFFTXC),
		stat("FCRUC", FCRUC), stat("PRC64", PRC64), stat("PRC127", PRC127),
		stat("PRC255", PRC255), stat("PRC511", PRC511),
		stat("PRC1023", PRC1023), stat("PRC1522", PRC1522),
		stat("GPRC", GPRC), stat("BPRC", BPRC), stat("MPRC", MPRC),
		stat("GPTC", GPTC), stat64("GORC", GORCL), stat64("GOTC", GOTCL),
		stat("RNBC", RNBC), stat("RUC", RUC), stat("RFC", RFC),
		stat("ROC", ROC), stat("RJC", RJC), stat("MGTPRC", MGTPRC),
		stat("MGTPDC", MGTPDC), stat("MGTPTC", MGTPTC),
		stat64("TOR", TORL), stat64("TOT", TOTL),
		stat("TPR", TPR), stat("TPT", TPT), stat("PTC64", PTC64),
		stat("PTC127", PTC127), stat("PTC255", PTC255),
		stat("PTC511", PTC511), stat("PTC1023", PTC1023),
		stat("PTC1522", PTC1522), stat("MPTC", MPTC), stat("BPTC", BPTC),
		stat("TSCTC", TSCTC), stat("TSCTFC", TSCTFC), stat("IAC", IAC),
		stat("ICRXPTC", ICRXPTC), stat("ICRXATC", ICRXATC),
		stat("ICTXPTC", ICTXPTC), stat("ICTXATC", ICTXATC),
		stat("ICTXQEC", ICTXQEC), stat("ICTXQMTC", ICTXQMTC),
		stat("ICRXDMTC", ICRXDMTC), stat("ICRXOC", ICRXOC),

		plainReg("RXCSUM", RXCSUM, 0x300, 0x3FFF), // PCSS, IPOFL, TUOFL, CRCOFL, IPPCSE, PCSD
		plainReg("RLPML", RLPML, 0, 0x3FFF),
		plainReg("RFCTL", RFCTL, 0, allBits),
		regArray("MAVTV", MAVTV0, 4, 0xFFFF),
		// MTA and VFTA travel in "registers", not "filters": the hash
		// and the VLAN filter work whatever rx-filter-size is.
		regArray("MTA", MTA, 128, allBits),
		// RAL(n) and RAH(n) alternate: RAL keeps all bits, RAH only its
		// address, ASEL and AV bits (Linux's register test checks it).
		// The filters section carries them, or nothing when
		// rx-filter-size is 0.
		{name: "RA", off: RA, n: 2 * numRA, mask: allBits, maskOdd: rahMask, legacy: ^uint32(rahMask), home: secFilters},
		regArray("VFTA", VFTA, 128, allBits),
		plainReg("WUC", WUC, 0, allBits),
		plainReg("WUFC", WUFC, 0, allBits),
		{name: "WUS", off: WUS, n: 1, w1c: allBits, home: secRegisters},
		plainReg("MRQC", MRQC, 0, allBits),
		plainReg("MANC", MANC, 0, allBits),
		plainReg("MFVAL", MFVAL, 0, allBits),
		plainReg("IPAV", IPAV, 0, allBits),
		regArray("IP4AT", IP4AT, 7, allBits),
		plainReg("MANC2H", MANC2H, 0, allBits),
		regArray("IP6AT", IP6AT, 4, allBits),
		constReg("WUPL", WUPL, 0),
		regArray("WUPM", WUPM, 32, allBits),
		plainReg("GCR", GCR, gcrReset, ^uint32(gcrRO)),
		regArray("GSCL", GSCL_1, 4, allBits),
		regArray("GSCN", GSCN_0, 4, allBits),
		plainReg("FACTPS", FACTPS, 0x20000001, allBits),
		plainReg("FUNCTAG", FUNCTAG, 0, allBits),
		// Reading SWSM takes the SMBI semaphore.
		{name: "SWSM", off: SWSM, n: 1, mask: 0x3, read: readFunc, readFn: (*NIC).readSWSM, home: secRegisters},
		constReg("FWSM", FWSM, 0), // no firmware
		plainReg("GCR2", GCR2, 0, allBits),
		plainReg("PBACLR", PBACLR, 0, 0x1F).then((*NIC).writePBACLR),
		regArray("RETA", RETA, 32, allBits),
		regArray("RSSRK", RSSRK, 10, allBits),
		regArray("FFLT", FFLT, 16, 0x7FF),
		regArray("FFMT", FFMT, 256, 0xF),
		regArray("FFVT", FFVT, 256, allBits),
		plainReg("SYSTIML", SYSTIML, 0, allBits),
		plainReg("SYSTIMH", SYSTIMH, 0, allBits),
		plainReg("TIMINCA", TIMINCA, 0, allBits),
		plainReg("TSYNCTXCTL", TSYNCTXCTL, 0, allBits),
		plainReg("TXSTMPL", TXSTMPL, 0, allBits),
		plainReg("TXSTMPH", TXSTMPH, 0, allBits),
		plainReg("TSYNCRXCTL", TSYNCRXCTL, 0, allBits),
		plainReg("RXSTMPL", RXSTMPL, 0, allBits),
		plainReg("RXSTMPH", RXSTMPH, 0, allBits),
	}
	return t
}

// checkEECD refuses an EECD no NVM of this model reports: present,
// auto-read done, never flash, the 64-word size.
func checkEECD(v uint32) error {
	if v&(EECD_PRES|EECD_AUTO_RD) != EECD_PRES|EECD_AUTO_RD || v&eecdFlash != 0 || v&eecdSizeEx != 0 {
		return errors.New("NVM presence or size bits")
	}
	return nil
}

// buildRegAliases lists the legacy (82542-compatible) offsets.
func buildRegAliases() []regAlias {
	return []regAlias{
		{off: CTRL_DUP, to: CTRL, n: 1},
		{off: 0x00040, to: RA, n: 2 * numRA},
		{off: 0x00108, to: RDTR, n: 1},
		{off: 0x00110, to: RDBAL0, n: 3}, // RDBAL, RDBAH, RDLEN
		{off: 0x00120, to: RDH0, n: 1},
		{off: 0x00128, to: RDT0, n: 1},
		{off: 0x00160, to: FCRTH, n: 1},
		{off: 0x00168, to: FCRTL, n: 1},
		{off: 0x00420, to: TDBAL0, n: 3}, // TDBAL, TDBAH, TDLEN
		{off: 0x00430, to: TDH0, n: 1},
		{off: 0x00438, to: TDT0, n: 1},
		{off: 0x00440, to: TIDV, n: 1},
		{off: 0x00600, to: VFTA, n: 128},
		{off: 0x08000, to: RDFH, n: 1},
		{off: 0x08008, to: RDFT, n: 1},
		{off: 0x08010, to: TDFH, n: 1},
		{off: 0x08018, to: TDFT, n: 1},
	}
}

// regIndex finds a register row from a BAR0 dword index in one lookup.
type regIndex struct {
	row   [bar0Size / 4]uint16 // 1 + row number; 0 = no register
	canon [bar0Size / 4]uint16 // dword index of the storage (aliases resolved)
}

// buildRegIndex is pure: it derives the lookup arrays from the table and
// the aliases. Overlaps are a programming error caught by the table test.
func buildRegIndex(t []regRow, aliases []regAlias) *regIndex {
	x := new(regIndex)
	for r, row := range t {
		for i := uint32(0); i < row.n; i++ {
			d := row.off/4 + i
			x.row[d] = uint16(r + 1)
			x.canon[d] = uint16(d)
		}
	}
	for _, a := range aliases {
		for i := uint32(0); i < a.n; i++ {
			d := a.off/4 + i
			c := a.to/4 + i
			x.row[d] = x.row[c]
			x.canon[d] = uint16(c)
		}
	}
	return x
}

// regFile is the register table with its index.
type regFile struct {
	rows []regRow
	idx  *regIndex
}

// The register table and its index are computed once and never written.
// A NIC reaches them through its own regFile (n.regs): the rows name
// functions that lead back to code walking the table (CTRL.RST resets
// the device), which a package-level initialiser cannot refer to.
// Functions without a NIC (a loaded state's checks) use them directly.
var (
	regTable = buildRegTable()
	regIdx   = buildRegIndex(regTable, buildRegAliases())
)

// rowByName finds a table row by name.
func rowByName(name string) (*regRow, bool) {
	for i := range regTable {
		if regTable[i].name == name {
			return &regTable[i], true
		}
	}
	return nil, false
}
