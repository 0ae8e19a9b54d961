// Package bolt is the durable scheduler.Journal, on go.etcd.io/bbolt. Every accepted job
// is fsynced before its id reaches the client; concurrent writes share one transaction
// and one fsync (bbolt's Batch: group commit), so throughput does not collapse under load.
//
// The journal is bounded: finished jobs keep their results and lose their inputs, and the
// oldest go once the finished ones pass a count, a byte size or an age; unfinished jobs
// past a byte bound (or a full disk) refuse new jobs with scheduler.ErrStorageFull. The
// file is compacted (copied live into a new file, then renamed over the old one) at open
// and whenever most of it is free space, so that it shrinks.
//
// The file is outside input: Open checks it (its header against its size, then every
// page, with memory faults turned into errors) and refuses a damaged one with ErrDamaged
// and what to do, never a crash; a record that does not decode is skipped and logged.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"

	"runbox/scheduler"
)

var (
	bucketJobs    = []byte("jobs")    // id → JSON scheduler.Record
	bucketPending = []byte("pending") // submitted (8 bytes) + id → attempts (4 bytes; empty: the record's)
	bucketDone    = []byte("done")    // finished (8 bytes) + id → record size (8 bytes; empty: look it up)
	bucketMeta    = []byte("meta")    // counters, kept in step with the buckets in each transaction

	keyPendingBytes = []byte("pending_bytes")
	keyDoneBytes    = []byte("done_bytes")
	keyDoneN        = []byte("done_n")
)

// ErrDamaged: the journal file is not a journal, or is truncated or corrupt.
var ErrDamaged = errors.New("journal file damaged")

// Config configures a Journal.
type Config struct {
	// Path is the database file.
	Path string
	// KeepFinished, RetainBytes and RetainAge bound the finished jobs kept (results
	// fetched by id after a restart): at most KeepFinished records, of at most
	// RetainBytes encoded, none finished longer ago than RetainAge (0: no age bound).
	// The oldest go first.
	KeepFinished int
	RetainBytes  int64
	RetainAge    time.Duration
	// MaxPendingBytes bounds the unfinished jobs' records: past it Accept refuses new jobs
	// with scheduler.ErrStorageFull until some finish.
	MaxPendingBytes int64
	// CompactFree: when the file's free pages pass this many bytes and half the file, the
	// file is compacted.
	CompactFree int64
	// BatchDelay is how long a write waits to share its fsync with others.
	BatchDelay time.Duration
	// LockTimeout is how long Open (and a compaction, for its new file) waits for the
	// file's lock, held by another process, before it fails.
	LockTimeout time.Duration
	// Logger receives the journal's logs (skipped records, compactions); nil discards them.
	Logger *slog.Logger

	// openFile, when set (tests), opens the database files in place of os.OpenFile.
	openFile func(string, int, os.FileMode) (*os.File, error)
}

// DefaultConfig returns a Config for the journal in dir.
func DefaultConfig(dir string) Config {
	return Config{Path: filepath.Join(dir, "journal.db"), KeepFinished: 100000, RetainBytes: scheduler.DefaultRetainBytes,
		RetainAge: 24 * time.Hour, MaxPendingBytes: 1 << 30, CompactFree: 64 << 20, BatchDelay: 2 * time.Millisecond,
		LockTimeout: 5 * time.Second}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("bolt journal: empty path")
	case c.KeepFinished < 1:
		return errors.New("bolt journal: keep finished must be at least 1")
	case c.RetainBytes < 0 || c.MaxPendingBytes < 1 || c.CompactFree < 0:
		return errors.New("bolt journal: retain bytes and compact free must be 0 or more, max pending bytes positive")
	case c.RetainAge < 0 || c.BatchDelay < 0:
		return errors.New("bolt journal: retain age and batch delay must be 0 or more")
	case c.LockTimeout <= 0:
		return errors.New("bolt journal: the lock timeout must be positive (bbolt waits forever on 0)")
	}
	return nil
}

