package e1000e

// Register offsets in BAR0, with the names of Linux's e1000e regs.h. Both
// halves of the model use them; the register table (regs_table.go) gives
// each its reset value, write mask and access rules.
const (
	CTRL        = 0x00000 // device control
	CTRL_DUP    = 0x00004 // alias of CTRL
	STATUS      = 0x00008 // device status (computed on read)
	EECD        = 0x00010 // EEPROM/flash control
	EERD        = 0x00014 // EEPROM read
	CTRL_EXT    = 0x00018 // extended device control
	FLA         = 0x0001C // flash access
	MDIC        = 0x00020 // MDI control (PHY access)
	SCTL        = 0x00024 // SerDes control
	FCAL        = 0x00028 // flow control address low
	FCAH        = 0x0002C // flow control address high
	FCT         = 0x00030 // flow control type
	VET         = 0x00038 // VLAN ether type
	ICR         = 0x000C0 // interrupt cause read
	ITR         = 0x000C4 // interrupt throttling rate
	ICS         = 0x000C8 // interrupt cause set
	IMS         = 0x000D0 // interrupt mask set/read
	IMC         = 0x000D8 // interrupt mask clear
	EIAC        = 0x000DC // extended interrupt auto clear (82574)
	IAM         = 0x000E0 // interrupt acknowledge auto mask
	IVAR        = 0x000E4 // interrupt vector allocation (82574)
	EITR0       = 0x000E8 // MSI-X vector n throttling at EITR0+4n
	RCTL        = 0x00100 // receive control
	FCTTV       = 0x00170 // flow control transmit timer value
	TXCW        = 0x00178 // transmit configuration word
	RXCW        = 0x00180 // receive configuration word
	TCTL        = 0x00400 // transmit control
	TCTL_EXT    = 0x00404 // extended transmit control
	TIPG        = 0x00410 // transmit inter-packet gap
	AIT         = 0x00458 // adaptive interframe spacing throttle
	LEDCTL      = 0x00E00 // LED control
	EXTCNF_CTRL = 0x00F00 // extended configuration control (MDIO semaphore)
	EXTCNF_SIZE = 0x00F08 // extended configuration size
	POEMB       = 0x00F10 // PHY OEM bits
	PBA         = 0x01000 // packet buffer allocation
	PBS         = 0x01008 // packet buffer size
	EEMNGCTL    = 0x01010 // MNG EEPROM control
	EEWR        = 0x0102C // EEPROM write
	FLOP        = 0x0103C // flash opcode
	ERT         = 0x02008 // early receive threshold
	FCRTL       = 0x02160 // flow control receive threshold low
	FCRTH       = 0x02168 // flow control receive threshold high
	PSRCTL      = 0x02170 // packet split receive control
	RDFH        = 0x02410 // receive data FIFO head
	RDFT        = 0x02418 // receive data FIFO tail
	RDFHS       = 0x02420 // receive data FIFO head saved
	RDFTS       = 0x02428 // receive data FIFO tail saved
	RDFPC       = 0x02430 // receive data FIFO packet count
	RDBAL0      = 0x02800 // RX ring 0 base low
	RDBAH0      = 0x02804 // RX ring 0 base high
	RDLEN0      = 0x02808 // RX ring 0 length in bytes
	RDH0        = 0x02810 // RX ring 0 head
	RDT0        = 0x02818 // RX ring 0 tail
	RDTR        = 0x02820 // RX delay timer (bit 31: flush partial descriptor block)
	RXDCTL      = 0x02828 // RX descriptor control, queue 0
	RADV        = 0x0282C // RX absolute delay timer
	RDBAL1      = 0x02900 // RX ring 1 base low
	RDBAH1      = 0x02904 // RX ring 1 base high
	RDLEN1      = 0x02908 // RX ring 1 length
	RDH1        = 0x02910 // RX ring 1 head
	RDT1        = 0x02918 // RX ring 1 tail
	RXDCTL1     = 0x02928 // RX descriptor control, queue 1
	RSRPD       = 0x02C00 // RX small packet detect
	RAID        = 0x02C08 // RX ACK interrupt delay
	CPUVEC      = 0x02C10 // CPU vector
	TDFH        = 0x03410 // TX data FIFO head
	TDFT        = 0x03418 // TX data FIFO tail
	TDFHS       = 0x03420 // TX data FIFO head saved
	TDFTS       = 0x03428 // TX data FIFO tail saved
	TDFPC       = 0x03430 // TX data FIFO packet count
	TDBAL0      = 0x03800 // TX ring 0 base low
	TDBAH0      = 0x03804 // TX ring 0 base high
	TDLEN0      = 0x03808 // TX ring 0 length in bytes
	TDH0        = 0x03810 // TX ring 0 head
	TDT0        = 0x03818 // TX ring 0 tail
	TIDV        = 0x03820 // TX interrupt delay value (bit 31: flush)
	TXDCTL      = 0x03828 // TX descriptor control, queue 0
	TADV        = 0x0382C // TX absolute interrupt delay
	TARC0       = 0x03840 // TX arbitration count, queue 0
	TDBAL1      = 0x03900 // TX ring 1 base low
	TDBAH1      = 0x03904 // TX ring 1 base high
	TDLEN1      = 0x03908 // TX ring 1 length
	TDH1        = 0x03910 // TX ring 1 head
	TDT1        = 0x03918 // TX ring 1 tail
	TXDCTL1     = 0x03928 // TX descriptor control, queue 1
	TARC1       = 0x03940 // TX arbitration count, queue 1
	RXCSUM      = 0x05000 // RX checksum control
	RLPML       = 0x05004 // RX long packet max length
	RFCTL       = 0x05008 // receive filter control
	MAVTV0      = 0x05010 // management VLAN TAG value 0..3
	MTA         = 0x05200 // multicast table array, 128 dwords
	RA          = 0x05400 // receive addresses: RAL(n) at RA+8n, RAH(n) at RA+8n+4
	VFTA        = 0x05600 // VLAN filter table array, 128 dwords
	WUC         = 0x05800 // wake-up control
	WUFC        = 0x05808 // wake-up filter control
	WUS         = 0x05810 // wake-up status
	MRQC        = 0x05818 // multiple receive queues command
	MANC        = 0x05820 // management control
	MFVAL       = 0x05824 // manageability filters valid
	MANC2H      = 0x05860 // management to host
	IPAV        = 0x05838 // IP address valid
	IP4AT       = 0x05840 // IPv4 address table, 7 entries at 8-byte stride
	IP6AT       = 0x05880 // IPv6 address table, 4 dwords
	WUPL        = 0x05900 // wake-up packet length
	WUPM        = 0x05A00 // wake-up packet memory, 32 dwords
	GCR         = 0x05B00 // PCIe control
	GSCL_1      = 0x05B10 // PCIe statistics control 1..4
	GSCN_0      = 0x05B20 // PCIe counters 0..3
	FACTPS      = 0x05B30 // function active and power state
	GCR2        = 0x05B64 // PCIe control 2
	FUNCTAG     = 0x05B40 // function tag
	SWSM        = 0x05B50 // software semaphore
	FWSM        = 0x05B54 // firmware semaphore (read only: no firmware)
	PBACLR      = 0x05B68 // MSI-X PBA clear
	RETA        = 0x05C00 // RSS redirection table, 32 dwords
	RSSRK       = 0x05C80 // RSS random key, 10 dwords
	FFLT        = 0x05F00 // flexible filter length table
	HOST_IF     = 0x08800 // host interface
	FFMT        = 0x09000 // flexible filter mask table
	FFVT        = 0x09800 // flexible filter value table
	SYSTIML     = 0x0B600 // system time low
	SYSTIMH     = 0x0B604 // system time high
	TIMINCA     = 0x0B608 // time increment attributes
	RXSTMPL     = 0x0B624 // RX timestamp low
	RXSTMPH     = 0x0B628 // RX timestamp high
	TSYNCRXCTL  = 0x0B620 // RX time sync control
	TSYNCTXCTL  = 0x0B614 // TX time sync control
	TXSTMPL     = 0x0B618 // TX timestamp low
	TXSTMPH     = 0x0B61C // TX timestamp high
)

