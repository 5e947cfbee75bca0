package device_test

import (
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/device/devicetest"
)

// The 82574L layout, with a Function and no device behind its BARs, passes
// the conformance kit.
func TestNICLayoutConforms(t *testing.T) {
	cs := device.NewConfigSpace(device.Identity{VendorID: 0x8086, DeviceID: 0x10D3, SubsysVendor: 0x8086, Class: 0x020000, InterruptPin: 1})
	for _, err := range []error{
		cs.AddBAR(0, device.BAR{Kind: device.BARMem32, Size: 128 << 10}),
		cs.AddBAR(1, device.BAR{Kind: device.BARMem32, Size: 128 << 10}),
		cs.AddBAR(2, device.BAR{Kind: device.BARIO, Size: 32}),
		cs.AddBAR(3, device.BAR{Kind: device.BARMem32, Size: 16 << 10}),
		cs.AddPM(0xC8, device.PMOptions{Version: 2, DSI: true}),
		cs.AddMSI(0xD0, device.MSIOptions{Vectors: 1, Addr64: true}),
		cs.AddPCIe(0xE0, device.PCIeOptions{Version: 1}),
		cs.AddMSIX(0xA0, 5, 3, 0, 3, 0x2000),
		cs.AddAER(0x100),
		cs.AddDSN(0x140, 0x525400ffff123456),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	devicetest.Run(t, device.NewFunction(cs), devicetest.Options{Seed: 2})
}