// Journal is a scheduler.Journal in a bbolt file.
type Journal struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	// gate: operations hold it shared; a compaction (which swaps db) and Close hold it
	// alone.
	gate   sync.RWMutex
	db     *bbolt.DB // nil once closed, or after a compaction could not reopen the file
	dbErr  error     // why db is nil
	closed bool

	compacting  atomic.Bool
	skipped     atomic.Int64
	compactions atomic.Int64
}

var _ scheduler.Journal = (*Journal)(nil)

// Open opens (or creates) the journal. A second process opening the same file waits up
// to LockTimeout for its lock, then fails. A damaged file is refused with an error wrapping
// ErrDamaged that names the file and says how to move it aside.
func Open(cfg Config) (*Journal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt journal: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	j := &Journal{cfg: cfg, log: log.With("component", "journal", "file", cfg.Path), now: time.Now}
	db, err := j.openDB(cfg.Path)
	if err != nil {
		return nil, err
	}
	j.db = db
	if err := j.repairGuarded(); err != nil {
		func() { defer func() { recover() }(); db.Close() }()
		return nil, err
	}
	if j.compactDue(true) {
		j.gate.Lock()
		j.compactLocked()
		j.gate.Unlock()
		if j.db == nil {
			return nil, j.dbErr
		}
	}
	return j, nil
}

// damaged is the error of a file that cannot be used, with what the operator can do.
func damaged(path string, cause error) error {
	return fmt.Errorf("bolt journal: %w: %s: %v; move it aside and restart (the master then starts with an empty journal; jobs accepted and not finished in that file are lost): mv %s %s.broken",
		ErrDamaged, path, cause, path, path)
}

// openDB checks path, opens it and reads every page of it once, with memory faults
// turned into panics and panics into ErrDamaged: a truncated or corrupt file makes bbolt
// read past its end (SIGBUS) or panic on a bad page.
func (j *Journal) openDB(path string) (db *bbolt.DB, err error) {
	if err := checkHeader(path); err != nil {
		return nil, damaged(path, err)
	}
	var files []*os.File // what bbolt opened, to close if it panics half-way
	openFile := j.cfg.openFile
	if openFile == nil {
		openFile = os.OpenFile
	}
	opts := &bbolt.Options{Timeout: j.cfg.LockTimeout, OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
		f, err := openFile(name, flag, mode)
		if f != nil {
			files = append(files, f)
		}
		return f, err
	}}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				func() { defer func() { recover() }(); db.Close() }()
			}
			for _, f := range files {
				f.Close() // releases bbolt's lock; its memory map stays (a few pages, once)
			}
			db, err = nil, damaged(path, fmt.Errorf("reading it failed: %v", p))
		}
	}()
	db, err = bbolt.Open(path, 0o600, opts)
	if err != nil {
		if errors.Is(err, bbolt.ErrInvalid) || errors.Is(err, bbolt.ErrChecksum) || errors.Is(err, bbolt.ErrVersionMismatch) {
			return nil, damaged(path, err)
		}
		return nil, fmt.Errorf("bolt journal: open %s: %w", path, err)
	}
	if j.cfg.BatchDelay > 0 {
		db.MaxBatchDelay = j.cfg.BatchDelay
	}
	if err := db.View(touchAll); err != nil {
		db.Close()
		return nil, damaged(path, err)
	}
	// Then bbolt's own check of the pages against the freelist (a page freed twice, or
	// both used and free): such a file reads well and breaks at its first write, where a
	// rollback re-reads the bad freelist and faults.
	if err := db.View(checkPages); err != nil {
		db.Close()
		return nil, damaged(path, err)
	}
	return db, nil
}

// checkPages runs bbolt's consistency check and returns its first finding. It runs after
// touchAll, which has read every page the check descends into, under faults turned into
// panics: the check's own goroutine then meets no page that faults.
func checkPages(tx *bbolt.Tx) error {
	var first error
	for err := range tx.Check() { // drained: the check's goroutine ends before the tx
		if first == nil {
			first = err
		}
	}
	return first
}

// touchAll reads every key and value of every bucket, so that a bad page shows now.
func touchAll(tx *bbolt.Tx) error {
	var sink byte
	err := tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			for i := 0; i < len(v); i += 1 << 10 {
				sink ^= v[i]
			}
			if len(k) > 0 {
				sink ^= k[len(k)-1]
			}
			return nil
		})
	})
	_ = sink
	return err
}

