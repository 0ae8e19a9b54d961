package transport

import (
	"net"
	"sync"
	"time"
)

// batchConn is the connection under a yamux session: it gathers the bytes that yamux's
// send loop writes and hands them to the network from a goroutine of its own, so that
// frames written while the previous write is on its way leave together.
//
// yamux writes each frame as two writes, its 12-byte header then its body, and a job
// stream carries a handful of frames (open, request, reply, close): one syscall (or TLS
// record) per write was most of a job's CPU time. With batchConn a lone frame still
// leaves at once (the goroutine wakes as soon as the header is in), and under load many
// frames share one write.
//
// Write never fails for the bytes it took unless the connection has already failed: an
// error of the network write is returned by the next Write and closes the connection,
// which ends the session. Write blocks while maxPending bytes wait, so a slow peer slows
// its writers down as it would without batchConn.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	cond    *sync.Cond // signalled on every change of pending, err or closing
	pending []byte     // bytes taken by Write, not yet handed to Conn
	err     error      // the first write error, or net.ErrClosed after Close
	done    chan struct{}
}

// maxPending bounds the bytes waiting to be written; one yamux window (256 KiB) fits.
const maxPending = 512 << 10

// closeFlush bounds how long Close waits for pending bytes to leave.
const closeFlush = time.Second

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.flush()
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.pending) >= maxPending && b.err == nil {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	b.pending = append(b.pending, p...)
	b.cond.Broadcast()
	return len(p), nil
}

// flush writes what is pending until the connection fails or is closed.
func (b *batchConn) flush() {
	defer close(b.done)
	var out []byte
	for {
		b.mu.Lock()
		for len(b.pending) == 0 && b.err == nil {
			b.cond.Wait()
		}
		if len(b.pending) == 0 { // failed or closed, and nothing left to write
			b.mu.Unlock()
			return
		}
		out, b.pending = b.pending, out[:0]
		b.cond.Broadcast() // room for blocked writers
		b.mu.Unlock()

		_, err := b.Conn.Write(out)

		b.mu.Lock()
		if err != nil && b.err == nil {
			b.err = err
		}
		failed := err != nil
		b.cond.Broadcast()
		b.mu.Unlock()
		if failed {
			b.Conn.Close()
			return
		}
	}
}

// Close gives the pending bytes up to closeFlush to leave, then closes the connection.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.err == nil {
		b.err = net.ErrClosed
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	select {
	case <-b.done:
	case <-time.After(closeFlush):
	}
	return b.Conn.Close()
}
