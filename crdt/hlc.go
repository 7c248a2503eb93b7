package crdt

import (
	"fmt"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading packed in 64 bits: the upper 48 bits are
// Unix milliseconds, the lower 16 a logical counter that orders events within the same
// millisecond. Zero means "never". Expiry instants are Timestamps with a zero logical part.
type Timestamp uint64

const logicalBits = 16

// TimestampOf returns the Timestamp of a wall-clock instant with a zero logical part.
func TimestampOf(t time.Time) Timestamp {
	ms := t.UnixMilli()
	if ms <= 0 {
		return 0
	}
	return Timestamp(uint64(ms) << logicalBits)
}

// Time returns the wall-clock instant of ts, dropping the logical part.
func (ts Timestamp) Time() time.Time {
	return time.UnixMilli(int64(ts >> logicalBits)).UTC()
}

// Add returns ts moved d later (to the millisecond), with a zero logical part.
func (ts Timestamp) Add(d time.Duration) Timestamp {
	return Timestamp((uint64(ts>>logicalBits) + uint64(d.Milliseconds())) << logicalBits)
}

func (ts Timestamp) String() string {
	if ts == 0 {
		return "never"
	}
	return fmt.Sprintf("%s+%d", ts.Time().Format(time.RFC3339Nano), ts&(1<<logicalBits-1))
}

// Clock is a hybrid logical clock (Kulkarni et al.): its readings never go backwards, stay
// close to wall time, and move past every timestamp it has observed. Safe for concurrent
// use. The zero value reads time.Now.
type Clock struct {
	// Now returns wall time; nil means time.Now. Tests set a fake clock here.
	Now func() time.Time

	mu   sync.Mutex
	last Timestamp
}

// Read returns a timestamp later than every one read or observed before.
func (c *Clock) Read() Timestamp {
	phys := TimestampOf(c.wall())
	c.mu.Lock()
	defer c.mu.Unlock()
	if phys > c.last {
		c.last = phys
	} else {
		c.last++
	}
	return c.last
}

// Observe moves the clock past ts, a timestamp seen from another replica or from disk.
// A timestamp more than maxAhead in the future of wall time is refused, so one replica with
// a broken clock cannot drag every other replica's clock with it.
func (c *Clock) Observe(ts Timestamp, maxAhead time.Duration) error {
	if maxAhead > 0 {
		limit := TimestampOf(c.wall()).Add(maxAhead)
		if ts > limit {
			return fmt.Errorf("hlc: timestamp %s is more than %s ahead of this clock; check the clocks (NTP) of the replicas", ts, maxAhead)
		}
	}
	c.mu.Lock()
	if ts > c.last {
		c.last = ts
	}
	c.mu.Unlock()
	return nil
}

// Last returns the latest timestamp read or observed, for persisting it.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *Clock) wall() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