// bbolt's file format (version 2): a page header, then the meta.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64 // magic, version, page size, flags, root (16), freelist, pgid, txid, checksum
	noFreelist     = ^uint64(0)
)

type meta struct {
	pageSize, pgid, root, freelist, txid uint64
}

// readMeta decodes and checks the meta page at off, nil when it is not a valid one.
func readMeta(f *os.File, off int64) *meta {
	var b [pageHeaderSize + metaSize]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return nil
	}
	m := b[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion {
		return nil
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return nil
	}
	return &meta{pageSize: uint64(le.Uint32(m[8:])), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
}

// checkHeader checks a journal file's meta pages against its size, before bbolt maps it:
// a file too short for its header, or shorter than its header says, would make bbolt read
// past its end. A missing or empty file is a new journal.
func checkHeader(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return nil // bbolt reports it
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	// The page size is in the first meta page, or, when that one is damaged, in the second,
	// found where bbolt looks for it.
	m0 := readMeta(f, 0)
	var pageSize uint64
	if m0 != nil {
		pageSize = m0.pageSize
	} else {
		for i := 0; i <= 14 && pageSize == 0; i++ {
			if m := readMeta(f, 1024<<i); m != nil && m.pageSize == 1024<<i {
				pageSize = m.pageSize
			}
		}
	}
	if pageSize == 0 {
		if size < 2*1024 {
			return fmt.Errorf("%d bytes: too short for a journal's header", size)
		}
		return errors.New("no valid header (not a journal, or overwritten)")
	}
	if pageSize < 512 || pageSize > 1<<24 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("header gives a page size of %d", pageSize)
	}
	if uint64(size) < 2*pageSize {
		return fmt.Errorf("%d bytes: too short for a journal's header (%d)", size, 2*pageSize)
	}
	// bbolt uses the valid meta with the highest transaction id.
	var use *meta
	for _, m := range []*meta{m0, readMeta(f, int64(pageSize))} {
		if m != nil && m.pageSize == pageSize && (use == nil || m.txid > use.txid) {
			use = m
		}
	}
	if use == nil {
		return errors.New("no valid header")
	}
	if use.pgid < 2 || use.root >= use.pgid || (use.freelist != noFreelist && use.freelist >= use.pgid) {
		return fmt.Errorf("header is inconsistent (%d pages, root page %d, freelist page %d)", use.pgid, use.root, use.freelist)
	}
	if want := use.pgid * pageSize; uint64(size) < want || want/pageSize != use.pgid {
		return fmt.Errorf("truncated: %d bytes, its header says %d", size, want)
	}
	return nil
}

// repairGuarded is repair, the first write to the file, with memory faults turned into
// panics and panics into ErrDamaged, like openDB's reads: damage the checks did not see
// shows at the first commit.
func (j *Journal) repairGuarded() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(j.cfg.Path, fmt.Errorf("writing it failed: %v", p))
		}
	}()
	return j.repair()
}

// repair makes an opened file ready: buckets, the undecodable pending records dropped
// (logged and counted), counters recomputed, the retention bounds applied.
func (j *Journal) repair() error {
	err := j.db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketPending, bucketDone, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		jobs, pending, done := tx.Bucket(bucketJobs), tx.Bucket(bucketPending), tx.Bucket(bucketDone)
		var pendingBytes, doneBytes, doneN int64
		var broken [][]byte
		err := pending.ForEach(func(k, _ []byte) error {
			if len(k) < 8 {
				broken = append(broken, bytes.Clone(k))
				return nil
			}
			b := jobs.Get(k[8:])
			if _, err := decode(k[8:], b); err != nil {
				j.skip(k[8:], err)
				broken = append(broken, bytes.Clone(k))
				return nil
			}
			pendingBytes += int64(len(b))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range broken {
			if err := pending.Delete(k); err != nil {
				return err
			}
			if len(k) >= 8 {
				if err := jobs.Delete(k[8:]); err != nil {
					return err
				}
			}
		}
		err = done.ForEach(func(k, v []byte) error {
			if len(k) >= 8 {
				doneN++
				doneBytes += doneSize(jobs, k, v)
			}
			return nil
		})
		if err != nil {
			return err
		}
		c := counters{pendingBytes: pendingBytes, doneBytes: doneBytes, doneN: doneN}
		if err := j.trim(tx, &c); err != nil {
			return err
		}
		return c.put(tx.Bucket(bucketMeta))
	})
	if err != nil {
		return fmt.Errorf("bolt journal: %s: %w", j.cfg.Path, err)
	}
	return nil
}

