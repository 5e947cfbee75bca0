package e1000e_test

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"e1000e-vfu/device"
	"e1000e-vfu/e1000e"
	"e1000e-vfu/vfiouser"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the seed corpus of FuzzDispatchNIC in testdata")

// TestDispatchNICSeeds keeps testdata/fuzz/FuzzDispatchNIC in step with
// dispatchSeeds (rewritten with -update-seeds). The fuzz target itself runs
// them as part of every go test.
func TestDispatchNICSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDispatchNIC")
	if *updateSeeds {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range dispatchSeeds(t) {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbyte(%q)\n[]byte(%q)\n", s.stream, s.fds, s.mem)
		path := filepath.Join(dir, s.name)
		if *updateSeeds {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (rewrite the corpus with -update-seeds)", err)
		}
		if string(got) != want {
			t.Errorf("%s differs from its seed (rewrite the corpus with -update-seeds)", path)
		}
	}
}

// dispatchSeed is one input of FuzzDispatchNIC.
type dispatchSeed struct {
	name   string
	stream []byte
	fds    uint8
	mem    []byte
}

// Where the seeds put guest memory, and what it holds: an 8-entry TX ring,
// an 8-entry RX ring, a frame to send, then the RX buffers. What the seed
// does not give of guest memory is zero, so the rings come first and the
// seed stays short.
const (
	seedIOVA    = 0x100000
	seedTXRing  = 0x000
	seedRXRing  = 0x080
	seedFrame   = 0x100
	seedRXBufs  = 0x1000
	seedRing    = 8
	seedBufSize = 2048
	seedFrameN  = 60
)

