package netdev

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// pcapSnaplen is the snapshot length written in the file header; it covers
// MaxFrameSize, so every frame is captured whole.
const pcapSnaplen = 262144

// Pcap is a Backend that forwards everything to another backend and writes
// each frame, in both directions, to a classic pcap file (LINKTYPE_ETHERNET,
// microsecond timestamps) that tcpdump, tshark and Wireshark read.
//
// A failure to write the file (disk full, say) is logged once and ends the
// capture; the traffic itself keeps flowing.
type Pcap struct {
	inner Backend
	log   *slog.Logger

	mu     sync.Mutex // serialises records; guards everything below
	file   *os.File
	bw     *bufio.Writer
	w      *pcapgo.Writer
	failed bool
	closed bool
}

var _ Backend = (*Pcap)(nil)

// WithPcap wraps b so that its traffic is also written to the pcap file at
// path (created or truncated). This is what --pcap FILE does.
func WithPcap(b Backend, path string) (Backend, error) {
	p, err := OpenPcap(b, path, nil)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// OpenPcap is WithPcap with a logger, returning the concrete type.
func OpenPcap(b Backend, path string, log *slog.Logger) (*Pcap, error) {
	if log == nil {
		log = slog.Default()
	}
	if b == nil {
		return nil, errors.New("pcap: no backend to wrap")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	p := &Pcap{inner: b, log: log, file: f, bw: bufio.NewWriterSize(f, 256<<10)}
	p.w = pcapgo.NewWriter(p.bw)
	if err := p.w.WriteFileHeader(pcapSnaplen, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap: write header to %s: %w", path, err)
	}
	// Write the header out now so the file is valid even before any frame.
	if err := p.bw.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap: write header to %s: %w", path, err)
	}
	return p, nil
}

// record appends one frame to the capture.
func (p *Pcap) record(frame []byte) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.failed {
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: now, CaptureLength: len(frame), Length: len(frame)}
	if err := p.w.WritePacket(ci, frame); err != nil {
		p.failed = true
		p.log.Error("pcap write failed; capture stopped", "file", p.file.Name(), "err", err)
	}
}

// Flush writes buffered records to the file, so a reader sees them now.
func (p *Pcap) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.bw.Flush(); err != nil {
		return fmt.Errorf("pcap: flush %s: %w", p.file.Name(), err)
	}
	return nil
}

// Send records the frame and passes it to the wrapped backend. It records
// first so that a reply can never appear in the file before its request.
func (p *Pcap) Send(frame []byte) error {
	if err := checkFrame(frame); err != nil {
		return err
	}
	p.record(frame)
	return p.inner.Send(frame)
}

// Start starts the wrapped backend, recording every frame it delivers.
func (p *Pcap) Start(rx Receiver) error {
	return p.inner.Start(pcapReceiver{p: p, rx: rx})
}

type pcapReceiver struct {
	p  *Pcap
	rx Receiver
}

func (r pcapReceiver) Receive(frame []byte) {
	r.p.record(frame)
	r.rx.Receive(frame)
}

// Close closes the wrapped backend (so nothing more arrives), then flushes
// and closes the file.
func (p *Pcap) Close() error {
	errInner := p.inner.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errInner
	}
	p.closed = true
	var errs []error
	if errInner != nil {
		errs = append(errs, errInner)
	}
	if err := p.bw.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("pcap: flush %s: %w", p.file.Name(), err))
	}
	if err := p.file.Close(); err != nil {
		errs = append(errs, fmt.Errorf("pcap: close %s: %w", p.file.Name(), err))
	}
	return errors.Join(errs...)
}