// decode reads a record, checking that it is the one its key names.
func decode(id, b []byte) (scheduler.Record, error) {
	var rec scheduler.Record
	if b == nil {
		return rec, errors.New("no record")
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	if rec.ID != string(id) {
		return rec, fmt.Errorf("record names job %q", rec.ID)
	}
	return rec, nil
}

func (j *Journal) skip(id []byte, err error) {
	j.skipped.Add(1)
	j.log.Error("journal record skipped: it does not decode", "job", string(id), "err", err)
}

func doneSize(jobs *bbolt.Bucket, k, v []byte) int64 {
	if len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return int64(len(jobs.Get(k[8:])))
}

// counters are kept in bucketMeta, updated in the transaction that changes them.
type counters struct {
	pendingBytes, doneBytes, doneN int64
}

func getCounters(meta *bbolt.Bucket) counters {
	get := func(k []byte) int64 {
		if v := meta.Get(k); len(v) == 8 {
			return int64(binary.BigEndian.Uint64(v))
		}
		return 0
	}
	return counters{pendingBytes: get(keyPendingBytes), doneBytes: get(keyDoneBytes), doneN: get(keyDoneN)}
}

func (c counters) put(meta *bbolt.Bucket) error {
	for k, v := range map[string]int64{string(keyPendingBytes): c.pendingBytes, string(keyDoneBytes): c.doneBytes, string(keyDoneN): c.doneN} {
		if err := meta.Put([]byte(k), u64(max(v, 0))); err != nil {
			return err
		}
	}
	return nil
}

func u64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func timeKey(t time.Time, id string) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	copy(k[8:], id)
	return k
}

// update runs fn in a batched, fsynced transaction on the open file.
// update runs fn in a write transaction shared with concurrent writes (one fsync for all).
// A ctx that ends before the transaction runs fn stops the write: nothing of it is
// written, and the error wraps ctx.Err(). Once the transaction commits, it is on disk.
func (j *Journal) update(ctx context.Context, op string, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("journal %s: %w", op, err)
	}
	j.gate.RLock()
	defer j.gate.RUnlock()
	if j.db == nil {
		return fmt.Errorf("journal %s: %w", op, j.dbErr)
	}
	return storageErr(op, j.db.Batch(func(tx *bbolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err // bbolt runs the batch's other writes without this one
		}
		return fn(tx)
	}))
}

func (j *Journal) view(fn func(*bbolt.Tx) error) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	if j.db == nil {
		return j.dbErr
	}
	return j.db.View(fn)
}

// storageErr marks a write that failed for want of space (no space left, a quota, the
// file size limit) as scheduler.ErrStorageFull. bbolt does not always wrap the system's
// error (a failed resize is text only), so its text counts too.
func storageErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, scheduler.ErrStorageFull) {
		return err
	}
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG} {
		if errors.Is(err, errno) || strings.Contains(err.Error(), errno.Error()) {
			return fmt.Errorf("%w: journal %s: %v", scheduler.ErrStorageFull, op, err)
		}
	}
	return fmt.Errorf("journal %s: %w", op, err)
}

// Accept implements scheduler.Journal: the record is on disk when it returns.
func (j *Journal) Accept(ctx context.Context, rec scheduler.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return j.update(ctx, "accept", func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		c := getCounters(meta)
		if c.pendingBytes+int64(len(b)) > j.cfg.MaxPendingBytes {
			return fmt.Errorf("%w: the journal holds %d bytes of unfinished jobs, and this one is %d more; its bound is %d",
				scheduler.ErrStorageFull, c.pendingBytes, len(b), j.cfg.MaxPendingBytes)
		}
		if err := tx.Bucket(bucketJobs).Put([]byte(rec.ID), b); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPending).Put(timeKey(rec.Submitted, rec.ID), attemptsValue(rec.Attempts)); err != nil {
			return err
		}
		c.pendingBytes += int64(len(b))
		return c.put(meta)
	})
}

