package flags

import (
	"encoding/binary"
	"math/bits"
)

// murmur3 returns the 32-bit MurmurHash3 (x86_32) of s with seed 0, the hash flagd's
// fractional operator buckets on (flagd uses github.com/twmb/murmur3 StringSum32). It is
// written here rather than imported: it is twenty lines and the bucketing must never move
// with a dependency upgrade, since a changed hash would reassign every user's variant.
func murmur3(s string) uint32 {
	const c1, c2 = 0xcc9e2d51, 0x1b873593
	var h uint32
	n := len(s)
	for len(s) >= 4 {
		k := binary.LittleEndian.Uint32([]byte(s[:4]))
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
		s = s[4:]
	}
	var k uint32
	switch len(s) {
	case 3:
		k ^= uint32(s[2]) << 16
		fallthrough
	case 2:
		k ^= uint32(s[1]) << 8
		fallthrough
	case 1:
		k ^= uint32(s[0])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
	}
	h ^= uint32(n)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
