package main

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The legacy ethtool get/set pairs for the offloads the tests switch; busybox
// has no ethtool, and these few ioctls are all the tests need.
var ethtoolCmds = map[string][2]uint32{
	"rx":  {0x14, 0x15}, // ETHTOOL_GRXCSUM, ETHTOOL_SRXCSUM
	"tx":  {0x16, 0x17}, // ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM
	"sg":  {0x18, 0x19}, // ETHTOOL_GSG, ETHTOOL_SSG
	"tso": {0x1e, 0x1f}, // ETHTOOL_GTSO, ETHTOOL_STSO
}

// ethtoolValue calls SIOCETHTOOL with a struct ethtool_value {cmd, data}.
func ethtoolValue(iface string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	// On the heap: Go never moves heap objects, and the kernel finds val
	// only through the address stored in ifr.
	val := new([2]uint32)
	val[0], val[1] = cmd, data
	var ifr [40]byte // struct ifreq: name, then a pointer in the union
	if len(iface) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", iface)
	}
	copy(ifr[:], iface)
	*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(val))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return 0, e
	}
	return val[1], nil
}

// cmdEthtool: IFACE FEATURE on|off sets one offload; IFACE alone reports
// them all in data.
func cmdEthtool(args []string, rep *Reply) error {
	if len(args) == 1 {
		rep.Data = map[string]any{}
		for name, c := range ethtoolCmds {
			v, err := ethtoolValue(args[0], c[0], 0)
			if err != nil {
				return fmt.Errorf("ethtool %s %s: %w", args[0], name, err)
			}
			rep.Data[name] = v != 0
		}
		return nil
	}
	if err := nargs(args, 3); err != nil {
		return err
	}
	c, ok := ethtoolCmds[args[1]]
	if !ok {
		return fmt.Errorf("unknown feature %q (want rx, tx, sg or tso)", args[1])
	}
	on := uint32(0)
	switch args[2] {
	case "on":
		on = 1
	case "off":
	default:
		return fmt.Errorf("want on or off, have %q", args[2])
	}
	if _, err := ethtoolValue(args[0], c[1], on); err != nil {
		return fmt.Errorf("ethtool %s %s %s: %w", args[0], args[1], args[2], err)
	}
	v, err := ethtoolValue(args[0], c[0], 0)
	if err != nil {
		return err
	}
	if (v != 0) != (on != 0) {
		return fmt.Errorf("ethtool %s %s is still %v", args[0], args[1], v != 0)
	}
	return nil
}

// ethtool commands and layouts of include/uapi/linux/ethtool.h used by the
// self-test.
const (
	ethtoolGDrvInfo  = 0x03 // ETHTOOL_GDRVINFO
	ethtoolTest      = 0x1a // ETHTOOL_TEST
	ethtoolGStrings  = 0x1b // ETHTOOL_GSTRINGS
	ethSSTest        = 0    // ETH_SS_TEST
	ethGStringLen    = 32   // ETH_GSTRING_LEN
	ethTestFlOffline = 1    // ETH_TEST_FL_OFFLINE
	ethTestFlFailed  = 2    // ETH_TEST_FL_FAILED
	drvInfoSize      = 196  // struct ethtool_drvinfo
	drvInfoTestLen   = 184  // offset of testinfo_len
	maxSelfTests     = 64   // bound on testinfo_len from the driver
)

// ethtoolIoctl calls SIOCETHTOOL with buf as the command's structure; buf
// starts with the command number and the kernel writes its answer into it.
func ethtoolIoctl(iface string, buf []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var ifr [40]byte
	if len(iface) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", iface)
	}
	copy(ifr[:], iface)
	*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(&buf[0]))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr[0])))
	runtime.KeepAlive(buf)
	if e != 0 {
		return e
	}
	return nil
}