// Statistics registers (block 0x4000-0x40FF, plus the interrupt counters
// after it). The 64-bit counters are low/high pairs.
const (
	CRCERRS  = 0x04000
	ALGNERRC = 0x04004
	SYMERRS  = 0x04008
	RXERRC   = 0x0400C
	MPC      = 0x04010
	SCC      = 0x04014
	ECOL     = 0x04018
	MCC      = 0x0401C
	LATECOL  = 0x04020
	COLC     = 0x04028
	DC       = 0x04030
	TNCRS    = 0x04034
	SEC      = 0x04038
	CEXTERR  = 0x0403C
	RLEC     = 0x04040
	XONRXC   = 0x04048
	XONTXC   = 0x0404C
	XOFFRXC  = 0x04050
	XOFFTXC  = 0x04054
	FCRUC    = 0x04058
	PRC64    = 0x0405C
	PRC127   = 0x04060
	PRC255   = 0x04064
	PRC511   = 0x04068
	PRC1023  = 0x0406C
	PRC1522  = 0x04070
	GPRC     = 0x04074
	BPRC     = 0x04078
	MPRC     = 0x0407C
	GPTC     = 0x04080
	GORCL    = 0x04088
	GORCH    = 0x0408C
	GOTCL    = 0x04090
	GOTCH    = 0x04094
	RNBC     = 0x040A0
	RUC      = 0x040A4
	RFC      = 0x040A8
	ROC      = 0x040AC
	RJC      = 0x040B0
	MGTPRC   = 0x040B4
	MGTPDC   = 0x040B8
	MGTPTC   = 0x040BC
	TORL     = 0x040C0
	TORH     = 0x040C4
	TOTL     = 0x040C8
	TOTH     = 0x040CC
	TPR      = 0x040D0
	TPT      = 0x040D4
	PTC64    = 0x040D8
	PTC127   = 0x040DC
	PTC255   = 0x040E0
	PTC511   = 0x040E4
	PTC1023  = 0x040E8
	PTC1522  = 0x040EC
	MPTC     = 0x040F0
	BPTC     = 0x040F4
	TSCTC    = 0x040F8
	TSCTFC   = 0x040FC
	IAC      = 0x04100 // interrupt assertion count
	ICRXPTC  = 0x04104
	ICRXATC  = 0x04108
	ICTXPTC  = 0x0410C
	ICTXATC  = 0x04110
	ICTXQEC  = 0x04118
	ICTXQMTC = 0x0411C
	ICRXDMTC = 0x04120
	ICRXOC   = 0x04124
)

