package events

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/events/recordpb"
)

// Errors returned by the recorder.
var (
	// ErrClosed is returned by a Recorder after Close.
	ErrClosed = errors.New("recorder closed")
	// ErrRecordTooLarge is returned for a record that marshals to more than
	// MaxRecordSize bytes. Nothing is appended.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrCorrupt is wrapped by errors about damaged recordings: a reader
	// met bytes that fail their checksum or hash, or OpenRecorder found a
	// last segment it cannot continue.
	ErrCorrupt = errors.New("recording corrupt")
)

// FsyncPolicy says when the recorder makes appended records durable.
type FsyncPolicy int

const (
	// FsyncControl syncs before an append holding a control record
	// returns, and otherwise every FsyncInterval. An acknowledged control
	// record is never lost; kernel records of the last interval may be.
	FsyncControl FsyncPolicy = iota
	// FsyncAlways syncs before every append returns.
	FsyncAlways
	// FsyncInterval syncs every FsyncInterval only.
	FsyncInterval
)

var fsyncNames = map[FsyncPolicy]string{
	FsyncControl:  "control",
	FsyncAlways:   "always",
	FsyncInterval: "interval",
}

// String returns the policy's name as ParseFsyncPolicy accepts it.
func (p FsyncPolicy) String() string {
	if s, ok := fsyncNames[p]; ok {
		return s
	}
	return fmt.Sprintf("FsyncPolicy(%d)", int(p))
}

// ParseFsyncPolicy parses "always", "control" or "interval".
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	for p, name := range fsyncNames {
		if s == name {
			return p, nil
		}
	}
	return 0, fmt.Errorf("fsync policy %q: want always, control or interval", s)
}

// RecorderOptions configure a Recorder. The zero value gives the defaults.
type RecorderOptions struct {
	// MaxSegmentBytes rotates the segment once it reaches this size.
	// Default 64 MiB.
	MaxSegmentBytes int64
	// MaxSegmentAge rotates a segment holding records once it is this old.
	// Default 1h; negative never rotates by age.
	MaxSegmentAge time.Duration
	// MaxTotalBytes bounds the recording: the oldest segments are deleted,
	// after a Retention record, while the total is larger. The segment
	// being written is never deleted. Default 1 GiB; negative keeps all.
	MaxTotalBytes int64
	// Fsync says when appended records become durable. Default
	// FsyncControl.
	Fsync FsyncPolicy
	// FsyncInterval is the period of background syncs. Default 1s.
	FsyncInterval time.Duration
	// BufferBytes of records are gathered before they are written to the
	// file. Default 256 KiB.
	BufferBytes int
}

func (o RecorderOptions) withDefaults() (RecorderOptions, error) {
	if o.MaxSegmentBytes == 0 {
		o.MaxSegmentBytes = 64 << 20
	}
	if o.MaxSegmentAge == 0 {
		o.MaxSegmentAge = time.Hour
	}
	if o.MaxTotalBytes == 0 {
		o.MaxTotalBytes = 1 << 30
	}
	if o.FsyncInterval == 0 {
		o.FsyncInterval = time.Second
	}
	if o.BufferBytes == 0 {
		o.BufferBytes = 256 << 10
	}
	if _, ok := fsyncNames[o.Fsync]; !ok {
		return o, fmt.Errorf("fsync policy %d: unknown", o.Fsync)
	}
	if o.MaxSegmentBytes < segmentHeaderSize || o.FsyncInterval < 0 || o.BufferBytes < 0 {
		return o, errors.New("recorder options: negative or too small sizes")
	}
	return o, nil
}

// segmentState is a retained segment of the recording being written.
type segmentState struct {
	Path   string
	Header segmentHeader
	Size   int64
}

