package migration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"

	"e1000e-vfu/device"
)

// Options configure a Machine.
type Options struct {
	Limits Limits
	Logger *slog.Logger
	// P2P advertises the RUNNING_P2P and PRE_COPY_P2P states. The kernel's
	// uAPI defines them as RUNNING and PRE_COPY except that the device
	// must not initiate peer-to-peer DMA, and must still answer accesses.
	// An emulated device only ever DMAs to guest memory, so the machine
	// keeps it running in both: a VMM moves every device of a guest to
	// RUNNING_P2P before stopping any, and a device that keeps running
	// until STOP keeps the guest's network up through that whole round
	// instead of going dark at its first step. Quiescing already in P2P
	// would be allowed too, but buys nothing for a device without P2P DMA.
	P2P bool
}

// Machine runs the migration v2 state machine for a Stateful device and
// implements device.Migratable. It owns the save and resume buffers; the
// device owns its state.
//
// The device runs (it is not quiesced) in RUNNING, PRE_COPY and their P2P
// twins, and is quiesced in every other state.
//
// Saving: entering PRE_COPY (or STOP_COPY directly) starts a save session
// with the header and the configuration sections, so a destination sees
// them first and can refuse early; PRE_COPY's data ends there. Entering
// STOP_COPY quiesces the device and appends the rest of the state, the end
// marker and the checksum. The client reads it all as one byte stream.
//
// Resuming: written data is buffered (bounded by Limits.MaxStreamSize); as
// soon as the header has arrived it is checked against the device, and a
// refusal fails that write. RESUMING→STOP loads the whole stream; if it is
// refused the transition fails, the device is untouched, the machine stays
// in RESUMING and the buffered data is dropped, so the client may send a
// stream again.
type Machine struct {
	mu    sync.Mutex
	dev   Stateful
	flags uint64
	lim   Limits
	log   *slog.Logger

	state    device.MigrationState
	quiesced bool

	out     []byte // the stream being saved
	outRead int    // bytes of out the client has consumed
	outEnd  int    // end of what may be read in the current state

	in      []byte // the stream being received
	inHdr   int    // length of the header once accepted
	inHead  Header
	loader  Loader
	refused error // a header refusal, repeated to later writes

	// The scan of the records received so far resumes where the last
	// write left it (scanIncoming), so a stream sent in many small writes
	// costs what it costs sent in one.
	inScan     int // offset in in of the next record not yet walked; 0 before the header
	inSections int // sections walked
	inEnd      int // length of the stream once its end has arrived and passed the check; 0 before
	inLooked   int // bytes of record headers the scan has looked at, partial ones each time: its work, which a test bounds

	scratch []byte // for size estimates

	v1 *V1Region // the v1 region serving this machine, if any
}

var _ device.Migratable = (*Machine)(nil)