// Interrupt causes: bits of ICR, ICS, IMS, IMC, IAM and EIAC.
const (
	ICR_TXDW         = 0x00000001 // transmit descriptor written back
	ICR_TXQE         = 0x00000002 // transmit queue empty
	ICR_LSC          = 0x00000004 // link status change
	ICR_RXSEQ        = 0x00000008 // receive sequence error
	ICR_RXDMT0       = 0x00000010 // receive descriptor minimum threshold
	ICR_RXO          = 0x00000040 // receiver overrun
	ICR_RXT0         = 0x00000080 // receiver timer interrupt
	ICR_MDAC         = 0x00000200 // MDIO access complete
	ICR_RXCFG        = 0x00000400 // receive /C/ ordered sets
	ICR_TXD_LOW      = 0x00008000 // transmit descriptor low threshold
	ICR_SRPD         = 0x00010000 // small receive packet detected
	ICR_ACK          = 0x00020000 // receive ACK frame
	ICR_MNG          = 0x00040000 // manageability event
	ICR_RXQ0         = 0x00100000 // RX queue 0 (MSI-X)
	ICR_RXQ1         = 0x00200000 // RX queue 1 (MSI-X)
	ICR_TXQ0         = 0x00400000 // TX queue 0 (MSI-X)
	ICR_TXQ1         = 0x00800000 // TX queue 1 (MSI-X)
	ICR_OTHER        = 0x01000000 // other causes (MSI-X)
	ICR_INT_ASSERTED = 0x80000000 // an enabled cause is pending

	// icrOtherCauses are summarised by ICR_OTHER in MSI-X mode.
	icrOtherCauses = ICR_LSC | ICR_RXO | ICR_MDAC | ICR_SRPD | ICR_ACK | ICR_MNG

	// imsCauses are the named causes: enabling all of them at once is
	// what CTRL_EXT.INT_TIMERS_CLEAR_ENA watches for. RXSEQ is among them
	// because Linux's MSI self-test fires it through ICS and falls back to
	// INTx when no interrupt arrives.
	imsCauses = ICR_TXDW | ICR_TXQE | ICR_LSC | ICR_RXSEQ | ICR_RXDMT0 | ICR_RXO |
		ICR_RXT0 | ICR_MDAC | ICR_TXD_LOW | ICR_SRPD | ICR_ACK | ICR_MNG |
		ICR_RXQ0 | ICR_RXQ1 | ICR_TXQ0 | ICR_TXQ1 | ICR_OTHER

	// icrLowCauses are bits 0-9, which Linux's interrupt self-test forces
	// one by one through ICS and expects to be latched in ICR, enabled by
	// IMS and delivered: the 82574L implements each of them, bits 5 and 8
	// (no cause of their own) included.
	icrLowCauses = 0x000003FF

	// imsValid are the bits IMS can enable.
	imsValid = imsCauses | icrLowCauses

	// eiacMask are the causes EIAC can auto-clear (the MSI-X causes).
	eiacMask = ICR_RXQ0 | ICR_RXQ1 | ICR_TXQ0 | ICR_TXQ1 | ICR_OTHER
)