// Recorder appends records to a recording directory. It is safe for
// concurrent use. Close it to make every record durable and seal the
// recording.
type Recorder struct {
	dir  string
	opts RecorderOptions

	mu         sync.Mutex
	file       *os.File
	segs       []segmentState // oldest first; the last is being written
	buf        []byte         // whole frames not yet written
	seq        uint64
	hash       [32]byte
	segRecords int
	unsynced   bool
	err        error // sticky: the file no longer matches the chain
	closed     bool
	subs       subscribers

	monoBase uint64
	start    time.Time
	recovery *Recovery

	stop chan struct{}
	done chan struct{}
}

// OpenRecorder opens the recording in dir, creating dir and the first
// segment when needed, and continues its chain. A torn final record left
// by a crash is cut off and sealed with a Gap record; see Recovery.
func OpenRecorder(dir string, opts RecorderOptions) (*Recorder, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create recording directory: %w", err)
	}

	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("read monotonic clock: %w", err)
	}
	rec := &Recorder{
		dir:      dir,
		opts:     opts,
		buf:      make([]byte, 0, opts.BufferBytes+4096),
		monoBase: uint64(ts.Nano()),
		start:    time.Now(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}

	if err := rec.open(); err != nil {
		if rec.file != nil {
			rec.file.Close()
		}
		return nil, err
	}
	go rec.syncLoop()
	return rec, nil
}

// open resumes or starts the recording and repairs its tail.
func (rec *Recorder) open() error {
	if err := rec.resume(); err != nil {
		return err
	}
	if rec.recovery != nil {
		if err := rec.sealRecovery(); err != nil {
			return err
		}
	}
	return rec.applyRetention()
}

// Recovery returns what OpenRecorder repaired at the end of the recording,
// or nil when the recording ended cleanly.
func (rec *Recorder) Recovery() *Recovery {
	return rec.recovery
}

// Dir returns the recording directory.
func (rec *Recorder) Dir() string {
	return rec.dir
}

// Append assigns r the next sequence number, the current time (where
// r.MonoNs or r.WallNs are zero, for example when no kernel timestamp was
// copied in) and the schema version, and appends it. It returns r's
// sequence number. Strings that are not UTF-8 are repaired in r (see
// utf8.go). Append does not retain r.
func (rec *Recorder) Append(r *recordpb.Record) (uint64, error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()

	if err := rec.usable(); err != nil {
		return 0, err
	}
	now := time.Now()
	if err := rec.appendOne(r, now); err != nil {
		return 0, err
	}
	return r.Seq, rec.settle(IsControl(r))
}

// AppendBatch appends rs in order as Append does, with one timestamp and
// at most one sync, and returns the sequence number of the last. When it
// fails part way, the records before the failing one are appended and have
// their Seq set.
func (rec *Recorder) AppendBatch(rs []*recordpb.Record) (uint64, error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()

	if err := rec.usable(); err != nil {
		return 0, err
	}
	now := time.Now()
	control := false
	for _, r := range rs {
		if err := rec.appendOne(r, now); err != nil {
			return 0, errors.Join(err, rec.settle(control))
		}
		control = control || IsControl(r)
	}
	return rec.seq, rec.settle(control)
}

func (rec *Recorder) usable() error {
	if rec.closed {
		return ErrClosed
	}
	return rec.err
}