// dispatchSeeds are valid sessions of the kinds QEMU and a guest driver
// have, plus a few broken ones, for the fuzzer to start from.
func dispatchSeeds(t testing.TB) []dispatchSeed {
	sample, err := os.ReadFile(filepath.Join("testdata", "state-e1000e-version2.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var seeds []dispatchSeed
	add := func(name string, fds uint8, mem []byte, build func(s *session)) {
		s := &session{}
		build(s)
		seeds = append(seeds, dispatchSeed{name, s.b, fds, mem})
	}

	add("identity", 0, nil, func(s *session) {
		s.call(vfiouser.CmdDeviceGetInfo, encoded(vfiouser.DeviceInfoSize, func(b []byte) {
			vfiouser.DeviceInfo{Argsz: vfiouser.DeviceInfoSize}.Encode(b)
		}))
		for _, r := range []uint32{device.RegionBAR0, device.RegionBAR2, device.RegionBAR3, device.RegionConfig, device.RegionMigration} {
			s.call(vfiouser.CmdGetRegionInfo, encoded(vfiouser.RegionInfoSize, func(b []byte) {
				vfiouser.RegionInfo{Argsz: vfiouser.RegionInfoSize, Index: r}.Encode(b)
			}))
		}
		for i := range uint32(device.NumIRQIndexes) {
			s.call(vfiouser.CmdGetIRQInfo, encoded(vfiouser.IRQInfoSize, func(b []byte) {
				vfiouser.IRQInfo{Argsz: vfiouser.IRQInfoSize, Index: i}.Encode(b)
			}))
		}
		s.read(device.RegionConfig, 0, 64)
		s.read(device.RegionConfig, 0xA0, 12) // MSI-X capability
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
		s.read(device.RegionBAR0, e1000e.CTRL, 4)
	})

	add("registers", 0, nil, func(s *session) {
		s.call(vfiouser.CmdDeviceReset, nil)
		s.write(device.RegionConfig, 4, le16(0x0006)) // memory space, bus master
		s.write(device.RegionBAR0, e1000e.CTRL, le32(0x40))
		s.post(device.RegionBAR0, e1000e.IMS, le32(0xffffffff))
		s.post(device.RegionBAR0, e1000e.ICS, le32(0x4)) // link status change
		s.read(device.RegionBAR0, e1000e.ICR, 4)
		s.post(device.RegionBAR0, e1000e.ITR, le32(500))
		s.post(device.RegionBAR0, e1000e.IVAR, le32(0x800a0908))
		s.write(device.RegionBAR0, e1000e.EERD, le32(1)) // NVM word 0
		s.read(device.RegionBAR0, e1000e.EERD, 4)
		s.write(device.RegionBAR0, e1000e.MDIC, le32(0x08000000|1<<21|1<<16)) // PHY 1, register 1
		s.read(device.RegionBAR0, e1000e.MDIC, 4)
		var items []byte
		for _, w := range []struct{ off, v uint32 }{{e1000e.IMC, 0xffffffff}, {e1000e.ITR, 0}} {
			items = append(items, encoded(vfiouser.WriteMultiItemSize, func(b []byte) {
				it := vfiouser.WriteMultiItem{Offset: uint64(w.off), Region: device.RegionBAR0, Count: 4}
				binary.LittleEndian.PutUint32(it.Data[:], w.v)
				it.Encode(b)
			})...)
		}
		s.call(vfiouser.CmdRegionWriteMulti, append(le64(2), items...))
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
		s.read(device.RegionBAR2, 0, 4) // IOADDR
	})

	add("irqs-without-fds", 0, nil, func(s *session) {
		s.setIRQs(device.IRQINTx, uint32(device.IRQDataNone)|uint32(device.IRQActionMask), 0, 1, nil)
		s.setIRQs(device.IRQINTx, uint32(device.IRQDataNone)|uint32(device.IRQActionUnmask), 0, 1, nil)
		s.setIRQs(device.IRQMSIX, uint32(device.IRQDataBool)|uint32(device.IRQActionTrigger), 0, 3, []byte{1, 0, 1})
		s.setIRQs(device.IRQMSIX, uint32(device.IRQDataNone)|uint32(device.IRQActionTrigger), 0, 0, nil)
		s.setIRQs(device.IRQMSI, uint32(device.IRQDataNone)|uint32(device.IRQActionTrigger), 0, 0, nil)
	})

	add("irqs-eventfds", fdsEvents, nil, func(s *session) {
		s.write(device.RegionConfig, 4, le16(0x0006))
		s.write(device.RegionConfig, 0xA2, le16(0x8000)) // MSI-X enable
		for v := range uint64(5) {
			s.post(device.RegionBAR3, 16*v+12, le32(0)) // unmask vector v
		}
		s.setIRQs(device.IRQMSIX, uint32(device.IRQDataEventFD)|uint32(device.IRQActionTrigger), 0, 5, nil)
		s.post(device.RegionBAR0, e1000e.IMS, le32(0xffffffff))
		s.post(device.RegionBAR0, e1000e.ICS, le32(0x4))
		s.read(device.RegionBAR0, e1000e.ICR, 4)
		s.setIRQs(device.IRQINTx, uint32(device.IRQDataEventFD)|uint32(device.IRQActionTrigger), 0, 1, nil)
		s.setIRQs(device.IRQINTx, uint32(device.IRQDataEventFD)|uint32(device.IRQActionUnmask), 0, 1, nil)
		s.setIRQs(device.IRQMSI, uint32(device.IRQDataEventFD)|uint32(device.IRQActionTrigger), 0, 1, nil)
		s.setIRQs(device.IRQMSIX, uint32(device.IRQDataNone)|uint32(device.IRQActionTrigger), 0, 0, nil)
	})

	add("datapath-loopback", fdsMemory|fdsEvents, seedMemory(), func(s *session) {
		s.dmaMap(seedIOVA, guestSize)
		s.rings()
		s.read(device.RegionBAR0, e1000e.ICR, 4)
		s.read(device.RegionBAR0, e1000e.TDH0, 4)
		s.read(device.RegionBAR0, e1000e.RDH0, 4)
		s.dmaUnmap(seedIOVA, guestSize)
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
	})

	// Guest memory without fd: the NIC's DMA goes through DMA_READ and
	// DMA_WRITE messages, which a register write's handler may not wait for.
	add("message-dma", 0, nil, func(s *session) {
		s.dmaMap(seedIOVA, guestSize)
		s.rings()
		s.read(device.RegionBAR0, e1000e.TDH0, 4)
		s.dmaUnmap(seedIOVA, guestSize)
	})

	add("dirty-logging", fdsMemory, seedMemory(), func(s *session) {
		s.dmaMap(seedIOVA, guestSize)
		s.feature(vfiouser.FeatDMALoggingStart|vfiouser.FeatureSet,
			vfiouser.LoggingStart{PageSize: 4096, Ranges: []vfiouser.LoggingRange{{IOVA: seedIOVA, Length: guestSize}}}.Encode(nil), 0)
		s.rings()
		s.feature(vfiouser.FeatDMALoggingRep|vfiouser.FeatureGet, encoded(vfiouser.LoggingReportSize, func(b []byte) {
			vfiouser.LoggingReport{IOVA: seedIOVA, Length: guestSize, PageSize: 4096}.Encode(b)
		}), vfiouser.FeatureSize+vfiouser.LoggingReportSize+vfiouser.BitmapBytes(guestSize, 4096))
		s.feature(vfiouser.FeatDMALoggingStop|vfiouser.FeatureSet, nil, 0)
		s.call(vfiouser.CmdDirtyPages, append(le32(vfiouser.DirtyPagesSize), le32(vfiouser.DirtyPagesStart)...))
		n := vfiouser.BitmapBytes(guestSize, 4096)
		p := append(le32(uint32(vfiouser.DirtyPagesSize+vfiouser.DirtyBitmapSize+n)), le32(vfiouser.DirtyPagesGetBitmap)...)
		p = append(p, encoded(vfiouser.DirtyBitmapSize, func(b []byte) {
			vfiouser.DirtyBitmap{IOVA: seedIOVA, Size: guestSize, Bitmap: vfiouser.Bitmap{PgSize: 4096, Size: n}}.Encode(b)
		})...)
		s.call(vfiouser.CmdDirtyPages, p)
		s.call(vfiouser.CmdDirtyPages, append(le32(vfiouser.DirtyPagesSize), le32(vfiouser.DirtyPagesStop)...))
	})

	add("migration-v2-save", 0, nil, func(s *session) {
		s.feature(vfiouser.FeatMigration|vfiouser.FeatureGet, nil, vfiouser.FeatureSize+8)
		s.feature(vfiouser.FeatMigDeviceState|vfiouser.FeatureGet|vfiouser.FeatureSet|vfiouser.FeatureProbe, nil, 0)
		s.feature(vfiouser.FeatMigDeviceState|vfiouser.FeatureGet, nil, vfiouser.FeatureSize+vfiouser.MigStateSize)
		s.setState(device.MigPreCopy)
		s.feature(vfiouser.FeatMigDataSize|vfiouser.FeatureGet, nil, vfiouser.FeatureSize+8)
		s.migRead(512)
		s.setState(device.MigStopCopy)
		s.feature(vfiouser.FeatMigDataSize|vfiouser.FeatureGet, nil, vfiouser.FeatureSize+8)
		for range 3 {
			s.migRead(1024)
		}
		s.setState(device.MigStop)
		s.setState(device.MigRunning)
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
	})

	add("migration-v2-resume", 0, nil, func(s *session) {
		s.setState(device.MigStop)
		s.setState(device.MigResuming)
		s.migWrite(sample[:len(sample)/2])
		s.migWrite(sample[len(sample)/2:])
		s.setState(device.MigStop)
		s.setState(device.MigRunning)
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
	})

	add("migration-v2-hostile-stream", 0, nil, func(s *session) {
		s.setState(device.MigStop)
		s.setState(device.MigResuming)
		s.migWrite(sample[:len(sample)-7]) // truncated: no end, no CRC
		s.setState(device.MigStop)         // refused: the device stays in RESUMING, untouched
		s.feature(vfiouser.FeatMigDeviceState|vfiouser.FeatureGet, nil, vfiouser.FeatureSize+vfiouser.MigStateSize)
		s.call(vfiouser.CmdDeviceReset, nil)
		s.setState(device.MigStop)
		s.setState(device.MigResuming)
		bad := append([]byte(nil), sample...)
		bad[len(bad)/2] ^= 0x40
		s.migWrite(bad)
		s.setState(device.MigStop)
		s.call(vfiouser.CmdDeviceReset, nil)
	})

	add("migration-v1-save", 0, nil, func(s *session) {
		s.write(device.RegionMigration, 0, le32(3)) // running | saving
		s.read(device.RegionMigration, 8, 8)        // pending_bytes
		s.write(device.RegionMigration, 0, le32(2)) // saving
		for range 2 {
			s.read(device.RegionMigration, 8, 8)  // pending_bytes
			s.read(device.RegionMigration, 16, 8) // data_offset
			s.read(device.RegionMigration, 24, 8) // data_size
			s.read(device.RegionMigration, 4096, 1024)
		}
		s.write(device.RegionMigration, 0, le32(0)) // stopped
		s.write(device.RegionMigration, 0, le32(1)) // running
		s.read(device.RegionMigration, 0, 4)
	})

	add("migration-v1-resume", 0, nil, func(s *session) {
		s.write(device.RegionMigration, 0, le32(4)) // resuming
		s.read(device.RegionMigration, 16, 8)       // data_offset
		s.write(device.RegionMigration, 4096, sample)
		s.write(device.RegionMigration, 24, le64(uint64(len(sample))))
		s.write(device.RegionMigration, 0, le32(1)) // running
		s.read(device.RegionMigration, 0, 4)
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
	})

	// Issue 14, hole 4: a chunk staged in the v1 region outlived a state
	// change made through v2; pending_bytes then underflowed and the
	// next save read sliced past the stream's end, for every later
	// client too.
	add("migration-v1-staged-across-v2", 0, nil, func(s *session) {
		s.write(device.RegionMigration, 0, le32(2)) // saving: stop-and-copy
		s.read(device.RegionMigration, 24, 8)       // data_size: the whole stream staged
		s.setState(device.MigRunning)
		s.setState(device.MigPreCopy)         // a new save, shorter than the staged chunk
		s.read(device.RegionMigration, 8, 8)  // pending_bytes
		s.read(device.RegionMigration, 16, 8) // data_offset
		s.read(device.RegionMigration, 24, 8) // data_size
		s.read(device.RegionMigration, 4096, 1024)
		s.read(device.RegionMigration, 8, 8)
		s.setState(device.MigStopCopy)
		s.read(device.RegionMigration, 24, 8) // staged again
		s.migRead(10)                         // and partly taken through v2
		s.read(device.RegionMigration, 8, 8)
		s.read(device.RegionMigration, 4096, 1024)
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
	})

	add("reset-mid-migration", 0, nil, func(s *session) {
		s.setState(device.MigStopCopy)
		s.migRead(256)
		s.call(vfiouser.CmdDeviceReset, nil)
		s.feature(vfiouser.FeatMigDeviceState|vfiouser.FeatureGet, nil, vfiouser.FeatureSize+vfiouser.MigStateSize)
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
	})

	add("broken-framing", 0, nil, func(s *session) {
		s.read(device.RegionBAR0, e1000e.STATUS, 4)
		s.b = append(s.b, frame(90, 99, 0, nil)...)                                 // unknown command
		s.b = append(s.b, frame(91, 0, 0, nil)...)                                  // command 0
		s.b = append(s.b, frame(92, vfiouser.CmdRegionRead, 0, []byte{1, 2, 3})...) // short payload
		s.b = append(s.b, frame(93, vfiouser.CmdVersion, 0, []byte{0, 0, 1, 0})...) // VERSION again
		trunc := frame(94, vfiouser.CmdRegionWrite, 0, make([]byte, 40))
		s.b = append(s.b, trunc[:30]...) // the stream ends inside a message
	})

	return seeds
}

// seedMemory is guest memory with both rings described and one frame to
// send: legacy TX descriptor 0 points at a broadcast frame, each RX
// descriptor at its own buffer.
func seedMemory() []byte {
	m := make([]byte, seedFrame+seedFrameN)
	le := binary.LittleEndian
	le.PutUint64(m[seedTXRing:], seedIOVA+seedFrame)
	le.PutUint32(m[seedTXRing+8:], seedFrameN|0x0b000000) // EOP | IFCS | RS
	for i := range seedRing {
		le.PutUint64(m[seedRXRing+16*i:], uint64(seedIOVA+seedRXBufs+seedBufSize*i))
	}
	f := m[seedFrame:]
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x57, 0x08, 0x06})
	for i := 14; i < seedFrameN; i++ {
		f[i] = byte(i)
	}
	return m
}

