package e1000e

// readHook says what a register read does beyond returning storage.
type readHook uint8

const (
	rdPlain     readHook = iota
	rdStatus             // STATUS is computed from CTRL and the link
	rdICR                // ICR clears per the interrupt rules
	rdICS                // ICS reads as ICR without clearing
	rdSWSM               // reading SWSM takes the SMBI semaphore
	rdStatHigh           // high half of a 64-bit counter: clears both halves
	rdWriteOnly          // write-only registers read as zero
)

// writeHook says what a register write does beyond masked storage.
type writeHook uint8

const (
	wrPlain    writeHook = iota // masked store (and write-1-to-clear bits)
	wrReadOnly                  // writes ignored
	wrCTRL
	wrSTATUS
	wrCTRLExt
	wrEECD
	wrEERD
	wrEEWR
	wrMDIC
	wrICR
	wrICS
	wrIMS
	wrIMC
	wrRCTL
	wrTCTL
	wrRDT
	wrTDT
	wrRDTR
	wrTIDV
	wrPBACLR
	wrEITR
	wrSWSM
	wrRXDCTL
)

// regRow is one register or register array of BAR0.
type regRow struct {
	name  string
	off   uint32 // byte offset of the first dword
	n     uint32 // dwords covered; arrays have more than one
	reset uint32 // value after reset (every dword of an array)
	wmask uint32 // bits a plain write stores
	// wmaskOdd, when not zero, is the mask of the odd dwords of an array
	// of register pairs (RAH in RAL/RAH); wmask is then the even dwords'.
	wmaskOdd uint32
	// legacy are bits an older server stored although the 82574L does
	// not implement them: a migration stream may carry them, and a load
	// drops them (they read back as the part returns them) instead of
	// refusing the stream.
	legacy uint32
	w1c    uint32 // bits a written 1 clears
	rc     bool   // a read clears the register (statistics)
	rd     readHook
	wr     writeHook
	keep   bool // survives a software reset (CTRL.RST)
}

// maskAt returns the write mask of dword i of the row.
func (r *regRow) maskAt(i uint32) uint32 {
	if r.wmaskOdd != 0 && i&1 == 1 {
		return r.wmaskOdd
	}
	return r.wmask
}

// regAlias maps a legacy offset range onto the canonical registers.
type regAlias struct {
	off, to, n uint32
}

const allBits = 0xFFFFFFFF

func plainReg(name string, off, reset, wmask uint32) regRow {
	return regRow{name: name, off: off, n: 1, reset: reset, wmask: wmask}
}

func regArray(name string, off, n, wmask uint32) regRow {
	return regRow{name: name, off: off, n: n, wmask: wmask}
}

func regHook(name string, off, reset, wmask uint32, rd readHook, wr writeHook) regRow {
	return regRow{name: name, off: off, n: 1, reset: reset, wmask: wmask, rd: rd, wr: wr}
}

func regRO(name string, off, reset uint32) regRow {
	return regRow{name: name, off: off, n: 1, reset: reset, wr: wrReadOnly}
}

func stat(name string, off uint32) regRow {
	return regRow{name: name, off: off, n: 1, rc: true, wr: wrReadOnly}
}

// statPair is a 64-bit counter: reading the high half clears both halves,
// reading the low half clears nothing.
func statPair(name string, off uint32) []regRow {
	return []regRow{
		{name: name + "L", off: off, n: 1, wr: wrReadOnly},
		{name: name + "H", off: off + 4, n: 1, wr: wrReadOnly, rd: rdStatHigh},
	}
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
)

