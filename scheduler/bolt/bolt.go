// Package bolt is the durable scheduler.Journal, on go.etcd.io/bbolt. Every accepted job
// is fsynced before its id reaches the client; concurrent writes share one transaction
// and one fsync (bbolt's Batch: group commit), so throughput does not collapse under load.
package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"runbox/scheduler"
)

var (
	bucketJobs    = []byte("jobs")    // id → JSON scheduler.Record
	bucketPending = []byte("pending") // submitted (8 bytes) + id → nothing
	bucketDone    = []byte("done")    // finished (8 bytes) + id → nothing, for trimming
)

// Config configures a Journal.
type Config struct {
	// Path is the database file.
	Path string
	// KeepFinished is how many finished jobs stay in the journal (results fetched by id
	// after a restart); older ones are deleted.
	KeepFinished int
	// BatchDelay is how long a write waits to share its fsync with others.
	BatchDelay time.Duration
}

// DefaultConfig returns a Config for the journal in dir.
func DefaultConfig(dir string) Config {
	return Config{Path: filepath.Join(dir, "journal.db"), KeepFinished: 100000, BatchDelay: 2 * time.Millisecond}
}

// Journal is a scheduler.Journal in a bbolt file.
type Journal struct {
	db   *bbolt.DB
	keep int

	mu    sync.Mutex
	nDone int // records in bucketDone
}

var _ scheduler.Journal = (*Journal)(nil)

// Open opens (or creates) the journal. A second process opening the same file waits up
// to 5 s for its lock, then fails.
func Open(cfg Config) (*Journal, error) {
	if cfg.KeepFinished < 1 {
		return nil, errors.New("bolt journal: keep finished must be at least 1")
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt journal: %w", err)
	}
	db, err := bbolt.Open(cfg.Path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("bolt journal: open %s: %w", cfg.Path, err)
	}
	if cfg.BatchDelay > 0 {
		db.MaxBatchDelay = cfg.BatchDelay
	}
	j := &Journal{db: db, keep: cfg.KeepFinished}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketPending, bucketDone} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		j.nDone = tx.Bucket(bucketDone).Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt journal: %w", err)
	}
	return j, nil
}

func timeKey(t time.Time, id string) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	copy(k[8:], id)
	return k
}

// Accept implements scheduler.Journal: the record is on disk when it returns.
func (j *Journal) Accept(rec scheduler.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return j.db.Batch(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketJobs).Put([]byte(rec.ID), b); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).Put(timeKey(rec.Submitted, rec.ID), nil)
	})
}

// Finish implements scheduler.Journal.
func (j *Journal) Finish(rec scheduler.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	trimmed := 0
	err = j.db.Batch(func(tx *bbolt.Tx) error {
		trimmed = 0
		jobs := tx.Bucket(bucketJobs)
		if err := jobs.Put([]byte(rec.ID), b); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPending).Delete(timeKey(rec.Submitted, rec.ID)); err != nil {
			return err
		}
		done := tx.Bucket(bucketDone)
		if err := done.Put(timeKey(rec.Finished, rec.ID), nil); err != nil {
			return err
		}
		j.mu.Lock()
		over := j.nDone + 1 - j.keep
		j.mu.Unlock()
		c := done.Cursor()
		for k, _ := c.First(); k != nil && over > 0; k, _ = c.First() {
			if err := jobs.Delete(k[8:]); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			over--
			trimmed++
		}
		return nil
	})
	if err == nil {
		j.mu.Lock()
		j.nDone += 1 - trimmed
		j.mu.Unlock()
	}
	return err
}

// Pending implements scheduler.Journal.
func (j *Journal) Pending() ([]scheduler.Record, error) {
	var out []scheduler.Record
	err := j.db.View(func(tx *bbolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		return tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
			var rec scheduler.Record
			b := jobs.Get(k[8:])
			if b == nil {
				return nil
			}
			if err := json.Unmarshal(b, &rec); err != nil {
				return fmt.Errorf("record %s: %w", k[8:], err)
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
	err := j.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketJobs).Get([]byte(id))
		if b == nil {
			return scheduler.ErrNotFound
		}
		return json.Unmarshal(b, &rec)
	})
	return rec, err
}

// Close implements scheduler.Journal.
func (j *Journal) Close() error { return j.db.Close() }