// session builds the messages of one seed.
type session struct {
	b  []byte
	id uint16
}

func (s *session) call(cmd vfiouser.Command, payload []byte) {
	s.id++
	s.b = append(s.b, frame(s.id, cmd, 0, payload)...)
}

func (s *session) read(region uint32, off uint64, n uint32) {
	s.call(vfiouser.CmdRegionRead, encoded(vfiouser.RegionRWSize, func(b []byte) {
		vfiouser.RegionRW{Offset: off, Region: region, Count: n}.Encode(b)
	}))
}

func regionWrite(region uint32, off uint64, data []byte) []byte {
	p := make([]byte, vfiouser.RegionRWSize+len(data))
	vfiouser.RegionRW{Offset: off, Region: region, Count: uint32(len(data))}.Encode(p)
	copy(p[vfiouser.RegionRWSize:], data)
	return p
}

func (s *session) write(region uint32, off uint64, data []byte) {
	s.call(vfiouser.CmdRegionWrite, regionWrite(region, off, data))
}

// post is a REGION_WRITE without reply, as QEMU posts BAR writes.
func (s *session) post(region uint32, off uint64, data []byte) {
	s.id++
	s.b = append(s.b, frame(s.id, vfiouser.CmdRegionWrite, vfiouser.FlagNoReply, regionWrite(region, off, data))...)
}