// cmdSelftest: IFACE runs the driver's offline self-test, as
// `ethtool -t IFACE offline` does (busybox has no ethtool), and reports
// each test's name and result (0 = pass) and whether any failed.
func cmdSelftest(args []string, rep *Reply) error {
	if err := nargs(args, 1); err != nil {
		return err
	}
	iface := args[0]
	names, err := driverStrings(iface, drvInfoTestLen, maxSelfTests, ethSSTest, "self-tests")
	if err != nil {
		return err
	}
	n := len(names)
	test := make([]byte, 16+8*n)
	binary.LittleEndian.PutUint32(test[0:], ethtoolTest)
	binary.LittleEndian.PutUint32(test[4:], ethTestFlOffline)
	binary.LittleEndian.PutUint32(test[12:], uint32(n))
	if err := ethtoolIoctl(iface, test); err != nil {
		return fmt.Errorf("ETHTOOL_TEST %s: %w", iface, err)
	}
	results := make([]uint64, n)
	for i := range n {
		results[i] = binary.LittleEndian.Uint64(test[16+8*i:])
	}
	rep.Data = map[string]any{
		"names":   names,
		"results": results,
		"failed":  binary.LittleEndian.Uint32(test[4:])&ethTestFlFailed != 0,
	}
	return nil
}

// ETHTOOL_GSTATS and what it needs: the statistics `ethtool -S` prints.
const (
	ethtoolGStats  = 0x1d // ETHTOOL_GSTATS
	ethSSStats     = 1    // ETH_SS_STATS
	drvInfoNStats  = 180  // offset of n_stats in struct ethtool_drvinfo
	maxDriverStats = 1024 // bound on n_stats from the driver
)

// cmdEthStats: IFACE reports the driver's statistics by name, as
// `ethtool -S IFACE` prints them (busybox has no ethtool).
func cmdEthStats(args []string, rep *Reply) error {
	if err := nargs(args, 1); err != nil {
		return err
	}
	iface := args[0]
	names, err := driverStrings(iface, drvInfoNStats, maxDriverStats, ethSSStats, "statistics")
	if err != nil {
		return err
	}
	n := len(names)
	vals := make([]byte, 8+8*n)
	binary.LittleEndian.PutUint32(vals[0:], ethtoolGStats)
	binary.LittleEndian.PutUint32(vals[4:], uint32(n))
	if err := ethtoolIoctl(iface, vals); err != nil {
		return fmt.Errorf("ETHTOOL_GSTATS %s: %w", iface, err)
	}
	rep.Data = map[string]any{}
	for i, name := range names {
		rep.Data[name] = binary.LittleEndian.Uint64(vals[8+8*i:])
	}
	return nil
}

// driverStrings returns the names of one of the driver's string sets (set,
// ETH_SS_*): their count read from struct ethtool_drvinfo at countOff and
// bounded by limit, then the strings themselves (ETHTOOL_GSTRINGS).
func driverStrings(iface string, countOff, limit int, set uint32, what string) ([]string, error) {
	info := make([]byte, drvInfoSize)
	binary.LittleEndian.PutUint32(info, ethtoolGDrvInfo)
	if err := ethtoolIoctl(iface, info); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GDRVINFO %s: %w", iface, err)
	}
	n := int(binary.LittleEndian.Uint32(info[countOff:]))
	if n == 0 || n > limit {
		return nil, fmt.Errorf("%s: driver reports %d %s", iface, n, what)
	}
	strs := make([]byte, 12+n*ethGStringLen)
	binary.LittleEndian.PutUint32(strs[0:], ethtoolGStrings)
	binary.LittleEndian.PutUint32(strs[4:], set)
	binary.LittleEndian.PutUint32(strs[8:], uint32(n))
	if err := ethtoolIoctl(iface, strs); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS %s: %w", iface, err)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = strings.TrimRight(string(strs[12+i*ethGStringLen:12+(i+1)*ethGStringLen]), "\x00")
	}
	return names, nil
}
