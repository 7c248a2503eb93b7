package localstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/ctxprop/ctxprop/crdt"
)

// The write-ahead log makes a Durable write durable with one small write and one
// fdatasync, where a bbolt commit costs two fsyncs and rewrites every page it touches,
// and lets the bbolt file be brought up to date once per commit window instead of once
// per group of writers (etcd keeps its bbolt backend behind a WAL the same way).
//
// The log is a file of fixed size next to the bbolt file (store.path + "-wal"), zeroed
// when created and then overwritten in place, so an fdatasync flushes data only and never
// the file's size or block map. It opens with a 16-byte header, a magic and the replica
// id of its bbolt file; records follow. After every checkpoint (a bbolt commit of the
// contexts changed since the last one, recording the LSN it covers) writing starts again
// right after the header. A record is
//
//	[4] payload length n, big-endian (0: nothing more was written)
//	[4] CRC-32C of the next 8+n bytes
//	[8] LSN, one more than the record before it
//	[n] payload: uvarint seq, uvarint HLC, uvarint count, then count times
//	    (uvarint len, context name, uvarint len, crdt delta)
//
// Replay reads from the first record while each record is whole, its CRC matches and its LSN is
// the next one after the checkpoint's: a torn last record (a crash during its write, so
// never acknowledged) or records left from before the last checkpoint (smaller LSNs) end
// it. Replaying a record the checkpoint already holds would be harmless too: joins are
// idempotent.

const (
	walHeaderSize = 16 // magic + replica id of the bbolt file the log belongs to
	walRecordHead = 16
	// walSize is the log's fixed size. A checkpoint is due when half of it is used, so
	// at the 100ms default window it holds any realistic rate of small writes.
	walSize = 4 << 20
)

var (
	walMagic   = []byte("ctxpwal1")
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// errLogFull: the record does not fit in what is left of the log; a checkpoint makes
	// the writes durable instead.
	errLogFull = errors.New("write-ahead log full")
)

// wal is the store's write-ahead log. Only the commit loop uses it after Open.
type wal struct {
	f    *os.File
	path string
	size int64
	head []byte // magic and replica id
	off  int64  // where the next record goes
	lsn  uint64 // LSN of the last record written or replayed

	buf, scratch []byte // reused by append
}

// openWAL opens the log at path for the bbolt file whose replica id is replica, creating
// and zeroing it at size bytes if missing. A log of another bbolt file (its database was
// deleted or replaced) is zeroed afresh: its records cannot belong to this file. A log of
// this file keeps its size until its records are replayed and committed (see resize).
func openWAL(path string, size int64, replica crdt.ReplicaID) (w *wal, fresh bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("open write-ahead log: %w", err)
	}
	w = &wal{f: f, path: path, size: size, head: binary.BigEndian.AppendUint64(bytes.Clone(walMagic), uint64(replica))}
	head := make([]byte, walHeaderSize)
	fi, err := f.Stat()
	if err == nil && fi.Size() >= walHeaderSize {
		_, err = f.ReadAt(head, 0)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, false, fmt.Errorf("read write-ahead log %s: %w", path, err)
	}
	if fi != nil && fi.Size() >= walHeaderSize && bytes.Equal(head, w.head) {
		w.size = fi.Size()
	} else {
		if err := w.format(); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("create write-ahead log %s: %w; check free space on its disk", path, err)
		}
		fresh = true
	}
	w.off = walHeaderSize
	return w, fresh, nil
}

// resize gives the log the size wanted, zeroing it, if it has another; only once its
// records are committed to bbolt.
func (w *wal) resize(size int64) error {
	if w.size == size {
		return nil
	}
	w.size = size
	w.off = walHeaderSize
	if err := w.format(); err != nil {
		return fmt.Errorf("resize write-ahead log %s: %w; check free space on its disk", w.path, err)
	}
	return nil
}