// appendLocked adds the frame of r to the buffer and advances the chain.
func (rec *Recorder) appendLocked(r *recordpb.Record, now time.Time) error {
	r.Seq = rec.seq + 1
	if r.WallNs == 0 {
		r.WallNs = now.UnixNano()
	}
	if r.MonoNs == 0 {
		r.MonoNs = rec.monoBase + uint64(now.Sub(rec.start))
	}
	r.SchemaVersion = currentSchema
	if g := r.GetGap(); g != nil && g.FirstSeq == 0 && g.LastSeq == 0 {
		g.FirstSeq, g.LastSeq = rec.seq, r.Seq
	}

	start := len(rec.buf)
	rec.buf = append(rec.buf, make([]byte, frameHeaderSize)...)
	copy(rec.buf[start+8:], rec.hash[:])
	buf, err := marshalRecord(rec.buf, r)
	if err != nil && repairUTF8(r.ProtoReflect()) {
		buf, err = marshalRecord(rec.buf, r)
	}
	if err != nil {
		rec.buf = rec.buf[:start]
		return fmt.Errorf("marshal record %d: %w", r.Seq, err)
	}
	if len(buf)-start-frameHeaderSize > MaxRecordSize {
		rec.buf = buf[:start]
		return fmt.Errorf("record %d of kind %s: %w", r.Seq, Kind(r), ErrRecordTooLarge)
	}

	rec.buf = buf
	rec.hash = sealFrame(buf[start:])
	rec.seq = r.Seq
	rec.segRecords++
	rec.segs[len(rec.segs)-1].Size += int64(len(buf) - start)
	rec.subs.publish(r)
	return nil
}

// settle writes and syncs as the options ask after an append.
func (rec *Recorder) settle(control bool) error {
	var err error
	switch {
	case rec.opts.Fsync == FsyncAlways, control && rec.opts.Fsync == FsyncControl:
		err = rec.syncLocked()
	case len(rec.buf) >= rec.opts.BufferBytes:
		err = rec.flushLocked()
	}
	return err
}

// flushLocked writes the buffered frames to the segment file.
func (rec *Recorder) flushLocked() error {
	if len(rec.buf) == 0 {
		return nil
	}
	_, err := rec.file.Write(rec.buf)
	rec.buf = rec.buf[:0]
	if err != nil {
		rec.err = fmt.Errorf("write %s: %w", rec.file.Name(), err)
		return rec.err
	}
	rec.unsynced = true
	return nil
}

// syncLocked writes the buffered frames and makes them durable.
func (rec *Recorder) syncLocked() error {
	if err := rec.flushLocked(); err != nil {
		return err
	}
	if !rec.unsynced {
		return nil
	}
	if err := rec.file.Sync(); err != nil {
		rec.err = fmt.Errorf("sync %s: %w", rec.file.Name(), err)
		return rec.err
	}
	rec.unsynced = false
	return nil
}

// Sync writes every appended record to the file and makes it durable.
func (rec *Recorder) Sync() error {
	rec.mu.Lock()
	defer rec.mu.Unlock()

	if err := rec.usable(); err != nil {
		return err
	}
	return rec.syncLocked()
}

func (rec *Recorder) syncLoop() {
	defer close(rec.done)
	t := time.NewTicker(rec.opts.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-rec.stop:
			return
		case <-t.C:
		}
		rec.mu.Lock()
		if rec.usable() == nil {
			// A failure is sticky and returned by the next append.
			_ = rec.syncLocked()
		}
		rec.mu.Unlock()
	}
}

// Close makes every appended record durable, seals the recording and
// closes the channels of all subscribers. Appends after Close return
// ErrClosed.
func (rec *Recorder) Close() error {
	rec.mu.Lock()
	if rec.closed {
		rec.mu.Unlock()
		return nil
	}
	rec.closed = true
	rec.mu.Unlock()

	close(rec.stop)
	<-rec.done

	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.subs.closeAll()
	err := rec.err
	if err == nil {
		err = rec.syncLocked()
	}
	if cerr := rec.file.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close segment: %w", cerr)
	}
	if err != nil {
		return err
	}
	return writeSeal(rec.dir, rec.currentSeal())
}

func (rec *Recorder) currentSeal() *seal {
	cur := rec.segs[len(rec.segs)-1]
	return &seal{Seq: rec.seq, Hash: rec.hash, Index: cur.Header.Index}
}

// RecorderStats describe a recording being written.
type RecorderStats struct {
	// Seq is the sequence number of the last appended record.
	Seq uint64
	// Segments and Bytes count the retained segments and their size,
	// including records not yet written to the file.
	Segments int
	Bytes    int64
	// SubscriberDrops counts records not delivered to slow subscribers.
	SubscriberDrops uint64
}