// CTRL bits.
const (
	CTRL_FD                 = 0x00000001
	CTRL_GIO_MASTER_DISABLE = 0x00000004
	CTRL_ASDE               = 0x00000020
	CTRL_SLU                = 0x00000040
	CTRL_SPD_SEL            = 0x00000300
	CTRL_SPD_10             = 0x00000000
	CTRL_SPD_100            = 0x00000100
	CTRL_SPD_1000           = 0x00000200
	CTRL_FRCSPD             = 0x00000800
	CTRL_FRCDPX             = 0x00001000
	CTRL_SWDPIN0            = 0x00040000
	CTRL_SWDPIN2            = 0x00400000
	CTRL_ADVD3WUC           = 0x00100000
	CTRL_RST                = 0x04000000
	CTRL_RFCE               = 0x08000000
	CTRL_TFCE               = 0x10000000
	CTRL_VME                = 0x40000000
	CTRL_PHY_RST            = 0x80000000
)

// STATUS bits.
const (
	STATUS_FD                = 0x00000001
	STATUS_LU                = 0x00000002
	STATUS_TXOFF             = 0x00000010
	STATUS_SPEED_10          = 0x00000000
	STATUS_SPEED_100         = 0x00000040
	STATUS_SPEED_1000        = 0x00000080
	STATUS_SPEED_MASK        = 0x000000C0
	STATUS_ASDV_1000         = 0x00000200
	STATUS_PHYRA             = 0x00000400
	STATUS_GIO_MASTER_ENABLE = 0x00080000
)

// CTRL_EXT bits.
const (
	CTRL_EXT_ASDCHK               = 0x00001000
	CTRL_EXT_EE_RST               = 0x00002000
	CTRL_EXT_SPD_BYPS             = 0x00008000
	CTRL_EXT_EIAME                = 0x01000000
	CTRL_EXT_IAME                 = 0x08000000
	CTRL_EXT_DRV_LOAD             = 0x10000000
	CTRL_EXT_INT_TIMERS_CLEAR_ENA = 0x20000000
	CTRL_EXT_PBA_CLR              = 0x80000000
)

// EECD and EERD bits.
const (
	EECD_REQ     = 0x00000040
	EECD_GNT     = 0x00000080
	EECD_PRES    = 0x00000100
	EECD_AUTO_RD = 0x00000200
	eecdSizeEx   = 0x00007800 // NVM size: 64 words << field; zero = 64 words
	eecdFlash    = 0x00018000 // both set would mean flash: never set here

	EERD_START         = 0x00000001
	EERD_DONE          = 0x00000002
	eerdAddrShift      = 2
	eerdAddrMask       = 0x3FFF
	eerdDataShift      = 16
	EEMNGCTL_CFG_DONE0 = 0x00040000 // configuration cycle done, port 0
)

// MDIC bits.
const (
	MDIC_DATA_MASK = 0x0000FFFF
	MDIC_REG_MASK  = 0x001F0000
	mdicRegShift   = 16
	MDIC_PHY_MASK  = 0x03E00000
	mdicPHYShift   = 21
	MDIC_OP_WRITE  = 0x04000000
	MDIC_OP_READ   = 0x08000000
	MDIC_READY     = 0x10000000
	MDIC_INT_EN    = 0x20000000
	MDIC_ERROR     = 0x40000000
)

// Other register bits the core interprets.
const (
	EXTCNF_CTRL_MDIO_SW_OWNERSHIP = 0x00000020
	SWSM_SMBI                     = 0x00000001
	RAH_AV                        = 0x80000000 // receive address valid
	RDTR_FPD                      = 0x80000000 // flush partial descriptor block
	TIDV_FPD                      = 0x80000000
	IVAR_INT_ON_ALL_WB            = 0x80000000 // interrupt on every write-back
	ivarValid                     = 0x8
	ivarVector                    = 0x7
	RCTL_EN                       = 0x00000002
	RCTL_LBM_MASK                 = 0x000000C0 // loopback mode
	TCTL_EN                       = 0x00000002
)

// Sizes.
const (
	bar0Size    = 0x20000 // 128 KiB of registers
	numMSIXVecs = 5
	numRA       = 16 // receive address entries
)
