// Command floord is the HTTP floor of bench/store/sidecar.sh: a Go net/http server that
// reads each request and answers {"value":1} at once, storing nothing: what the admin
// API's exchange costs without the store. It prints its address and serves until killed.
//
// With -sync FILE it is the durable floor instead (issue 14): each request also appends
// 16 bytes to FILE (zeroed in advance, as the store's write-ahead log is) and is answered
// once an fdatasync covers them, one fdatasync per group of waiting requests, gathered as
// the store gathers them (up to 2 ms for as many writers as waited at once lately). No
// HTTP API that answers after its write is on disk can beat it on the same disk.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

func main() {
	addrFile := flag.String("addr-file", "", "write the listening address to this file")
	syncFile := flag.String("sync", "", "answer each request once 16 bytes appended to this file are on disk (fdatasync)")
	flag.Parse()
	var g *group
	if *syncFile != "" {
		var err error
		if g, err = openGroup(*syncFile, 64<<20); err != nil {
			log.Fatal(err)
		}
		go g.loop()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if g != nil {
			if err := g.write(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "12")
		w.Write([]byte("{\"value\":1}\n"))
	})))
}

// group is a group commit on a zeroed file: writers wait in the pending batch, and one
// loop writes each batch's records and fdatasyncs them.
type group struct {
	f    *os.File
	size int64
	off  int64
	kick chan struct{}

	mu      sync.Mutex
	pending *batch
	waiting int // writers waiting, in all batches
	peak    int // most writers waiting at once lately
}

type batch struct {
	started time.Time
	n       int
	done    chan struct{}
	err     error
}

// gatherDelay is the store's (localstore.gatherDelay).
const gatherDelay = 2 * time.Millisecond

func openGroup(path string, size int64) (*group, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zero)) {
		if _, err := f.WriteAt(zero, off); err != nil {
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return &group{f: f, size: size, kick: make(chan struct{}, 1)}, nil
}

// write returns once a record of this call is on disk.
func (g *group) write() error {
	g.mu.Lock()
	b := g.pending
	if b == nil {
		b = &batch{started: time.Now(), done: make(chan struct{})}
		g.pending = b
	}
	b.n++
	g.waiting++
	g.peak = max(g.peak, g.waiting)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	<-b.done
	return b.err
}

func (g *group) loop() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-g.kick:
		case <-timer.C:
		}
		g.mu.Lock()
		b := g.pending
		if b == nil {
			g.mu.Unlock()
			continue
		}
		if wait := gatherDelay - time.Since(b.started); b.n < g.peak && wait > 0 {
			g.mu.Unlock()
			timer.Reset(wait)
			continue
		}
		g.pending = nil
		g.mu.Unlock()
		rec := make([]byte, 16*b.n)
		for i := range rec {
			rec[i] = 1
		}
		if g.off+int64(len(rec)) > g.size {
			g.off = 0
		}
		_, err := g.f.WriteAt(rec, g.off)
		if err == nil {
			err = syscall.Fdatasync(int(g.f.Fd()))
		}
		g.off += int64(len(rec))
		g.mu.Lock()
		g.waiting -= b.n
		g.peak = max(g.waiting, g.peak-1)
		g.mu.Unlock()
		b.err = err
		close(b.done)
	}
}