func (s *session) setIRQs(index, flags, start, count uint32, bools []byte) {
	p := make([]byte, vfiouser.IRQSetSize+len(bools))
	vfiouser.IRQSet{Argsz: uint32(len(p)), Flags: flags, Index: index, Start: start, Count: count}.Encode(p)
	copy(p[vfiouser.IRQSetSize:], bools)
	s.call(vfiouser.CmdSetIRQs, p)
}

func (s *session) dmaMap(iova, size uint64) {
	s.call(vfiouser.CmdDMAMap, encoded(vfiouser.DMAMapSize, func(b []byte) {
		vfiouser.DMAMap{Argsz: vfiouser.DMAMapSize, Flags: vfiouser.DMAFlagRead | vfiouser.DMAFlagWrite, Addr: iova, Size: size}.Encode(b)
	}))
}

func (s *session) dmaUnmap(iova, size uint64) {
	s.call(vfiouser.CmdDMAUnmap, encoded(vfiouser.DMAUnmapSize, func(b []byte) {
		vfiouser.DMAUnmap{Argsz: vfiouser.DMAUnmapSize, Addr: iova, Size: size}.Encode(b)
	}))
}

// feature sends DEVICE_FEATURE; argsz 0 is the request's own size.
func (s *session) feature(flags uint32, data []byte, argsz uint64) {
	p := make([]byte, vfiouser.FeatureSize+len(data))
	if argsz == 0 {
		argsz = uint64(len(p))
	}
	vfiouser.Feature{Argsz: uint32(argsz), Flags: flags}.Encode(p)
	copy(p[vfiouser.FeatureSize:], data)
	s.call(vfiouser.CmdDeviceFeature, p)
}

