package vfiouser

import (
	"testing"
)

// BenchmarkDirtyReport64GiB measures one DMA_LOGGING_REPORT over 64 GiB of
// guest memory (16 Mi pages, a 2 MiB bitmap), read-and-clear, with 4096
// pages dirtied by the device since the previous report. The memfd is
// sparse: only the pages written are ever backed.
func BenchmarkDirtyReport64GiB(b *testing.B) {
	const size = 64 << 30
	mem, err := NewMemory(size)
	if err != nil {
		b.Fatalf("mapping 64 GiB of address space: %v", err)
	}
	defer mem.Close()
	tab := NewDMATable(DefaultDMALimits)
	defer tab.UnmapAll()
	if err := tab.Map(DMAMap{Flags: DMAFlagRead | DMAFlagWrite, Addr: 0, Size: size}, mem.FD()); err != nil {
		b.Fatal(err)
	}
	if _, err := tab.StartLogging(DMAPageSize, nil); err != nil {
		b.Fatal(err)
	}
	bm := make([]byte, BitmapBytes(size, DMAPageSize))
	word := make([]byte, 8)
	const dirtied = 4096
	stride := uint64(size / dirtied)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i := range uint64(dirtied) {
			if err := tab.Write(i*stride, word); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := tab.Report(0, size, DMAPageSize, bm); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	set := 0
	for _, x := range bm {
		for ; x != 0; x &= x - 1 {
			set++
		}
	}
	if set != dirtied {
		b.Fatalf("report has %d dirty pages, want %d", set, dirtied)
	}
}