func attemptsValue(n int) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(max(n, 0)))
}

// Dispatch implements scheduler.Journal: the attempt count is on disk when it returns.
func (j *Journal) Dispatch(ctx context.Context, rec scheduler.Record) error {
	key := timeKey(rec.Submitted, rec.ID)
	return j.update(ctx, "dispatch", func(tx *bbolt.Tx) error {
		pending := tx.Bucket(bucketPending)
		if k, _ := pending.Cursor().Seek(key); !bytes.Equal(k, key) {
			return nil // finished or forgotten
		}
		return pending.Put(key, attemptsValue(rec.Attempts))
	})
}

// Finish implements scheduler.Journal: the record replaces the pending one (finished
// records should come without their inputs, scheduler.WithoutInputs), then the oldest
// finished records past the bounds go, and the file is compacted when most of it is free.
func (j *Journal) Finish(ctx context.Context, rec scheduler.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = j.update(ctx, "finish", func(tx *bbolt.Tx) error {
		jobs, pending, meta := tx.Bucket(bucketJobs), tx.Bucket(bucketPending), tx.Bucket(bucketMeta)
		c := getCounters(meta)
		key := timeKey(rec.Submitted, rec.ID)
		if k, _ := pending.Cursor().Seek(key); bytes.Equal(k, key) {
			c.pendingBytes -= int64(len(jobs.Get([]byte(rec.ID))))
			if err := pending.Delete(key); err != nil {
				return err
			}
		} else if jobs.Get([]byte(rec.ID)) != nil {
			return nil // finished already (a retried Finish whose first try landed)
		}
		if err := jobs.Put([]byte(rec.ID), b); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDone).Put(timeKey(rec.Finished, rec.ID), u64(int64(len(b)))); err != nil {
			return err
		}
		c.doneN++
		c.doneBytes += int64(len(b))
		if err := j.trim(tx, &c); err != nil {
			return err
		}
		return c.put(meta)
	})
	if err == nil {
		j.maybeCompact()
	}
	return err
}

// trim deletes the oldest finished records past the bounds.
func (j *Journal) trim(tx *bbolt.Tx, c *counters) error {
	jobs := tx.Bucket(bucketJobs)
	var cutoff int64
	if j.cfg.RetainAge > 0 {
		cutoff = j.now().Add(-j.cfg.RetainAge).UnixNano()
	}
	cur := tx.Bucket(bucketDone).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.First() {
		old := len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) < cutoff
		if c.doneN <= int64(j.cfg.KeepFinished) && c.doneBytes <= j.cfg.RetainBytes && !old && len(k) >= 8 {
			return nil
		}
		if len(k) >= 8 {
			c.doneBytes -= doneSize(jobs, k, v)
			if err := jobs.Delete(bytes.Clone(k[8:])); err != nil {
				return err
			}
		}
		if err := cur.Delete(); err != nil {
			return err
		}
		c.doneN--
	}
	return nil
}