// buildRegTable lists every register of the model, sorted by offset. It is
// a pure function: the table it returns is never modified.
func buildRegTable() []regRow {
	t := []regRow{
		regHook("CTRL", CTRL, ctrlReset, allBits, rdPlain, wrCTRL),
		regHook("STATUS", STATUS, statusReset, 0, rdStatus, wrSTATUS),
		regHook("EECD", EECD, eecdReset, allBits, rdPlain, wrEECD),
		regHook("EERD", EERD, EERD_DONE, 0, rdPlain, wrEERD),
		regHook("CTRL_EXT", CTRL_EXT, 0, allBits, rdPlain, wrCTRLExt),
		{name: "FLA", off: FLA, n: 1, wmask: allBits, keep: true},
		regHook("MDIC", MDIC, MDIC_READY, 0, rdPlain, wrMDIC),
		plainReg("SCTL", SCTL, 0, allBits),
		plainReg("FCAL", FCAL, 0, allBits),
		plainReg("FCAH", FCAH, 0, 0xFFFF),
		plainReg("FCT", FCT, 0, 0xFFFF),
		plainReg("VET", VET, 0x8100, 0xFFFF),
		regHook("ICR", ICR, 0, 0, rdICR, wrICR),
		plainReg("ITR", ITR, 0, itrMask),
		regHook("ICS", ICS, 0, 0, rdICS, wrICS),
		regHook("IMS", IMS, 0, 0, rdPlain, wrIMS),
		regHook("IMC", IMC, 0, 0, rdWriteOnly, wrIMC),
		plainReg("EIAC", EIAC, 0, eiacMask),
		plainReg("IAM", IAM, 0, allBits),
		plainReg("IVAR", IVAR, 0, 0x800FFFFF),
		{name: "EITR", off: EITR0, n: numMSIXVecs, wmask: itrMask},
		regHook("RCTL", RCTL, 0, 0x7FFFFFFE, rdPlain, wrRCTL),
		plainReg("FCTTV", FCTTV, 0, 0xFFFF),
		{name: "TXCW", off: TXCW, n: 1, wmask: txcwMask, legacy: ^uint32(txcwMask)},
		regRO("RXCW", RXCW, 0),
		regHook("TCTL", TCTL, 0, allBits, rdPlain, wrTCTL),
		plainReg("TCTL_EXT", TCTL_EXT, 0, allBits),
		{name: "TIPG", off: TIPG, n: 1, reset: 0x8 | 0x8<<10 | 0x6<<20, wmask: tipgMask, legacy: ^uint32(tipgMask)},
		plainReg("AIT", AIT, 0, 0xFFFF),
		plainReg("LEDCTL", LEDCTL, 0x00068302, allBits),
		plainReg("EXTCNF_CTRL", EXTCNF_CTRL, 0x8, allBits),
		plainReg("EXTCNF_SIZE", EXTCNF_SIZE, 0, allBits),
		plainReg("POEMB", POEMB, 0x30D, allBits),
		{name: "PBA", off: PBA, n: 1, reset: 0x00140014, wmask: 0xFFFF, keep: true},
		{name: "PBS", off: PBS, n: 1, reset: 0x28, wmask: 0x3F, keep: true},
		plainReg("EEMNGCTL", EEMNGCTL, EEMNGCTL_CFG_DONE0|0x80000000, 0),
		regHook("EEWR", EEWR, EERD_DONE, 0, rdPlain, wrEEWR),
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
		plainReg("RDBAL0", RDBAL0, 0, dbalMask),
		plainReg("RDBAH0", RDBAH0, 0, allBits),
		plainReg("RDLEN0", RDLEN0, 0, dlenMask),
		plainReg("RDH0", RDH0, 0, ringIdxMask),
		regHook("RDT0", RDT0, 0, ringIdxMask, rdPlain, wrRDT),
		regHook("RDTR", RDTR, 0, 0xFFFF, rdPlain, wrRDTR),
		regHook("RXDCTL", RXDCTL, 0x00010000, 0x3F3F3F3F, rdPlain, wrRXDCTL),
		plainReg("RADV", RADV, 0, 0xFFFF),
		plainReg("RDBAL1", RDBAL1, 0, dbalMask),
		plainReg("RDBAH1", RDBAH1, 0, allBits),
		plainReg("RDLEN1", RDLEN1, 0, dlenMask),
		plainReg("RDH1", RDH1, 0, ringIdxMask),
		regHook("RDT1", RDT1, 0, ringIdxMask, rdPlain, wrRDT),
		plainReg("RXDCTL1", RXDCTL1, 0x00010000, 0x3F3F3F3F),
		plainReg("RSRPD", RSRPD, 0, 0xFFF),
		plainReg("RAID", RAID, 0, 0xFFFF),
		plainReg("CPUVEC", CPUVEC, 0, allBits),
		plainReg("TDFH", TDFH, 0x600, 0x1FFF),
		plainReg("TDFT", TDFT, 0x600, 0x1FFF),
		plainReg("TDFHS", TDFHS, 0x600, 0x1FFF),
		plainReg("TDFTS", TDFTS, 0x600, 0x1FFF),
		plainReg("TDFPC", TDFPC, 0, 0x1FFF),
		plainReg("TDBAL0", TDBAL0, 0, dbalMask),
		plainReg("TDBAH0", TDBAH0, 0, allBits),
		plainReg("TDLEN0", TDLEN0, 0, dlenMask),
		plainReg("TDH0", TDH0, 0, ringIdxMask),
		regHook("TDT0", TDT0, 0, ringIdxMask, rdPlain, wrTDT),
		regHook("TIDV", TIDV, 0, 0xFFFF, rdPlain, wrTIDV),
		plainReg("TXDCTL", TXDCTL, 0, allBits),
		plainReg("TADV", TADV, 0, 0xFFFF),
		plainReg("TARC0", TARC0, 0x3|1<<10, 0x7C0007FF),
		plainReg("TDBAL1", TDBAL1, 0, dbalMask),
		plainReg("TDBAH1", TDBAH1, 0, allBits),
		plainReg("TDLEN1", TDLEN1, 0, dlenMask),
		plainReg("TDH1", TDH1, 0, ringIdxMask),
		regHook("TDT1", TDT1, 0, ringIdxMask, rdPlain, wrTDT),
		plainReg("TXDCTL1", TXDCTL1, 0, allBits),
		plainReg("TARC1", TARC1, 0x3|1<<10, 0x7C0007FF),
	}
	t = append(t,
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
		stat("GPTC", GPTC))
	t = append(t, statPair("GORC", GORCL)...)
	t = append(t, statPair("GOTC", GOTCL)...)
	t = append(t,
		stat("RNBC", RNBC), stat("RUC", RUC), stat("RFC", RFC),
		stat("ROC", ROC), stat("RJC", RJC), stat("MGTPRC", MGTPRC),
		stat("MGTPDC", MGTPDC), stat("MGTPTC", MGTPTC))
	t = append(t, statPair("TOR", TORL)...)
	t = append(t, statPair("TOT", TOTL)...)
	t = append(t,
		stat("TPR", TPR), stat("TPT", TPT), stat("PTC64", PTC64),
		stat("PTC127", PTC127), stat("PTC255", PTC255),
		stat("PTC511", PTC511), stat("PTC1023", PTC1023),
		stat("PTC1522", PTC1522), stat("MPTC", MPTC), stat("BPTC", BPTC),
		stat("TSCTC", TSCTC), stat("TSCTFC", TSCTFC), stat("IAC", IAC),
		stat("ICRXPTC", ICRXPTC), stat("ICRXATC", ICRXATC),
		stat("ICTXPTC", ICTXPTC), stat("ICTXATC", ICTXATC),
		stat("ICTXQEC", ICTXQEC), stat("ICTXQMTC", ICTXQMTC),
		stat("ICRXDMTC", ICRXDMTC), stat("ICRXOC", ICRXOC))
	t = append(t,
		plainReg("RXCSUM", RXCSUM, 0x300, 0x3FFF), // PCSS, IPOFL, TUOFL, CRCOFL, IPPCSE, PCSD
		plainReg("RLPML", RLPML, 0, 0x3FFF),
		plainReg("RFCTL", RFCTL, 0, allBits),
		regArray("MAVTV", MAVTV0, 4, 0xFFFF),
		regArray("MTA", MTA, 128, allBits),
		// RAL(n) and RAH(n) alternate: RAL keeps all bits, RAH only its
		// address, ASEL and AV bits (Linux's register test checks it).
		regRow{name: "RA", off: RA, n: 2 * numRA, wmask: allBits, wmaskOdd: rahMask, legacy: ^uint32(rahMask)},
		regArray("VFTA", VFTA, 128, allBits),
		plainReg("WUC", WUC, 0, allBits),
		plainReg("WUFC", WUFC, 0, allBits),
		regRow{name: "WUS", off: WUS, n: 1, w1c: allBits},
		plainReg("MRQC", MRQC, 0, allBits),
		plainReg("MANC", MANC, 0, allBits),
		plainReg("MFVAL", MFVAL, 0, allBits),
		plainReg("IPAV", IPAV, 0, allBits),
		regArray("IP4AT", IP4AT, 7, allBits),
		plainReg("MANC2H", MANC2H, 0, allBits),
		regArray("IP6AT", IP6AT, 4, allBits),
		regRO("WUPL", WUPL, 0),
		regArray("WUPM", WUPM, 32, allBits),
		regRow{name: "GCR", off: GCR, n: 1, reset: gcrReset, wmask: ^uint32(gcrRO)},
		regArray("GSCL", GSCL_1, 4, allBits),
		regArray("GSCN", GSCN_0, 4, allBits),
		plainReg("FACTPS", FACTPS, 0x20000001, allBits),
		plainReg("FUNCTAG", FUNCTAG, 0, allBits),
		regHook("SWSM", SWSM, 0, 0x3, rdSWSM, wrSWSM),
		regRO("FWSM", FWSM, 0),
		plainReg("GCR2", GCR2, 0, allBits),
		regHook("PBACLR", PBACLR, 0, 0x1F, rdPlain, wrPBACLR),
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
	)
	// EITR is hooked so that a write can restart throttling.
	for i := range t {
		if t[i].off == EITR0 {
			t[i].wr = wrEITR
		}
	}
	return t
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

// The register table and its index are computed once and never written.
var (
	regTable   = buildRegTable()
	regAliases = buildRegAliases()
	regIdx     = buildRegIndex(regTable, regAliases)
)
