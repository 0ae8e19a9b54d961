package transport

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"runbox/scheduler"
)

// rawSession is a hand-written yamux client, the cheapest attacker there is: it opens
// streams with one raw data frame each (SYN and payload together), keeps no state for
// them, drops whatever the server sends and answers its pings. What it costs the test
// process is a few bytes, so that the heap measured is the server's.
type rawSession struct {
	conn   net.Conn
	polite bool // answer the server's FIN with ours, so that yamux forgets the stream
	wmu    sync.Mutex
	nextID uint32
	opened int
	closes atomic.Int64  // streams the server closed: FIN or RST
	resets atomic.Int64  // of which RST (yamux's backlog was full)
	xs     atomic.Int64  // data frames received (answers such as X busy)
	done   chan struct{} // closed when the server ended the connection
}

// yamux frame header: version, type, flags (uint16), stream id, length (uint32).
const (
	yamuxData   = 0
	yamuxWindow = 1
	yamuxPing   = 2
	yamuxSYN    = 1
	yamuxACK    = 2
	yamuxFIN    = 4
	yamuxRST    = 8
)

func yamuxHeader(typ byte, flags uint16, id, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// dialRaw handshakes as a client and starts the raw yamux session.
func dialRaw(t testing.TB, addr string, polite bool) *rawSession {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := json.Marshal(Hello{Role: RoleClient, Name: "flood"})
	conn.Write(Preamble[:])
	WriteFrame(conn, FrameHello, hello)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, p, err := ReadFrame(conn, MaxFrame)
	if err != nil || typ != FrameWelcome {
		t.Fatalf("raw handshake: %q %s %v", typ, p, err)
	}
	conn.SetReadDeadline(time.Time{})
	r := &rawSession{conn: conn, polite: polite, nextID: 1, done: make(chan struct{})}
	go r.read()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

func (r *rawSession) read() {
	defer close(r.done)
	hdr := make([]byte, 12)
	for {
		if _, err := io.ReadFull(r.conn, hdr); err != nil {
			return
		}
		typ, flags := hdr[1], binary.BigEndian.Uint16(hdr[2:])
		length := binary.BigEndian.Uint32(hdr[8:])
		switch typ {
		case yamuxData:
			if length > 0 {
				r.xs.Add(1)
			}
			if _, err := io.CopyN(io.Discard, r.conn, int64(length)); err != nil {
				return
			}
		case yamuxPing:
			if flags&yamuxSYN != 0 {
				r.write(yamuxHeader(yamuxPing, yamuxACK, 0, length))
			}
		}
		if typ <= yamuxWindow && flags&(yamuxFIN|yamuxRST) != 0 {
			r.closes.Add(1)
			if flags&yamuxRST != 0 {
				r.resets.Add(1)
			}
			if r.polite && flags&yamuxFIN != 0 {
				r.write(yamuxHeader(yamuxWindow, yamuxFIN, binary.BigEndian.Uint32(hdr[4:]), 0))
			}
		}
	}
}

func (r *rawSession) write(b []byte) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := r.conn.Write(b)
	return err
}

// open opens a stream whose first data is payload.
func (r *rawSession) open(payload []byte) error {
	b := append(yamuxHeader(yamuxData, yamuxSYN, r.nextID, uint32(len(payload))), payload...)
	r.nextID += 2
	r.opened++
	return r.write(b)
}

// closed reports whether the server ended the connection.
func (r *rawSession) closed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func heapNow() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// heapGrowth is how much the heap holds over before, at least: the least of a few
// samples until one is under bound, so that a passing burst of another test's leftovers
// (a timer that fires, a goroutine that winds down) is not counted as held.
func heapGrowth(before, bound int64) int64 {
	grew := heapNow() - before
	for i := 0; i < 5 && grew > bound; i++ {
		time.Sleep(200 * time.Millisecond)
		grew = min(grew, heapNow()-before)
	}
	return grew
}

// TestStreamFlood: one peer opens 10,000 streams on one session that each declare a
// 64 KiB request and send one byte of it (it closes the streams the server closes, and
// keeps at most 2*MaxStreams unanswered). The server serves MaxStreams of them at once
// and answers the rest busy at once (or yamux resets them when they come faster than
// they are accepted): the heap stays within a few MiB, the goroutines bounded, and
// another client is served meanwhile.
// (Not parallel: it reads the process's heap and goroutine count.)
func TestStreamFlood(t *testing.T) {
	// The served streams wait for their payload for the whole test.
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.FirstFrameTimeout = time.Minute })
	c := dialT(t, ts.addr, nil)
	if _, err := c.Run(context.Background(), prog("out warm"), RunOptions{}); err != nil {
		t.Fatal(err)
	}
	before := heapNow()
	goroutines := runtime.NumGoroutine()

	const total = 10000
	request := []byte{FrameSubmit, 0, 1, 0, 0, 'x'} // declares 64 KiB, sends 1 byte
	limit := ts.srv.cfg.MaxStreams
	r := dialRaw(t, ts.addr, true)
	for r.opened < total && !r.closed() {
		for r.opened-int(r.closes.Load()) >= 2*limit && !r.closed() {
			time.Sleep(time.Millisecond)
		}
		if err := r.open(request); err != nil {
			t.Fatal(err)
		}
	}
	// Barrier: the server has seen every stream: all but the ones it serves are closed.
	waitUntil(t, func() bool { return r.closed() || int(r.closes.Load()) >= total-limit })
	if r.closed() {
		t.Fatal("the server closed the session")
	}
	// Another client is served while the flood's streams are held.
	if res, err := c.Run(context.Background(), prog("out served"), RunOptions{}); err != nil || string(res.Stdout) != "served\n" {
		t.Errorf("a client during the flood: %v %+v", err, res)
	}
	grew := heapGrowth(before, 4<<20)
	held := runtime.NumGoroutine() - goroutines
	t.Logf("%d streams, %d KiB sent: %d answered busy, %d reset by yamux, %d served: heap %+d KiB, %d goroutines more",
		total, total*18>>10, r.xs.Load(), r.resets.Load(), total-int(r.closes.Load()), grew>>10, held)
	if grew > 4<<20 {
		t.Errorf("the heap grew by %d KiB for %d streams of one byte", grew>>10, total)
	}
	if held > limit+16 {
		t.Errorf("%d goroutines more during the flood, want at most MaxStreams (%d) and a few", held, limit)
	}
	if busy := r.xs.Load(); busy == 0 {
		t.Error("no stream was answered busy")
	}
}