// Pending implements scheduler.Journal. A record that does not decode is skipped and
// logged.
func (j *Journal) Pending() ([]scheduler.Record, error) {
	var out []scheduler.Record
	err := j.view(func(tx *bbolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			if len(k) < 8 {
				j.skip(k, errors.New("bad key"))
				return nil
			}
			rec, err := decode(k[8:], jobs.Get(k[8:]))
			if err != nil {
				j.skip(k[8:], err)
				return nil
			}
			if len(v) == 4 {
				rec.Attempts = int(binary.BigEndian.Uint32(v))
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

// Get implements scheduler.Journal.
func (j *Journal) Get(id string) (scheduler.Record, error) {
	var rec scheduler.Record
	err := j.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketJobs).Get([]byte(id))
		if b == nil {
			return scheduler.ErrNotFound
		}
		var err error
		if rec, err = decode([]byte(id), b); err != nil {
			j.skip([]byte(id), err)
			return fmt.Errorf("%w: record %s does not decode", scheduler.ErrNotFound, id)
		}
		return nil
	})
	return rec, err
}

// Stats describes the journal.
type Stats struct {
	Pending       int   // unfinished jobs
	Finished      int   // finished jobs kept
	PendingBytes  int64 // their records' bytes
	FinishedBytes int64
	FileBytes     int64 // the file's size
	FreeBytes     int64 // of which free pages
	Skipped       int64 // records that did not decode, since Open
	Compactions   int64 // since Open
}

// Stats returns the journal's counters.
func (j *Journal) Stats() (Stats, error) {
	st := Stats{Skipped: j.skipped.Load(), Compactions: j.compactions.Load()}
	err := j.view(func(tx *bbolt.Tx) error {
		c := getCounters(tx.Bucket(bucketMeta))
		st.Pending = tx.Bucket(bucketPending).Stats().KeyN
		st.Finished, st.PendingBytes, st.FinishedBytes = int(c.doneN), c.pendingBytes, c.doneBytes
		st.FreeBytes = int64(tx.DB().Stats().FreeAlloc)
		return nil
	})
	if fi, serr := os.Stat(j.cfg.Path); serr == nil {
		st.FileBytes = fi.Size()
	}
	return st, err
}

// compactDue reports whether the file is mostly free space: at least CompactFree bytes
// (at open: 1 MiB, or CompactFree if lower) and half the file.
func (j *Journal) compactDue(atOpen bool) bool {
	j.gate.RLock()
	defer j.gate.RUnlock()
	if j.db == nil {
		return false
	}
	free := int64(j.db.Stats().FreeAlloc)
	fi, err := os.Stat(j.cfg.Path)
	if err != nil || free == 0 {
		return false
	}
	threshold := j.cfg.CompactFree
	if atOpen {
		threshold = min(threshold, 1<<20)
	}
	return free >= threshold && 2*free >= fi.Size()
}

func (j *Journal) maybeCompact() {
	if !j.compactDue(false) || !j.compacting.CompareAndSwap(false, true) {
		return
	}
	defer j.compacting.Store(false)
	j.gate.Lock()
	defer j.gate.Unlock()
	if !j.closed && j.db != nil {
		j.compactLocked()
	}
}

// compactLocked copies the live data into a new file, then renames it over the journal
// and reopens it. A failure before the rename leaves the journal as it was.
func (j *Journal) compactLocked() {
	path, tmp := j.cfg.Path, j.cfg.Path+".compact"
	before, _ := os.Stat(path)
	if err := j.copyTo(tmp); err != nil {
		os.Remove(tmp)
		j.log.Error("journal compaction failed; the journal goes on as it was", "err", storageErr("compact", err))
		return
	}
	if err := j.db.Close(); err != nil {
		j.log.Error("close the journal for compaction", "err", err)
	}
	renameErr := os.Rename(tmp, path)
	if renameErr == nil {
		syncDir(filepath.Dir(path))
	} else {
		os.Remove(tmp)
		j.log.Error("journal compaction: rename", "err", renameErr)
	}
	db, err := j.openDB(path)
	if err != nil {
		j.db, j.dbErr = nil, fmt.Errorf("reopen after compaction: %w", err)
		j.log.Error("journal lost after compaction", "err", err)
		return
	}
	j.db = db
	if renameErr == nil {
		j.compactions.Add(1)
		after, _ := os.Stat(path)
		if before != nil && after != nil {
			j.log.Info("journal compacted", "before", before.Size(), "after", after.Size())
		}
	}
}

func (j *Journal) copyTo(tmp string) (err error) {
	os.Remove(tmp)
	opts := &bbolt.Options{Timeout: j.cfg.LockTimeout, NoSync: true, OpenFile: j.cfg.openFile}
	dst, err := bbolt.Open(tmp, 0o600, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	if err := bbolt.Compact(dst, j.db, 16<<20); err != nil {
		return err
	}
	return dst.Sync()
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Close implements scheduler.Journal.
func (j *Journal) Close() error {
	j.gate.Lock()
	defer j.gate.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	db := j.db
	j.db, j.dbErr = nil, errors.New("journal closed")
	if db == nil {
		return nil
	}
	return db.Close()
}
