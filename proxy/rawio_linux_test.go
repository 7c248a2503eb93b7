package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of rawIO (rawio_linux.go) on real loopback TCP sockets: it must behave as the
// net.Conn it replaces on the fast path.

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestRawIO_IsRawForSockets(t *testing.T) {
	c, _ := tcpPair(t)
	if _, ok := newRawIO(c).(*rawIO); !ok {
		t.Fatalf("newRawIO(*net.TCPConn) = %T, want *rawIO", newRawIO(c))
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if rw := newRawIO(p1); rw != io.ReadWriter(p1) {
		t.Fatalf("newRawIO(net.Pipe) = %T, want the conn itself", rw)
	}
}

// A write far larger than the socket buffers, to a reader that reads slowly, must wait
// for writability (EAGAIN) and resume where the kernel stopped, in both directions at
// once, as a full-duplex relay uses a connection.
func TestRawIO_LargeWritesBothWays(t *testing.T) {
	c, s := tcpPair(t)
	rc, rs := newRawIO(c), newRawIO(s)
	const size = 16 << 20
	a := make([]byte, size)
	b := make([]byte, size)
	for i := range a {
		a[i] = byte(rand.IntN(256))
		b[i] = byte(rand.IntN(256))
	}
	type result struct {
		got []byte
		err error
	}
	readAll := func(r io.Reader, n int) chan result {
		ch := make(chan result, 1)
		go func() {
			got := make([]byte, 0, n)
			buf := make([]byte, 3000) // smaller than a segment: many short reads
			for len(got) < n {
				k, err := r.Read(buf)
				got = append(got, buf[:k]...)
				if err != nil {
					ch <- result{got, err}
					return
				}
				if len(got)%(1<<20) < 3000 {
					time.Sleep(time.Millisecond) // slower than the writer: its buffer fills
				}
			}
			ch <- result{got, nil}
		}()
		return ch
	}
	toS := readAll(rs, size)
	toC := readAll(rc, size)
	werr := make(chan error, 2)
	go func() { _, err := rc.Write(a); werr <- err }()
	go func() { _, err := rs.Write(b); werr <- err }()
	for range 2 {
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	for _, x := range []struct {
		ch   chan result
		want []byte
	}{{toS, a}, {toC, b}} {
		r := <-x.ch
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		if !bytes.Equal(r.got, x.want) {
			t.Fatalf("read %d bytes that differ from the %d written", len(r.got), len(x.want))
		}
	}
}

func TestRawIO_EOFAndErrors(t *testing.T) {
	c, s := tcpPair(t)
	rc := newRawIO(c)
	if _, err := s.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	buf := make([]byte, 10)
	n, err := io.ReadFull(rc, buf[:2])
	if n != 2 || err != nil || string(buf[:2]) != "hi" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := rc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer's FIN = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := rc.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}

	// A reset by the peer: its socket closed with unread bytes.
	c2, s2 := tcpPair(t)
	rc2 := newRawIO(c2)
	if _, err := rc2.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	s2.SetLinger(0)
	s2.Close() // a reset at once, on loopback
	// The first write after the reset fails; one before it lands could still succeed.
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = rc2.Write(bytes.Repeat([]byte("x"), 1<<16))
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Fatalf("write after the peer's reset: %v; want ECONNRESET or EPIPE", werr)
	}
	// A read of a reset connection.
	c3, s3 := tcpPair(t)
	s3.SetLinger(0)
	s3.Close()
	c3.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure, not a hang, if no reset comes
	if _, err := newRawIO(c3).Read(buf); !errors.Is(err, syscall.ECONNRESET) || !strings.HasPrefix(err.Error(), "read tcp ") {
		t.Fatalf("read after the peer's reset: %v; want read tcp ...: ECONNRESET", err)
	}
	if n, err := rc2.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write = %d, %v", n, err)
	}
	var oe *net.OpError
	if !errors.As(werr, &oe) || oe.Op != "write" || !strings.HasPrefix(werr.Error(), "write tcp 127.0.0.1:") {
		t.Fatalf("write error %q (%T) does not read as net.Conn's", werr, werr)
	}
}

func TestRawIO_DeadlineAndClose(t *testing.T) {
	c, _ := tcpPair(t)
	rc := newRawIO(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	_, err := rc.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v is not a net.Error timeout", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the deadline took %v", time.Since(start))
	}
	if !strings.HasPrefix(err.Error(), "read tcp ") {
		t.Fatalf("read error %q does not read as net.Conn's", err)
	}

	// Close from another goroutine wakes a parked read, as with net.Conn.
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := rc.Read(make([]byte, 10)); done <- err }()
	// Whether the read has parked yet or not, Close must end it with net.ErrClosed; the
	// pause only makes the parked case, the one that matters, the likely one.
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the read")
	}
}

// A read and a write allocate nothing: the point of the closures made per connection.
func TestRawIO_NoAllocations(t *testing.T) {
	c, s := tcpPair(t)
	rc, rs := newRawIO(c), newRawIO(s)
	msg := []byte("ping")
	buf := make([]byte, 16)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := rc.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rs, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a write and a read allocate %.1f times; want 0", allocs)
	}
}