// TestStreamHoarderClosed: a peer that leaves open the streams the server closed (here,
// the ones refused busy) has its session closed, and the session keeps counting against
// its address until yamux lets go of its streams: reconnecting does not let it pile
// them up. (Not parallel: it reads the process's heap.)
func TestStreamHoarderClosed(t *testing.T) {
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
		c.FirstFrameTimeout = time.Minute
		c.MaxConnsPerAddress = 1
		c.KeepAlive = time.Minute // the closed session counts for 2 minutes: past the checks below
	})
	before := heapNow()
	request := []byte{FrameSubmit, 0, 1, 0, 0, 'x'}
	limit := ts.srv.cfg.MaxStreams
	r := dialRaw(t, ts.addr, false)
	for !r.closed() {
		for r.opened-int(r.closes.Load()) >= 2*limit && !r.closed() {
			time.Sleep(time.Millisecond)
		}
		if r.open(request) != nil || r.opened > 100000 {
			break
		}
	}
	<-r.done
	if r.opened > 100000 {
		t.Fatalf("the session holds %d streams and is still open", r.opened)
	}
	grew := heapGrowth(before, 4<<20)
	t.Logf("closed after %d streams: heap %+d KiB", r.opened, grew>>10)
	if grew > 4<<20 {
		t.Errorf("the heap grew by %d KiB", grew>>10)
	}
	// Its address's one connection is still taken.
	_, err := Dial(context.Background(), ts.addr, DefaultClientConfig())
	if !errors.Is(err, scheduler.ErrBusy) || !strings.Contains(err.Error(), "connections from 127.0.0.1") {
		t.Errorf("a new connection from the hoarder's address: %v, want busy", err)
	}
}