// Stats returns the recorder's counters.
func (rec *Recorder) Stats() RecorderStats {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return RecorderStats{
		Seq:             rec.seq,
		Segments:        len(rec.segs),
		Bytes:           rec.totalBytes(),
		SubscriberDrops: rec.subs.drops,
	}
}

func (rec *Recorder) totalBytes() int64 {
	var n int64
	for _, s := range rec.segs {
		n += s.Size
	}
	return n
}

// appendOne appends r, first starting a new segment when the current one
// holds records and is full or old. Rotating before rather than after an
// append means no segment is left empty.
func (rec *Recorder) appendOne(r *recordpb.Record, now time.Time) error {
	if rec.segRecords > 0 && rec.segmentDone(now) {
		if err := rec.rotate(); err != nil {
			return err
		}
	}
	return rec.appendLocked(r, now)
}

func (rec *Recorder) segmentDone(now time.Time) bool {
	cur := rec.segs[len(rec.segs)-1]
	if cur.Size >= rec.opts.MaxSegmentBytes {
		return true
	}
	age := time.Duration(now.UnixNano() - cur.Header.CreatedNs)
	return rec.opts.MaxSegmentAge >= 0 && age >= rec.opts.MaxSegmentAge
}

// rotate closes the current segment, seals it, starts the next one and
// applies retention.
func (rec *Recorder) rotate() error {
	if err := rec.syncLocked(); err != nil {
		return err
	}
	if err := rec.file.Close(); err != nil {
		rec.err = fmt.Errorf("close segment: %w", err)
		return rec.err
	}
	rec.file = nil
	cur := rec.segs[len(rec.segs)-1].Header
	if err := writeSeal(rec.dir, rec.currentSeal()); err != nil {
		rec.err = err
		return err
	}
	if err := rec.createSegment(cur.Index + 1); err != nil {
		rec.err = err
		return err
	}
	return rec.applyRetention()
}

// createSegment starts segment index, continuing the chain.
func (rec *Recorder) createSegment(index uint64) error {
	h := segmentHeader{
		Index:     index,
		PrevSeq:   rec.seq,
		PrevHash:  rec.hash,
		CreatedNs: time.Now().UnixNano(),
	}
	path := filepath.Join(rec.dir, segmentName(index))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if _, err := f.Write(h.marshal()); err != nil {
		f.Close()
		return fmt.Errorf("write segment header: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync segment header: %w", err)
	}
	if err := syncDir(rec.dir); err != nil {
		f.Close()
		return err
	}

	rec.file = f
	rec.segRecords = 0
	rec.unsynced = false
	rec.segs = append(rec.segs, segmentState{Path: path, Header: h, Size: segmentHeaderSize})
	return nil
}

// applyRetention deletes the oldest segments while the recording is larger
// than MaxTotalBytes. Each deletion is announced by a durable Retention
// record first, so that Verify can tell it from tampering.
func (rec *Recorder) applyRetention() error {
	if rec.opts.MaxTotalBytes < 0 {
		return nil
	}
	for len(rec.segs) > 1 && rec.totalBytes() > rec.opts.MaxTotalBytes {
		oldest, next := rec.segs[0], rec.segs[1]
		r := &recordpb.Record{Body: &recordpb.Record_Retention{Retention: &recordpb.Retention{
			Removed:      []string{filepath.Base(oldest.Path)},
			ThroughSeq:   next.Header.PrevSeq,
			ThroughHash:  next.Header.PrevHash[:],
			BytesRemoved: uint64(oldest.Size),
		}}}
		if err := rec.appendLocked(r, time.Now()); err != nil {
			return err
		}
		if err := rec.syncLocked(); err != nil {
			return err
		}
		if err := os.Remove(oldest.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old segment: %w", err)
		}
		rec.segs = rec.segs[1:]
	}
	return syncDir(rec.dir)
}
