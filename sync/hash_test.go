package peersync

import (
	"encoding/binary"
	"hash/fnv"
	"testing"
)

// The push-pull's hashes are FNV-1a written out; peers compare them, so they must stay
// exactly hash/fnv's.
func TestPushPullHashes_AreFNV1a(t *testing.T) {
	for _, name := range []string{"", "a", "order-000123", "ümlaut"} {
		h := fnv.New64a()
		h.Write([]byte(name))
		if got, want := bucketOf(name, 4096), int(h.Sum64()&4095); got != want {
			t.Fatalf("bucketOf(%q) = %d, want %d", name, got, want)
		}
		h2 := fnv.New64a()
		h2.Write([]byte(name))
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], 0xdeadbeef12345678)
		h2.Write(b[:])
		if got, want := itemHash(digest{name, 0xdeadbeef12345678}), h2.Sum64(); got != want {
			t.Fatalf("itemHash(%q) = %x, want %x", name, got, want)
		}
	}
}