// TestConnectionsPerAddress: past MaxConnsPerAddress a connection is answered busy after
// its hello; past twice it, it is closed at once; a connection that ends frees its place.
func TestConnectionsPerAddress(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
		c.MaxConnsPerAddress = 2
		c.HandshakeTimeout = time.Minute // a silent connection is not closed by its timeout here
	})
	a, b := dialT(t, ts.addr, nil), dialT(t, ts.addr, nil)
	_, err := Dial(context.Background(), ts.addr, DefaultClientConfig())
	if !errors.Is(err, scheduler.ErrBusy) || !strings.Contains(err.Error(), "2 connections from 127.0.0.1 already") {
		t.Errorf("third connection: %v, want busy", err)
	}
	held := func() int { ts.srv.mu.Lock(); defer ts.srv.mu.Unlock(); return ts.srv.perAddr["127.0.0.1"] }
	waitUntil(t, func() bool { return held() == 2 }) // the refused one is gone
	// Two silent connections (handshakes pending) take the places up to twice the cap;
	// the next one is closed without a word.
	var silent []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		silent = append(silent, conn)
	}
	waitUntil(t, func() bool {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(make([]byte, 1))
		return n == 0 && errors.Is(err, io.EOF) // closed, long before its handshake timeout
	})
	if res, err := a.Run(context.Background(), prog("out a"), RunOptions{}); err != nil || string(res.Stdout) != "a\n" {
		t.Errorf("an admitted connection: %v", err)
	}
	b.Close()
	for _, c := range silent {
		c.Close()
	}
	waitUntil(t, func() bool {
		c, err := Dial(context.Background(), ts.addr, DefaultClientConfig())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// The caps are ServerConfig fields: zero takes the default, negative is refused.
func TestServerConfigCaps(t *testing.T) {
	t.Parallel()
	sched, err := scheduler.New(scheduler.DefaultConfig(), nil, scheduler.NewMemJournal(10))
	if err != nil {
		t.Fatal(err)
	}
	defer sched.Close()
	cfg := DefaultServerConfig()
	cfg.MaxStreams, cfg.StreamBacklog, cfg.MaxConnsPerAddress, cfg.DrainBytes, cfg.MinRequestRate = 0, 0, 0, 0, 0
	srv, err := NewServer(cfg, sched)
	if err != nil {
		t.Fatal(err)
	}
	if srv.cfg.MaxStreams != DefaultMaxStreams || srv.cfg.StreamBacklog != DefaultStreamBacklog || srv.cfg.MaxConnsPerAddress != DefaultMaxConnsPerAddress ||
		srv.cfg.DrainBytes != DefaultDrainBytes || srv.cfg.MinRequestRate != DefaultMinRequestRate {
		t.Errorf("zero caps did not take the defaults: %+v", srv.cfg)
	}
	for name, set := range map[string]func(*ServerConfig){
		"MaxStreams":         func(c *ServerConfig) { c.MaxStreams = -1 },
		"StreamBacklog":      func(c *ServerConfig) { c.StreamBacklog = -1 },
		"MaxConnsPerAddress": func(c *ServerConfig) { c.MaxConnsPerAddress = -1 },
		"DrainBytes":         func(c *ServerConfig) { c.DrainBytes = -1 },
		"MinRequestRate":     func(c *ServerConfig) { c.MinRequestRate = -1 },
	} {
		cfg := DefaultServerConfig()
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s negative: %v", name, err)
		}
	}
}