// format zeroes the whole log and writes its header, durably (file, then directory).
func (w *wal) format() error {
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < w.size; off += int64(len(zero)) {
		n := min(int64(len(zero)), w.size-off)
		if _, err := w.f.WriteAt(zero[:n], off); err != nil {
			return err
		}
	}
	if _, err := w.f.WriteAt(w.head, 0); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(w.path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// walEntry is one change of a logged group.
type walEntry struct {
	name  string
	delta *crdt.Context
}

// replay calls fn for each entry of the records after LSN after, in order, and returns
// how many records it read. Seq and HLC are the largest any record carried.
func (w *wal) replay(after uint64, fn func(walEntry) error) (records int, seq uint64, hlc crdt.Timestamp, err error) {
	w.lsn = after
	off := int64(walHeaderSize)
	head := make([]byte, walRecordHead)
	for off+walRecordHead <= w.size {
		if _, err := w.f.ReadAt(head, off); err != nil {
			return records, seq, hlc, fmt.Errorf("read write-ahead log %s at %d: %w", w.path, off, err)
		}
		n := int64(binary.BigEndian.Uint32(head[0:4]))
		sum := binary.BigEndian.Uint32(head[4:8])
		lsn := binary.BigEndian.Uint64(head[8:16])
		if n == 0 || lsn != w.lsn+1 || off+walRecordHead+n > w.size {
			break
		}
		payload := make([]byte, n)
		if _, err := w.f.ReadAt(payload, off+walRecordHead); err != nil {
			return records, seq, hlc, fmt.Errorf("read write-ahead log %s at %d: %w", w.path, off, err)
		}
		if crc32.Update(crcOf(head[8:16]), castagnoli, payload) != sum {
			break // torn write: this record was never acknowledged
		}
		s, h, entries, err := decodeWALPayload(payload)
		if err != nil {
			// A whole record with a good CRC that does not decode was written by a
			// different version: refuse rather than drop acknowledged writes.
			return records, seq, hlc, fmt.Errorf("write-ahead log %s: record %d: %w; the log was written by a newer sidecar", w.path, lsn, err)
		}
		for _, e := range entries {
			if err := fn(e); err != nil {
				return records, seq, hlc, err
			}
		}
		seq, hlc = max(seq, s), max(hlc, h)
		w.lsn = lsn
		records++
		off += walRecordHead + n
	}
	w.off = off
	return records, seq, hlc, nil
}

// append writes one record for entries and fdatasyncs it. It returns errLogFull,
// writing nothing, if the record does not fit.
func (w *wal) append(seq uint64, hlc crdt.Timestamp, entries []walEntry) error {
	b := append(w.buf[:0], make([]byte, walRecordHead)...)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(hlc))
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e.name)))
		b = append(b, e.name...)
		var err error
		if w.scratch, err = e.delta.AppendBinary(w.scratch[:0]); err != nil {
			return fmt.Errorf("encode delta of context %q: %w", e.name, err)
		}
		b = binary.AppendUvarint(b, uint64(len(w.scratch)))
		b = append(b, w.scratch...)
	}
	w.buf = b
	if cap(w.buf) > 1<<20 {
		// A rare large group should not pin its buffers; b stays valid for this call.
		w.buf, w.scratch = nil, nil
	}
	n := len(b) - walRecordHead
	if w.off+int64(len(b)) > w.size || uint64(n) > 1<<32-1 {
		return errLogFull
	}
	lsn := w.lsn + 1
	binary.BigEndian.PutUint32(b[0:4], uint32(n))
	binary.BigEndian.PutUint64(b[8:16], lsn)
	binary.BigEndian.PutUint32(b[4:8], crcOf(b[8:]))
	if _, err := w.f.WriteAt(b, w.off); err != nil {
		return fmt.Errorf("write-ahead log %s: %w", w.path, err)
	}
	if err := fdatasync(w.f); err != nil {
		return fmt.Errorf("write-ahead log %s: fdatasync: %w", w.path, err)
	}
	w.off += int64(len(b))
	w.lsn = lsn
	return nil
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// reset starts the log again at its beginning: a checkpoint now holds every record.
func (w *wal) reset() { w.off = walHeaderSize }

// used returns the bytes of records written since the last checkpoint.
func (w *wal) used() int64 { return w.off - walHeaderSize }

func (w *wal) close() error { return w.f.Close() }

func decodeWALPayload(p []byte) (seq uint64, hlc crdt.Timestamp, entries []walEntry, err error) {
	r := walReader{b: p}
	seq = r.uvarint()
	hlc = crdt.Timestamp(r.uvarint())
	count := r.uvarint()
	if r.err == nil && count > uint64(len(p)) {
		r.err = fmt.Errorf("%d entries in %d bytes", count, len(p))
	}
	for i := uint64(0); i < count && r.err == nil; i++ {
		name := string(r.bytes())
		data := r.bytes()
		if r.err != nil {
			break
		}
		d := &crdt.Context{}
		if err := d.UnmarshalBinary(data); err != nil {
			return 0, 0, nil, fmt.Errorf("context %q: %w", name, err)
		}
		entries = append(entries, walEntry{name: name, delta: d})
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes after the last entry", len(r.b))
	}
	return seq, hlc, entries, r.err
}

// walReader reads uvarints and length-prefixed bytes, remembering the first error.
type walReader struct {
	b   []byte
	err error
}

func (r *walReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated or overlong varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *walReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("length %d past the end (%d bytes left)", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
