package vfiouser

import (
	"fmt"
	"syscall"
)

// Dirty logging through DEVICE_FEATURE: DMA_LOGGING_START, _STOP and
// _REPORT, over the DMA table's dirty log (the legacy DIRTY_PAGES command,
// in handlers_dma.go, serves the same log).

func setLoggingStart(c *Conn, data []byte) error {
	s, err := DecodeLoggingStart(data)
	if err != nil {
		return err
	}
	// The kernel lets a device log at a coarser page than asked and say
	// so in page_size, but the reply must equal the request here: a page
	// finer than the table's 4 KiB is refused rather than silently
	// coarsened, so the client learns it now and not at its first report.
	if s.PageSize < DMAPageSize {
		return fmt.Errorf("logging start: page size %#x below %#x: %w", s.PageSize, DMAPageSize, syscall.EINVAL)
	}
	_, err = c.dma.StartLogging(s.PageSize, s.Ranges)
	return err
}

func setLoggingStop(c *Conn, _ []byte) error {
	c.dma.StopLogging()
	return nil
}

// getLoggingReport answers with the range asked for and its bitmap, whose
// pages are cleared (read-and-clear).
func getLoggingReport(g featureGet) error {
	r, err := DecodeLoggingReport(g.data)
	if err != nil {
		return err
	}
	if r.PageSize == 0 {
		return fmt.Errorf("logging report: page size 0: %w", syscall.EINVAL)
	}
	n := BitmapBytes(r.Length, r.PageSize)
	if n > g.c.srv.opts.MaxBitmapSize {
		return fmt.Errorf("logging report: bitmap of %d bytes over %d: %w", n, g.c.srv.opts.MaxBitmapSize, syscall.E2BIG)
	}
	out, err := g.reply(LoggingReportSize + int(n))
	if err != nil {
		return err
	}
	r.Encode(out)
	return g.c.dma.Report(r.IOVA, r.Length, r.PageSize, out[LoggingReportSize:])
}