func (s *session) setState(st device.MigrationState) {
	s.feature(vfiouser.FeatMigDeviceState|vfiouser.FeatureSet, append(le32(uint32(st)), le32(0xffffffff)...), 0)
}

func (s *session) migRead(n uint32) {
	s.call(vfiouser.CmdMigDataRead, encoded(vfiouser.MigDataSize, func(b []byte) {
		vfiouser.MigData{Argsz: vfiouser.MigDataSize + n, Size: n}.Encode(b)
	}))
}

func (s *session) migWrite(data []byte) {
	p := make([]byte, vfiouser.MigDataSize+len(data))
	vfiouser.MigData{Argsz: vfiouser.MigDataSize, Size: uint32(len(data))}.Encode(p)
	copy(p[vfiouser.MigDataSize:], data)
	s.call(vfiouser.CmdMigDataWrite, p)
}

// rings sets up what a driver does before traffic: bus master, MAC
// loopback, an RX ring with every buffer given to the NIC, a TX ring, and
// one frame sent.
func (s *session) rings() {
	bar := func(off uint32, v uint32) { s.post(device.RegionBAR0, uint64(off), le32(v)) }
	s.write(device.RegionConfig, 4, le16(0x0006))
	bar(e1000e.IMS, 0xffffffff)
	bar(e1000e.RDBAL0, seedIOVA+seedRXRing)
	bar(e1000e.RDBAH0, 0)
	bar(e1000e.RDLEN0, seedRing*16)
	bar(e1000e.RDH0, 0)
	bar(e1000e.RDT0, seedRing-1)
	bar(e1000e.RCTL, 0x2|0x8|0x10|0x40|0x8000) // EN, UPE, MPE, MAC loopback, BAM
	bar(e1000e.TDBAL0, seedIOVA+seedTXRing)
	bar(e1000e.TDBAH0, 0)
	bar(e1000e.TDLEN0, seedRing*16)
	bar(e1000e.TDH0, 0)
	bar(e1000e.TDT0, 0)
	bar(e1000e.TCTL, 0x2|0x8) // EN, PSP
	bar(e1000e.TDT0, 1)
}

func encoded(n int, enc func([]byte)) []byte {
	b := make([]byte, n)
	enc(b)
	return b
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