// NewMachine returns a machine in RUNNING for dev.
func NewMachine(dev Stateful, opts Options) *Machine {
	flags := device.MigFlagStopCopy | device.MigFlagPreCopy
	if opts.P2P {
		flags |= device.MigFlagP2P
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Machine{dev: dev, flags: flags, lim: opts.Limits.withDefaults(), log: log, state: sRunning}
}

// MigrationFlags implements device.Migratable.
func (m *Machine) MigrationFlags() uint64 { return m.flags }

// MigrationState implements device.Migratable.
func (m *Machine) MigrationState() device.MigrationState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// SetMigrationState implements device.Migratable: it walks the path to
// target one arc at a time. An arc that fails for an internal reason moves
// the machine to ERROR; a refused load leaves it in RESUMING.
func (m *Machine) SetMigrationState(target device.MigrationState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setStateLocked(target)
}

func (m *Machine) setStateLocked(target device.MigrationState) error {
	path, err := Path(m.flags, m.state, target)
	if err != nil {
		return fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	if len(path) > 0 {
		// A v1 chunk staged in the data area belongs to the state it
		// was staged in: a v1 state change has counted it as read
		// already, and any other change abandons it. Kept, it would
		// count against a save that never held it.
		m.dropStaged()
	}
	for _, next := range path {
		if err := m.arc(m.state, next); err != nil {
			return err
		}
		m.log.Debug("migration state", "from", m.state.String(), "to", next.String())
		m.state = next
	}
	return nil
}

// isActive says whether the device runs in s. The P2P states count: they
// only forbid peer-to-peer DMA, which an emulated device never does.
func isActive(s device.MigrationState) bool {
	return s == sRunning || s == sPreCopy || s == sRunningP2P || s == sPreCopyP2P
}

func isSaving(s device.MigrationState) bool {
	return s == sPreCopy || s == sPreCopyP2P || s == sStopCopy
}

// arc performs one direct transition's side effects.
func (m *Machine) arc(from, to device.MigrationState) error {
	if isActive(from) && !isActive(to) && !m.quiesced {
		m.dev.Quiesce()
		m.quiesced = true
	}
	if from == sResuming {
		if err := m.finishResume(); err != nil {
			var ae *ApplyError
			if errors.As(err, &ae) {
				return m.fail(err)
			}
			// The device is untouched: stay in RESUMING, ready for a
			// new stream.
			m.resetResume()
			return fmt.Errorf("%w: %w", err, syscall.EINVAL)
		}
		// Loaded: nothing of the stream is needed any more, and the
		// buffer (up to the stream limit) is not kept for a next one.
		m.resetResume()
		m.in = nil
	}
	if isSaving(to) && !isSaving(from) {
		if err := m.startSave(); err != nil {
			return m.fail(err)
		}
	}
	if to == sStopCopy {
		if err := m.finishSave(); err != nil {
			return m.fail(err)
		}
	}
	if isSaving(from) && !isSaving(to) {
		m.dropSave()
	}
	if to == sResuming {
		m.resetResume()
	}
	if !isActive(from) && isActive(to) && m.quiesced {
		m.dev.Resume()
		m.quiesced = false
	}
	return nil
}

// fail moves the machine to ERROR after an internal failure; only Reset
// leaves it.
func (m *Machine) fail(err error) error {
	m.log.Error("migration: device entered ERROR", "err", err)
	m.state = sError
	m.dropStaged()
	m.dropSave()
	m.resetResume()
	return fmt.Errorf("%w: %w", err, syscall.EIO)
}

func (m *Machine) startSave() error {
	b, err := saveHead(m.out[:0], m.dev, m.lim)
	if err != nil {
		return err
	}
	m.out, m.outRead, m.outEnd = b, 0, len(b)
	return nil
}

func (m *Machine) finishSave() error {
	b, err := saveTail(m.out, m.dev, m.lim)
	if err != nil {
		return err
	}
	m.out, m.outEnd = b, len(b)
	return nil
}

// dropStaged forgets a chunk staged in the v1 region's data area.
func (m *Machine) dropStaged() {
	if m.v1 != nil {
		m.v1.staged = 0
	}
}

// unread returns how many saved bytes the client has yet to read. The
// offsets are checked rather than trusted, so a bookkeeping error between
// the two protocols is an error for that request and not a slice out of
// range.
func (m *Machine) unread() (int, error) {
	if m.outRead < 0 || m.outRead > m.outEnd || m.outEnd > len(m.out) {
		return 0, fmt.Errorf("migration: save offsets %d..%d outside the %d bytes saved: %w", m.outRead, m.outEnd, len(m.out), syscall.EIO)
	}
	return m.outEnd - m.outRead, nil
}

func (m *Machine) dropSave() {
	m.out, m.outRead, m.outEnd = m.out[:0], 0, 0
}

func (m *Machine) resetResume() {
	m.in, m.inHdr, m.inHead, m.loader, m.refused = m.in[:0], 0, Header{}, nil, nil
	m.inScan, m.inSections, m.inEnd, m.inLooked = 0, 0, 0, 0
}

// checkIncoming runs the header check as soon as the header has arrived.
func (m *Machine) checkIncoming() error {
	if m.refused != nil {
		return m.refused
	}
	if m.inHdr > 0 {
		return nil
	}
	h, n, ld, err := CheckHeader(m.in, m.dev, m.lim)
	if errors.Is(err, ErrShort) {
		return nil
	}
	if err != nil {
		m.refused = err
		m.log.Warn("migration: refusing incoming state", "err", err)
		return err
	}
	m.inHdr, m.inHead, m.loader = n, h, ld
	return nil
}

func (m *Machine) finishResume() error {
	if err := m.checkIncoming(); err != nil {
		return err
	}
	if m.inHdr == 0 {
		return fmt.Errorf("migration: incoming stream ends in its header (%d bytes)", len(m.in))
	}
	return loadBody(m.in, m.inHdr, m.inHead, m.loader, m.dev, m.lim, m.log)
}

// ReadMigrationData implements device.Migratable.
func (m *Machine) ReadMigrationData(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !isSaving(m.state) {
		return 0, fmt.Errorf("migration: no data to read in %s: %w", m.state.String(), syscall.EINVAL)
	}
	// A v2 read takes the bytes from where the client's reading stands;
	// a v1 chunk staged from the same place would hand them out twice.
	m.dropStaged()
	return m.readLocked(p)
}

func (m *Machine) readLocked(p []byte) (int, error) {
	if _, err := m.unread(); err != nil {
		return 0, err
	}
	n := copy(p, m.out[m.outRead:m.outEnd])
	m.outRead += n
	return n, nil
}

// WriteMigrationData implements device.Migratable.
func (m *Machine) WriteMigrationData(p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writeLocked(p)
}

func (m *Machine) writeLocked(p []byte) error {
	if m.state != sResuming {
		return fmt.Errorf("migration: data written in %s: %w", m.state.String(), syscall.EINVAL)
	}
	if m.refused != nil {
		return fmt.Errorf("%w: %w", m.refused, syscall.EINVAL)
	}
	if len(p) > m.lim.MaxStreamSize-len(m.in) {
		return fmt.Errorf("migration: incoming state exceeds %d bytes: %w", m.lim.MaxStreamSize, syscall.EFBIG)
	}
	m.in = append(m.in, p...)
	if err := m.checkIncoming(); err != nil {
		return fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	if err := m.scanIncoming(len(p)); err != nil {
		m.refused = err
		m.log.Warn("migration: refusing incoming state", "err", err)
		return fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	return nil
}

// scanIncoming walks the records that the last write (of added bytes)
// completed and, once the last record has arrived, checks the whole stream
// (checkComplete). The walk resumes where the previous write left it and
// jumps over payloads, so each record header is looked at once: the scan
// costs the same whether the stream comes in one write or in a million.
//
// It refuses what the load would refuse at the framing check anyway
// (more sections than the limit, a section over its size limit) as soon
// as the record's header shows it, so a stream of many small records
// cannot have itself buffered up to the stream limit first.
func (m *Machine) scanIncoming(added int) error {
	if m.inHdr == 0 {
		return nil
	}
	if m.inEnd > 0 {
		// The end arrived and passed; the load would refuse anything
		// after it.
		if added == 0 {
			return nil
		}
		return fmt.Errorf("migration: %d stray bytes after the checksum", len(m.in)-m.inEnd)
	}
	if m.inScan == 0 {
		m.inScan = m.inHdr
	}
	// Each pass moves inScan forward by at least one record header or
	// returns.
	for m.inScan < len(m.in) {
		b := m.in[m.inScan:]
		switch b[0] {
		case tagSection:
			head := 3 // tag, flags, name length; then the name and the payload's length
			if len(b) >= head {
				head += int(b[2]) + 4
			}
			m.inLooked += min(len(b), head)
			if len(b) < head {
				return nil
			}
			n := binary.LittleEndian.Uint32(b[head-4:])
			if uint64(n) > uint64(m.lim.MaxSectionSize) {
				return fmt.Errorf("migration: section at offset %d: %d bytes exceeds the limit of %d", m.inScan, n, m.lim.MaxSectionSize)
			}
			if m.inSections >= m.lim.MaxSections {
				return fmt.Errorf("migration: more than %d sections", m.lim.MaxSections)
			}
			m.inSections++
			// inScan may pass the end of what has arrived: the next
			// walk starts once the payload is in.
			m.inScan += head + int(n)
		case tagEnd:
			m.inLooked += min(len(b), 5)
			if len(b) < 5 {
				return nil
			}
			if err := m.checkComplete(); err != nil {
				return err
			}
			m.inEnd = len(m.in)
			return nil
		default:
			// Not a record: the check refuses the stream, naming the
			// first thing wrong with it.
			if err := m.checkComplete(); err != nil {
				return err
			}
			return fmt.Errorf("migration: unknown record tag %#02x at offset %d", b[0], m.inScan)
		}
	}
	return nil
}

// checkComplete checks the incoming stream as a load would, without applying
// it, once its last record has arrived. A client loads the device data before
// it starts the device: QEMU learns of a refusal only from the write, since
// it ignores a failed RESUMING→RUNNING after its load has succeeded. The
// load at RESUMING→STOP checks everything again, against the device as it is
// then, and applies.
func (m *Machine) checkComplete() error {
	h, n, ld, err := CheckHeader(m.in, m.dev, m.lim)
	if err != nil {
		return err
	}
	if err := checkBody(m.in, n, h, ld, m.dev, m.lim, m.log); err != nil {
		return err
	}
	return nil
}

// MigrationDataSize implements device.Migratable. In STOP_COPY it is the
// exact number of bytes left to read. Before that it is an estimate of the
// whole remaining transfer (what is left of the pre-copy data plus the state
// as it would be saved now), never 0: QEMU sizes its buffer from it.
func (m *Machine) MigrationDataSize() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case sError:
		return 0, fmt.Errorf("migration: device in ERROR: %w", syscall.EINVAL)
	case sStopCopy:
		left, err := m.unread()
		return uint64(left), err
	}
	left := 0
	var err error
	if isSaving(m.state) {
		if left, err = m.unread(); err != nil {
			return 0, err
		}
		// Only the state sections remain to be produced.
		m.scratch, err = saveTail(m.scratch[:0], m.dev, m.lim)
	} else {
		m.scratch, err = Save(m.scratch[:0], m.dev, m.lim)
	}
	if err != nil {
		return 0, fmt.Errorf("migration: estimating state size: %w: %w", err, syscall.EIO)
	}
	return uint64(left + len(m.scratch)), nil
}

// Reset returns the machine to RUNNING, dropping any save or resume in
// progress (and a staged v1 chunk) and resuming a quiesced device. The
// device's own Reset (DEVICE_RESET) calls it: that is the only way out of
// ERROR.
func (m *Machine) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropStaged()
	m.dropSave()
	m.resetResume()
	if m.quiesced {
		m.dev.Resume()
		m.quiesced = false
	}
	m.state = sRunning
}
