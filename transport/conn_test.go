package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Every byte a batchConn takes arrives, in order, even from many writers and past the
// pending cap; Close lets what is pending leave first.
func TestBatchConnDeliversInOrder(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	bc := newBatchConn(a)
	var got bytes.Buffer
	read := make(chan error, 1)
	go func() { _, err := io.Copy(&got, b); read <- err }()

	var want bytes.Buffer
	var wg sync.WaitGroup
	chunks := make([][]byte, 200)
	for i := range chunks {
		chunks[i] = bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*37%9000)
	}
	// One ordered writer (like yamux's send loop) and a concurrent one with its own bytes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, c := range chunks {
			if _, err := bc.Write(c); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, c := range chunks {
		want.Write(c)
	}
	wg.Wait()
	big := bytes.Repeat([]byte("z"), 3*maxPending) // over the cap: Write waits for room
	if _, err := bc.Write(big); err != nil {
		t.Fatal(err)
	}
	want.Write(big)
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("reader did not end")
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d (or out of order)", got.Len(), want.Len())
	}
	if _, err := bc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

// A failed network write fails the next Write and closes the connection.
func TestBatchConnReportsWriteErrors(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	bc := newBatchConn(a)
	b.Close() // the peer is gone: the flusher's write fails
	bc.Write([]byte("hello"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := bc.Write([]byte("x")); err != nil {
			if errors.Is(err, net.ErrClosed) {
				t.Errorf("got ErrClosed, want the write's own error")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes kept succeeding after the peer closed")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-bc.done:
	case <-time.After(5 * time.Second):
		t.Fatal("flusher did not end")
	}
}
