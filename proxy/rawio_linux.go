package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a socket of the fast path with raw system calls, waiting for
// readiness on the runtime's netpoller as net.Conn does.
//
// Why: net.Conn's Read and Write make each system call through syscall.Syscall, which
// tells the scheduler the goroutine may block (entersyscall) and, when every P was idle,
// wakes sysmon, which then polls every 20 µs for a millisecond or more. A proxy at a
// fixed rate of a few thousand requests a second goes idle between requests, so every
// request woke sysmon again: a profile at 2000 req/s gave sysmon a quarter of the
// sidecar's CPU (bench/proxy's BENCHMARKS.md section on issue 14). The sockets are
// non-blocking (the net package made them so), so a read or write never blocks: it
// returns EAGAIN and we park on the netpoller, as net.Conn would. Deadlines, Close and
// the netpoller's wake-ups are net.Conn's own, through syscall.RawConn.
type rawIO struct {
	c  net.Conn
	rc syscall.RawConn
	// The read and the write in progress (one of each may run at once, as on a
	// net.Conn), for their closures, made once per connection so that a read or write
	// allocates nothing.
	rd, wr rawOp
}

type rawOp struct {
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// newRawIO returns the raw reader and writer of c, or c itself when it is not a socket
// of the net package (a TLS connection, a test's pipe).
func newRawIO(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawIO{c: c, rc: rc}
	r.rd.fn = r.rd.read
	r.wr.fn = r.wr.write
	return r
}

// read is one read(2) of fd into r.p; false means try again once readable.
func (r *rawOp) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch e {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.n, r.errno = 0, e
			return true
		}
	}
}

// write is one write(2) of r.p[r.n:] to fd; false means try again once writable.
func (r *rawOp) write(fd uintptr) bool {
	for {
		p := r.p[r.n:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			r.n += int(n)
			if r.n < len(r.p) {
				continue
			}
			r.errno = 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.errno = e
			return true
		}
	}
}

func (r *rawIO) Read(p []byte) (int, error) {
	n, err := r.do(&r.rd, r.rc.Read, "read", p)
	if err == nil && n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, err
}

func (r *rawIO) Write(p []byte) (int, error) {
	return r.do(&r.wr, r.rc.Write, "write", p)
}

// do runs op on p through wait (the RawConn's Read or Write, which calls op.fn until it
// is done, parking on the netpoller in between) and returns what op did.
func (r *rawIO) do(op *rawOp, wait func(func(uintptr) bool) error, name string, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	op.p, op.n = p, 0
	err := wait(op.fn)
	n, errno := op.n, op.errno
	op.p = nil
	// n is what a write wrote before it failed; a read that failed read nothing.
	if err != nil {
		return n, r.opError(name, err)
	}
	if errno != 0 {
		return n, r.opError(name, os.NewSyscallError(name, errno))
	}
	return n, nil
}

// opError makes err read as net.Conn's own errors do ("read tcp a->b: ..."), for logs
// and for the checks that look at them.
func (r *rawIO) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: r.c.LocalAddr().Network(), Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: err}
}
