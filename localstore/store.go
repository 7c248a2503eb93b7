package localstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"
)

// Options configure a Store. Zero fields take the defaults written next to them.
type Options struct {
	// Path of the bbolt file; its directory is created if missing. Required.
	Path string
	// OpenTimeout bounds the wait for the file lock held by another process; 0 means 5s.
	// A stale lock must not hang a restart.
	OpenTimeout time.Duration
	// CommitWindow is the longest a Windowed write waits before it is on disk (in the
	// write-ahead log); 0 means 100ms.
	CommitWindow time.Duration
	// CheckpointInterval is the longest a change stays in the write-ahead log only before
	// the bbolt file takes it; 0 means 10s. The file takes it sooner when the log is half
	// full. Longer means fewer rewrites of large contexts, and a longer log to replay
	// after a crash (at most half the log either way).
	CheckpointInterval time.Duration
	// SweepInterval is how often expired data is reclaimed; 0 means 30s.
	SweepInterval time.Duration
	// TombstoneTTL is how long deletes and expiries are remembered so that late deltas
	// from other replicas cannot bring data back; 0 means 24h.
	TombstoneTTL time.Duration
	// ContextTTL is the TTL given to a context by the write that creates it: one to a
	// context that does not exist, was deleted or has expired (an expired context whose
	// TTL was set keeps that TTL in its new life). 0 means none.
	ContextTTL time.Duration
	// RequestContextTTL is the TTL given to a context that a Windowed write creates (the
	// proxy's request path: telemetry and ctx-ops headers; SPEC §4a: contexts created by
	// requests expire unless written to); 0 means ContextTTL applies as to any other
	// write.
	RequestContextTTL time.Duration
	// FixedTTL stops writes from sliding the TTL that ContextTTL or RequestContextTTL
	// gives.
	FixedTTL bool
	// Limits bound what the store holds; zero fields mean no limit.
	Limits Limits
	// LogSize is the size of the write-ahead log file (store.path + "-wal"); 0 means
	// 4 MiB. A commit to bbolt is made early when half of it is used.
	LogSize int64
	// MaxClockAhead refuses timestamps from peers further ahead of local time; 0 means 1m.
	MaxClockAhead time.Duration
	// CacheContexts bounds the contexts kept decoded in memory, the most recently used;
	// the others are kept in their binary encoding, about a twentieth of the size for a
	// small context, and decoded when used. 0 means 1024.
	CacheContexts int
	// CacheBytes bounds the same contexts by the size of their encodings; 0 means 16 MiB.
	// The context in use is kept however large.
	CacheBytes int
	// Logger; nil discards.
	Logger hclog.Logger
	// Now returns wall time; nil means time.Now. Tests use a fake clock.
	Now func() time.Time
}

func (o Options) logSize() int64 {
	if o.LogSize <= 0 {
		return walSize
	}
	return max(o.LogSize, 4096)
}

// Limits bound the store. Exceeding one is a *LimitError and changes nothing.
type Limits struct {
	// MaxContexts bounds the contexts that hold something: live ones, and expired ones
	// until the sweeper reclaims their data, TombstoneTTL after their expiry (until then
	// a late write from a peer can bring them back, so their data stays in memory, and a
	// bound on memory must count it). The markers deletes leave, which hold only the
	// instant of the delete for the peers to learn (crdt.Context.Marker), never count.
	MaxContexts         int
	MaxValuesPerContext int // counters + map entries + set members of one context
	MaxValueBytes       int // bytes of one map value (JSON)
	MaxSetMembers       int // members of one set
}

// Durability says when a write returns (ctxstore.Durability).
type Durability = ctxstore.Durability

const (
	// Durable writes return after their commit is fsync'd.
	Durable = ctxstore.Durable
	// Windowed writes return at once and are committed within Options.CommitWindow.
	Windowed = ctxstore.Windowed
)

var (
	bucketContexts = []byte("contexts")
	bucketMeta     = []byte("meta")
	keyReplica     = []byte("replica")
	keySeq         = []byte("seq")
	keyHLC         = []byte("hlc")
	keyWALLSN      = []byte("wal-lsn") // the last write-ahead log record a commit holds
)

// Store holds named contexts in memory and in a bbolt file. Its methods are safe for
// concurrent use.
type Store struct {
	opt    Options
	log    hclog.Logger
	db     *bolt.DB
	wal    *wal
	walLSN uint64 // read at load: the last log record the bbolt file holds
	clock  crdt.Clock
	events *eventLog
	// stamp gives each step of a local write this replica and a fresh timestamp; s.mu
	// must be held. Made once in New: a closure made per write cost an allocation each.
	stamp func() crdt.Write

	mu      sync.RWMutex
	replica crdt.ReplicaID
	seq     uint64
	// contexts holds every context, encoded, and the cache the decoded ones (cache.go).
	contexts map[string]slot
	cache    cache
	scratch  []byte // reused by encode
	pending  *batch
	// dirty names the contexts changed since the last commit to bbolt, the first of them
	// at dirtySince (a name no longer in contexts was dropped by the sweeper); until that
	// commit the log holds the Durable changes.
	dirty      map[string]struct{}
	dirtySince time.Time
	// unsettled names the contexts holding folds that changed since the sweeper last
	// settled them (settleFolds): only a change can unsettle a fold, so the sweeper need
	// not decode every context to find the few that need it.
	unsettled map[string]struct{}
	failed    error
	closed    bool
	// retiredAtLoad: a context loaded or replayed at Open says the fleet retired this
	// replica id (see rotateIfRetired).
	retiredAtLoad bool

	stats Stats
	// counted is the number of contexts that are not markers, what Limits.MaxContexts
	// bounds. Every change of a context updates it (see recount), so the check on the
	// request path costs no scan.
	counted int
	// waiting counts the Durable writes not yet committed; peak is its maximum since
	// about the last commit: how many writers a batch can expect (see commitLoop).
	waiting, peak int

	kick      chan struct{}
	retired   chan struct{} // closed when the fleet retired this replica (see ErrRetired)
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// batch is the set of changes not yet durable, and the writers waiting for them.
type batch struct {
	started time.Time
	durable bool
	waiters int // Durable writes waiting for this batch
	events  []Event
	// joined is events coalesced, once logSync made it for the write-ahead log, so that
	// finish publishes it rather than joining the same deltas a second time.
	joined []Event
	done   chan struct{}
	err    error
}

// New returns a Store for opt. It opens nothing: call Open.
func New(opt Options) *Store {
	if opt.OpenTimeout <= 0 {
		opt.OpenTimeout = 5 * time.Second
	}
	if opt.CommitWindow <= 0 {
		opt.CommitWindow = 100 * time.Millisecond
	}
	if opt.CheckpointInterval <= 0 {
		opt.CheckpointInterval = 10 * time.Second
	}
	if opt.SweepInterval <= 0 {
		opt.SweepInterval = 30 * time.Second
	}
	if opt.TombstoneTTL <= 0 {
		opt.TombstoneTTL = 24 * time.Hour
	}
	if opt.MaxClockAhead <= 0 {
		opt.MaxClockAhead = time.Minute
	}
	if opt.CacheContexts <= 0 {
		opt.CacheContexts = defaultCacheContexts
	}
	if opt.CacheBytes <= 0 {
		opt.CacheBytes = defaultCacheBytes
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Store{
		opt:       opt,
		log:       opt.Logger,
		clock:     crdt.Clock{Now: opt.Now},
		events:    newEventLog(eventLogEvents, eventLogBytes),
		contexts:  make(map[string]slot),
		dirty:     make(map[string]struct{}),
		unsettled: make(map[string]struct{}),
		kick:      make(chan struct{}, 1),
		retired:   make(chan struct{}),
	}
	s.stamp = func() crdt.Write { return crdt.Write{Replica: s.replica, At: s.clock.Read()} }
	s.cache.init(opt.CacheContexts, opt.CacheBytes)
	return s
}

// Open opens or creates the file, loads every context, and starts the committer and the
// sweeper. A file that fails to decode is an error naming the context: nothing is
// overwritten.
func (s *Store) Open() error {
	if s.opt.Path == "" {
		return fmt.Errorf("localstore: no path; set store.path in the config")
	}
	if dir := filepath.Dir(s.opt.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("localstore: create directory of store.path: %w", err)
		}
	}
	db, err := bolt.Open(s.opt.Path, 0o600, &bolt.Options{Timeout: s.opt.OpenTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("localstore: %s is locked by another process (waited %s); stop the other sidecar using it or set store.path to another file", s.opt.Path, s.opt.OpenTimeout)
		}
		return fmt.Errorf("localstore: open %s: %w", s.opt.Path, err)
	}
	if err := s.load(db); err != nil {
		return errors.Join(err, db.Close())
	}
	s.db = db
	if err := s.openWAL(); err != nil {
		s.db = nil
		return errors.Join(err, db.Close())
	}
	if err := s.rotateIfRetired(); err != nil {
		s.wal.close()
		s.db = nil
		return errors.Join(err, db.Close())
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.commitLoop()
	go s.sweepLoop()
	s.log.Info("store open", "path", s.opt.Path, "replica", s.replica, "contexts", len(s.contexts), "counted", s.counted, "seq", s.seq)
	return nil
}

// load reads the replica identity, sequence, clock and contexts, creating the identity
// of a new file in the same transaction as its buckets.
func (s *Store) load(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		ctxs, err := tx.CreateBucketIfNotExists(bucketContexts)
		if err != nil {
			return err
		}
		if v := meta.Get(keyReplica); len(v) == 8 {
			s.replica = crdt.ReplicaID(binary.BigEndian.Uint64(v))
		} else {
			s.replica = newReplicaID()
			if err := meta.Put(keyReplica, binary.BigEndian.AppendUint64(nil, uint64(s.replica))); err != nil {
				return err
			}
		}
		if v := meta.Get(keySeq); len(v) == 8 {
			s.seq = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyWALLSN); len(v) == 8 {
			s.walLSN = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyHLC); len(v) == 8 {
			// The clock resumes past anything this replica ever stamped, even if the
			// wall clock went back across the restart.
			_ = s.clock.Observe(crdt.Timestamp(binary.BigEndian.Uint64(v)), 0)
		}
		// Every context is decoded once, to check it and to count it (from here on every
		// change keeps the count, see recount), and kept in its canonical encoding: the
		// bytes v live in bbolt's memory map, and an older sidecar's encoding may differ.
		return ctxs.ForEach(func(k, v []byte) error {
			c := &crdt.Context{}
			if err := c.UnmarshalBinary(v); err != nil {
				return fmt.Errorf("localstore: %s: context %q: %w; the file is damaged or from a newer sidecar", s.opt.Path, k, err)
			}
			if !c.Marker() {
				s.counted++
			}
			if c.HasFolds() {
				s.unsettled[string(k)] = struct{}{}
			}
			if c.Retires(s.replica) {
				s.retiredAtLoad = true
			}
			data, due := s.encodeState(c)
			s.contexts[string(k)] = slot{data: data, due: due}
			return nil
		})
	})
}

// walPath is where the write-ahead log of the bbolt file at path lives.
func walPath(path string) string { return path + "-wal" }

// openWAL opens the write-ahead log and replays the records the bbolt file does not hold
// yet, then commits them to it, so a crash right after an acknowledged write loses
// nothing and the log starts empty.
func (s *Store) openWAL() error {
	path := walPath(s.opt.Path)
	w, fresh, err := openWAL(path, s.opt.logSize(), s.replica)
	if err != nil {
		return fmt.Errorf("localstore: %w", err)
	}
	if fresh {
		if s.walLSN > 0 {
			s.log.Warn("write-ahead log was missing or belonged to another file; started a new one (writes acknowledged since the last commit to the bbolt file, at most one commit window, are lost)", "path", path)
		}
		w.lsn = s.walLSN
	} else {
		records, seq, hlc, err := w.replay(s.walLSN, func(e walEntry) error {
			if err := ValidName(e.name); err != nil {
				return fmt.Errorf("localstore: write-ahead log %s: %w", path, err)
			}
			c, ok, err := s.state(e.name)
			if err != nil {
				return err
			}
			name := e.name
			if !ok {
				c = &crdt.Context{}
				name = s.create(name, c)
			}
			counted := ok && !c.Marker()
			c.Join(e.delta)
			s.changed(name)
			s.recount(counted, c)
			s.markDirty(name)
			s.noteFolds(name, c)
			if c.Retires(s.replica) {
				s.retiredAtLoad = true
			}
			return nil
		})
		if err != nil {
			w.close()
			return fmt.Errorf("localstore: %w; move the file aside to start without those writes", err)
		}
		if records > 0 {
			s.seq = max(s.seq, seq)
			_ = s.clock.Observe(hlc, 0)
			s.log.Info("replayed write-ahead log", "path", path, "records", records, "contexts", len(s.dirty))
		}
	}
	s.wal = w
	if len(s.dirty) > 0 {
		s.commit(nil)
		if s.failed != nil {
			w.close()
			return s.failed
		}
	}
	if err := w.resize(s.opt.logSize()); err != nil {
		w.close()
		return fmt.Errorf("localstore: %w", err)
	}
	return nil
}

func newReplicaID() crdt.ReplicaID {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if id := crdt.ReplicaID(binary.BigEndian.Uint64(b[:])); id != 0 {
			return id
		}
	}
}

// Replica returns this store's replica id.
func (s *Store) Replica() crdt.ReplicaID { return s.replica }

// Close commits what is pending, stops the background work and closes the file. It is
// safe to call twice.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if s.cancel != nil {
			s.cancel()
			s.wg.Wait()
		}
		s.events.close()
		if s.wal != nil {
			s.closeErr = s.wal.close()
		}
		if s.db != nil {
			s.closeErr = errors.Join(s.closeErr, s.db.Close())
		}
	})
	return s.closeErr
}

// Ready reports whether the store takes writes.
func (s *Store) Ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.failed != nil:
		return s.failed
	}
	return nil
}

// ValidName checks a context name (SPEC §3; ctxstore.ValidName).
func ValidName(name string) error { return ctxstore.ValidName(name) }

// Result reports what an Apply left behind (ctxstore.Result).
type Result = ctxstore.Result

// Apply applies list to the context name atomically: every op or none. It returns once
// the write is as durable as d says.
func (s *Store) Apply(ctx context.Context, name string, list []ops.Op, d Durability) (Result, error) {
	if err := ValidName(name); err != nil {
		return Result{}, err
	}
	var counters []string
	var members map[string][]string
	for i, op := range list {
		if err := ops.Validate(op); err != nil {
			return Result{}, fmt.Errorf("%w: op %d: %v", ErrInvalid, i+1, err)
		}
		if s.opt.Limits.MaxValueBytes > 0 && len(op.Value) > s.opt.Limits.MaxValueBytes {
			return Result{}, &LimitError{Limit: "max_value_bytes", Max: s.opt.Limits.MaxValueBytes, What: fmt.Sprintf("a value of %d bytes", len(op.Value))}
		}
		switch op.Kind {
		case ops.Incr:
			counters = append(counters, op.Key)
		case ops.Add, ops.Rem:
			if members == nil {
				members = make(map[string][]string)
			}
			members[op.Set] = append(members[op.Set], op.Member)
		}
	}
	var incs []crdt.Inc
	if len(members) == 0 && len(counters) == len(list) {
		incs = make([]crdt.Inc, len(list))
		for i, op := range list {
			incs[i] = crdt.Inc{Key: op.Key, By: op.By, TTL: op.TTL}
		}
	}
	m := func(c *crdt.Context, w func() crdt.Write) (*crdt.Context, error) {
		if err := s.checkLimits(c, list); err != nil {
			return nil, err
		}
		if incs != nil {
			// Counters only, as the proxy's telemetry: one delta for all of them.
			d, err := c.IncrAll(w(), incs)
			if err != nil {
				return nil, fmt.Errorf("%w: context %q: %w", ErrRange, name, err)
			}
			return d, nil
		}
		// Each op must see the ones before it (two adds need two dots), but copying the
		// whole context per write would cost its size on the request path: work on the
		// projection of the entries the ops touch.
		next := c.Project(counters, members)
		delta := &crdt.Context{}
		for i, op := range list {
			var dl *crdt.Context
			switch op.Kind {
			case ops.Incr:
				var err error
				if dl, err = next.IncrAll(w(), []crdt.Inc{{Key: op.Key, By: op.By, TTL: op.TTL}}); err != nil {
					return nil, fmt.Errorf("%w: context %q: op %d: %w", ErrRange, name, i+1, err)
				}
			case ops.Put:
				dl = next.Put(w(), op.Map, op.Key, op.Value, op.TTL)
			case ops.Del:
				dl = next.Del(w(), op.Map, op.Key)
			case ops.Add:
				dl = next.Add(w(), op.Set, op.Member, op.TTL)
			case ops.Rem:
				dl = next.Remove(w(), op.Set, op.Member)
			}
			next.Join(dl)
			delta.Join(dl)
		}
		return delta, nil
	}
	result := func(c *crdt.Context, now crdt.Timestamp) Result {
		var res Result
		for _, k := range counters {
			if res.Counters == nil {
				res.Counters = make(map[string]int64, len(counters))
			}
			res.Counters[k], _ = c.Counter(k, now)
		}
		for set := range members {
			if res.Sets == nil {
				res.Sets = make(map[string][]string, len(members))
			}
			res.Sets[set] = c.SetMembers(set, now)
		}
		return res
	}
	return s.write(ctx, name, d, mayCreate, m, result)
}

// SetTTL sets a context's TTL; zero removes its expiry. With fixed, writes don't slide it.
func (s *Store) SetTTL(ctx context.Context, name string, ttl time.Duration, fixed bool) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("%w: ttl %s is negative; use 0 for no expiry", ErrInvalid, ttl)
	}
	_, err := s.write(ctx, name, Durable, mayCreate, func(c *crdt.Context, w func() crdt.Write) (*crdt.Context, error) {
		return c.SetTTL(w(), ttl, fixed), nil
	}, nil)
	return err
}

// Delete deletes a context on every replica: everything written to it before now is gone.
// A context that is not alive here (never written, deleted or expired) is an error
// wrapping ErrNotFound, and nothing is stored: a delete marker for a name that never
// existed would only take room (issue 10).
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	_, err := s.write(ctx, name, Durable, mustExist, func(c *crdt.Context, w func() crdt.Write) (*crdt.Context, error) {
		return c.Clear(w()), nil
	}, nil)
	return err
}

// Merge joins a delta received from another replica into context name, durably.
func (s *Store) Merge(ctx context.Context, name string, delta *crdt.Context, origin crdt.ReplicaID) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return s.merge(ctx, name, delta, origin)
}

// mutation computes the delta of a write against the current state c (which it must not
// modify); w stamps each step with this replica and a fresh timestamp. It runs under the
// store's lock.
type mutation func(c *crdt.Context, w func() crdt.Write) (*crdt.Context, error)

// Whether a write may create the context it names.
const (
	mayCreate = false
	mustExist = true
)

// write applies m to context name and, if result is not nil, reads the Result from the
// state that includes it, before any other write. With mustExist, a context that is not
// alive is ErrNotFound and nothing is stored.
func (s *Store) write(ctx context.Context, name string, d Durability, existing bool, m mutation, result func(*crdt.Context, crdt.Timestamp) Result) (Result, error) {
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.mu.Unlock()
		return Result{}, err
	}
	c, exists, err := s.state(name)
	if err != nil {
		s.mu.Unlock()
		return Result{}, err
	}
	now := s.now()
	alive := exists && c.Alive(now)
	if existing && !alive {
		s.mu.Unlock()
		return Result{}, fmt.Errorf("%w: context %q: no such context exists here (never written, already deleted, or expired); nothing was stored", ErrNotFound, name)
	}
	if c == nil {
		c = &crdt.Context{}
	}
	// A live context is never a marker: the scan of Marker is left for the others.
	counted := alive || (exists && !c.Marker())
	stamp := s.stamp
	base := c
	var first *crdt.Context
	if ttl := s.creationTTL(c, alive, now, d); ttl > 0 {
		first = c.SetTTL(stamp(), ttl, s.opt.FixedTTL)
		base = c.Clone() // only once in a context's life
		base.Join(first)
	}
	delta, err := m(base, stamp)
	if err != nil {
		s.mu.Unlock()
		return Result{}, err
	}
	if first != nil {
		first.Join(delta)
		delta = first
	}
	// Only a write that makes a context hold something can pass the limit: expired
	// contexts count until swept and markers never do (see Limits.MaxContexts).
	if lim := s.opt.Limits.MaxContexts; lim > 0 && !counted && s.counted >= lim && !delta.Marker() {
		s.mu.Unlock()
		return Result{}, &LimitError{Limit: "max_contexts", Max: lim, What: fmt.Sprintf("creating context %q", name)}
	}
	touched := c.Touches(delta)
	c.Join(delta)
	// The store's copy of the name, not the caller's: the dirty set and the event keep it.
	if exists {
		name = s.changed(name)
	} else {
		name = s.create(name, c)
	}
	s.recount(counted, c)
	var res Result
	if result != nil {
		res = result(c, now)
	}
	s.seq++
	b := s.enqueue(Event{Context: name, Origin: s.replica, Delta: delta, Touched: touched}, d)
	s.mu.Unlock()
	return res, s.wait(ctx, b, d)
}

// creationTTL returns the TTL a write of durability d gives context c, alive or not at
// now: ContextTTL, or RequestContextTTL for a Windowed write, if the write creates the
// context, and 0 if not. A write creates a context that does not exist, was deleted or
// has expired, except that
//   - an expired context whose TTL was set keeps that TTL in its new life (crdt: the TTL
//     setting survives an expiry), and
//   - a context whose TTL was set to none in its current life (PUT .../ttl "0", before
//     anything was written to it) keeps none: that is how an operator keeps a context
//     the request path would otherwise create with a TTL.
//
// A context created through the admin API with no TTL and written to by the proxy later
// is alive, so it never gains the request path's TTL.
func (s *Store) creationTTL(c *crdt.Context, alive bool, now crdt.Timestamp, d Durability) time.Duration {
	ttl := s.opt.ContextTTL
	if d == Windowed && s.opt.RequestContextTTL > 0 {
		ttl = s.opt.RequestContextTTL
	}
	if ttl <= 0 || alive {
		return 0
	}
	if exp := c.Expires(); exp != 0 && now >= exp {
		if c.Meta.TTL > 0 {
			return 0
		}
		return ttl
	}
	if c.Meta.TS > c.Cleared {
		return 0
	}
	return ttl
}

// recount updates the count of contexts that are not markers after a change of c, which
// counted before it; s.mu must be held.
func (s *Store) recount(counted bool, c *crdt.Context) {
	switch now := !c.Marker(); {
	case now && !counted:
		s.counted++
	case !now && counted:
		s.counted--
	}
}

func (s *Store) merge(ctx context.Context, name string, delta *crdt.Context, origin crdt.ReplicaID) error {
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.mu.Unlock()
		return err
	}
	if err := s.observeClock(delta); err != nil {
		s.mu.Unlock()
		return err
	}
	retired := s.retiredBy(delta)
	c, ok, err := s.state(name)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if !ok {
		c = &crdt.Context{}
	}
	counted := ok && !c.Marker()
	touched := c.Touches(delta)
	c.Join(delta)
	if ok {
		name = s.changed(name)
	} else {
		name = s.create(name, c)
	}
	s.recount(counted, c)
	s.noteFolds(name, c)
	b := s.enqueue(Event{Context: name, Origin: origin, Delta: delta, Touched: touched}, Durable)
	s.mu.Unlock()
	if err := s.wait(ctx, b, Durable); err != nil {
		return err
	}
	if retired {
		s.stopRetired()
		return s.Ready()
	}
	return nil
}

// observeClock moves the local clock past the newest timestamp a peer's delta carries.
func (s *Store) observeClock(delta *crdt.Context) error {
	latest := delta.Meta.TS
	latest = max(latest, delta.Cleared)
	for _, m := range delta.Maps {
		for _, r := range m {
			latest = max(latest, r.TS)
		}
	}
	for _, set := range delta.Sets {
		for _, dots := range set {
			for _, b := range dots {
				latest = max(latest, b.TS)
			}
		}
	}
	if err := s.clock.Observe(latest, s.opt.MaxClockAhead); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func (s *Store) writable() error {
	switch {
	case s.closed:
		return ErrClosed
	case s.failed != nil:
		return s.failed
	case s.db == nil:
		return fmt.Errorf("%w: store not open", ErrClosed)
	}
	return nil
}

// enqueue adds a change to the pending batch; s.mu must be held.
func (s *Store) enqueue(e Event, d Durability) *batch {
	b := s.pending
	if b == nil {
		b = &batch{started: time.Now(), done: make(chan struct{})}
		s.pending = b
	}
	s.markDirty(e.Context)
	if d == Durable {
		b.durable = true
		b.waiters++
		s.waiting++
		s.peak = max(s.peak, s.waiting)
	}
	b.events = append(b.events, e)
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return b
}

// markDirty records that context name must be written at the next commit; s.mu must be
// held (or the store not yet open).
func (s *Store) markDirty(name string) {
	if len(s.dirty) == 0 {
		s.dirtySince = time.Now()
	}
	s.dirty[name] = struct{}{}
}

func (s *Store) wait(ctx context.Context, b *batch, d Durability) error {
	if d == Windowed {
		return nil
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		// The write stays applied and will be committed; only the caller stopped waiting.
		return ctx.Err()
	}
}

// Sync returns once every write taken before it is durable, or when ctx ends (the writes
// stay queued and are committed all the same). A batch of Windowed writes still waiting
// for the rest of its CommitWindow is logged at once: the proxy calls Sync after writing
// a window's telemetry it summed in memory, so that the sum is as durable as the
// Windowed writes of each request were (issue 14).
func (s *Store) Sync(ctx context.Context) error {
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.mu.Unlock()
		return err
	}
	b := s.pending
	if b == nil {
		// A batch the commit loop is logging now was taken before this one, and the
		// loop logs batches in order: when this empty one is done, so is that one.
		b = &batch{started: time.Now(), done: make(chan struct{})}
		s.pending = b
	}
	// Not counted in s.waiting and s.peak: a Sync is no writer expected back soon,
	// whose write a durable batch should wait a moment for.
	b.durable = true
	select {
	case s.kick <- struct{}{}:
	default:
	}
	s.mu.Unlock()
	return s.wait(ctx, b, Durable)
}

// checkLimits refuses list if applying it to c would pass a limit. Only ops that create an
// entry can, so the hot path of updating existing entries costs no count.
func (s *Store) checkLimits(c *crdt.Context, list []ops.Op) error {
	l := s.opt.Limits
	if l.MaxSetMembers <= 0 && l.MaxValuesPerContext <= 0 {
		return nil
	}
	now := s.now()
	newValues := map[string]struct{}{}
	newMembers := map[string]map[string]struct{}{}
	for _, op := range list {
		switch op.Kind {
		case ops.Incr:
			if _, ok := c.Counter(op.Key, now); !ok {
				newValues["c\x00"+op.Key] = struct{}{}
			}
		case ops.Put:
			if _, ok := c.MapGet(op.Map, op.Key, now); !ok {
				newValues["m\x00"+op.Map+"\x00"+op.Key] = struct{}{}
			}
		case ops.Add:
			if !slices.Contains(c.SetMembers(op.Set, now), op.Member) {
				newValues["s\x00"+op.Set+"\x00"+op.Member] = struct{}{}
				if newMembers[op.Set] == nil {
					newMembers[op.Set] = map[string]struct{}{}
				}
				newMembers[op.Set][op.Member] = struct{}{}
			}
		}
	}
	if l.MaxSetMembers > 0 {
		for set, added := range newMembers {
			if n := len(c.SetMembers(set, now)) + len(added); n > l.MaxSetMembers {
				return &LimitError{Limit: "max_set_members", Max: l.MaxSetMembers, What: fmt.Sprintf("set %q with %d members", set, n)}
			}
		}
	}
	if l.MaxValuesPerContext > 0 && len(newValues) > 0 {
		if n := countValues(c, now) + len(newValues); n > l.MaxValuesPerContext {
			return &LimitError{Limit: "max_values_per_context", Max: l.MaxValuesPerContext, What: fmt.Sprintf("%d values in the context", n)}
		}
	}
	return nil
}

func countValues(c *crdt.Context, now crdt.Timestamp) int {
	n := len(c.CounterKeys(now))
	for _, m := range c.MapNames(now) {
		n += len(c.MapEntries(m, now))
	}
	for _, set := range c.SetNames(now) {
		n += len(c.SetMembers(set, now))
	}
	return n
}

func (s *Store) now() crdt.Timestamp { return crdt.TimestampOf(s.opt.Now()) }

// commitLoop is the single writer. A batch with a Durable write in it goes to the
// write-ahead log at once (one fdatasync for the whole group), a batch of Windowed writes
// within CommitWindow of its first; the contexts changed are committed to bbolt within
// CheckpointInterval of their first change, or sooner when the log is half full. While
// one fdatasync runs, new writes gather in the next batch, so a busy store makes many
// writes durable per fsync.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.commit(nil)
			return
		case <-s.kick:
		case <-timer.C:
		}
		// Real time, not Options.Now: the waits are about fsync pacing, not data.
		var wait time.Duration
		if next := s.logWait(); next > 0 {
			wait = next
		} else if next == 0 {
			s.logSync()
		}
		s.mu.RLock()
		dirty, since := len(s.dirty) > 0, s.dirtySince
		s.mu.RUnlock()
		if dirty {
			left := s.opt.CheckpointInterval - time.Since(since)
			if left <= 0 || s.wal.used() >= s.opt.logSize()/2 {
				s.commit(nil)
			} else if wait == 0 || left < wait {
				wait = left
			}
		}
		if wait > 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
	}
}

// logWait says what to do with the pending batch: a negative result means there is none,
// zero means log it now, and a positive one how long to wait first: for the rest of the
// window of a batch of Windowed writes, or for the writers expected to join a batch with
// a Durable write in it.
func (s *Store) logWait() time.Duration {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.pending
	if b == nil {
		return -1
	}
	if !b.durable {
		return max(0, s.opt.CommitWindow-time.Since(b.started))
	}
	if b.waiters < s.peak {
		// More writers were waiting at once lately than wait now: the others are on
		// their way back with their next write (their answers left with the last sync).
		// Gathering them for a moment costs less than an fsync each (like PostgreSQL's
		// commit_delay, or bbolt's MaxBatchDelay), and a lone writer never waits.
		if wait := gatherDelay - time.Since(b.started); wait > 0 {
			return wait
		}
	}
	return 0
}

// gatherDelay bounds how long a durable batch waits for the writers expected to join it
// (bbolt's DB.Batch waits up to MaxBatchDelay, 10ms by default, for the same reason).
// With 2 ms, 16 clients gather 14.7 writes per sync on this project's machine; 1 ms cut
// the groups short (bench/store).
const gatherDelay = 2 * time.Millisecond

// logSync makes the pending batch durable in the write-ahead log, or by a commit to
// bbolt if the log has no room for it.
func (s *Store) logSync() {
	s.mu.Lock()
	b := s.pending
	if b == nil {
		s.mu.Unlock()
		return
	}
	if s.failed != nil {
		s.pending = nil
		s.mu.Unlock()
		s.finish(b, s.failed, b.waiters)
		return
	}
	s.pending = nil
	if len(b.events) == 0 {
		// A Sync's own batch: the batches before it are logged already.
		s.mu.Unlock()
		s.finish(b, nil, b.waiters)
		return
	}
	// The deltas are immutable once enqueued, so they are joined and encoded outside the
	// lock.
	seq, hlc := s.seq, s.clock.Last()
	s.mu.Unlock()
	// The events joined per context and origin, as watchers get them, are joined per
	// context for the log: with one origin per context, the usual case, the log's entries
	// are the events' deltas and no delta is joined twice.
	b.joined = coalesce(b.events)
	entries := logEntries(b.joined)
	start := time.Now()
	err := s.wal.append(seq, hlc, entries)
	if errors.Is(err, errLogFull) {
		// The contexts are dirty already: committing them makes this batch durable.
		s.commit(b)
		return
	}
	if err != nil {
		err = s.fail(err)
	}
	s.mu.Lock()
	s.stats.LogSyncs++
	s.stats.CommitTime += time.Since(start)
	s.mu.Unlock()
	s.finish(b, err, b.waiters)
}

// logEntries joins the deltas of each context in events (coalesced or not) into one, in
// the order the contexts first appear: a window of request-path writes to one context (telemetry on
// every request) is one entry, not one per request. A join of deltas is a delta of the
// same writes, so replaying it is replaying them.
func logEntries(events []Event) []walEntry {
	entries := make([]walEntry, 0, 1)
	owned := make([]bool, 0, 1)
	at := make(map[string]int, 1)
	for _, e := range events {
		i, seen := at[e.Context]
		if !seen {
			at[e.Context] = len(entries)
			entries = append(entries, walEntry{name: e.Context, delta: e.Delta})
			owned = append(owned, false)
			continue
		}
		if !owned[i] {
			// The event's delta is shared with its watchers: join into a copy.
			entries[i].delta, owned[i] = entries[i].delta.Clone(), true
		}
		entries[i].delta.Join(e.Delta)
	}
	return entries
}

// finish acknowledges a batch's writers and publishes its events; waited is how many of
// them s.waiting counted.
func (s *Store) finish(b *batch, err error, waited int) {
	s.mu.Lock()
	s.waiting -= waited
	// Forget one writer per sync, so a smaller load soon stops waiting for the absent.
	s.peak = max(s.waiting, s.peak-1)
	if err == nil {
		s.stats.Changes += uint64(len(b.events))
	}
	s.mu.Unlock()
	b.err = err
	// Events first: a write that returned is counted by LastEventID (a syncer's or
	// relay's Close waits up to it) and is not new to a watcher subscribed after it.
	if err == nil {
		joined := b.joined
		if joined == nil {
			joined = coalesce(b.events)
		}
		s.events.publish(joined, s.opt.Now())
	}
	close(b.done)
}

// fail records a failed write to disk: the store refuses writes from now on, as its
// memory may hold what the disk does not.
func (s *Store) fail(err error) error {
	err = fmt.Errorf("%w: %v; check the disk holding %s and restart the sidecar", ErrFailed, err, s.opt.Path)
	s.log.Error("commit failed; refusing further writes", "error", err)
	s.mu.Lock()
	s.failed = err
	s.stats.Failures++
	s.mu.Unlock()
	return err
}

// commit writes every context changed since the last commit to bbolt in one transaction,
// with the sequence, the clock and the last log record it covers, then starts the log
// afresh. Everything pending becomes durable with it, and so does held, a batch the
// caller took from pending before.
func (s *Store) commit(held *batch) {
	s.mu.Lock()
	b := s.pending
	s.pending = nil
	done := func(err error) {
		for _, b := range []*batch{held, b} {
			if b != nil {
				s.finish(b, err, b.waiters)
			}
		}
	}
	if s.failed != nil {
		s.mu.Unlock()
		done(s.failed)
		return
	}
	if len(s.dirty) == 0 {
		s.mu.Unlock()
		done(nil)
		return
	}
	type record struct {
		name, data string
		held       bool // false: dropped by the sweeper; the record is deleted
	}
	recs := make([]record, 0, len(s.dirty))
	for name := range s.dirty {
		// Strings: the encodings may be read after the lock is released.
		data, held := s.encoded(name)
		recs = append(recs, record{name, data, held})
	}
	clear(s.dirty)
	seq, hlc := s.seq, s.clock.Last()
	// Every log record was appended after its change was applied here, so the state just
	// encoded holds all of them.
	lsn := s.wal.lsn
	s.mu.Unlock()

	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		ctxs := tx.Bucket(bucketContexts)
		for _, r := range recs {
			var err error
			if !r.held {
				err = ctxs.Delete([]byte(r.name))
			} else {
				err = ctxs.Put([]byte(r.name), []byte(r.data))
			}
			if err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keySeq, binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return err
		}
		if err := meta.Put(keyWALLSN, binary.BigEndian.AppendUint64(nil, lsn)); err != nil {
			return err
		}
		return meta.Put(keyHLC, binary.BigEndian.AppendUint64(nil, uint64(hlc)))
	})
	if err != nil {
		err = s.fail(err)
	} else {
		s.wal.reset()
	}
	s.mu.Lock()
	s.stats.Commits++
	s.stats.CommitTime += time.Since(start)
	s.mu.Unlock()
	done(err)
}

// sweepLoop reclaims expired data every SweepInterval.
func (s *Store) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opt.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			// Settle first, so that Sweep finds the folds this replica made complete
			// and can prune them once their grace period has passed.
			if _, err := s.settleFolds(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("settling folds of retired replicas failed; retrying at the next sweep", "error", err)
			}
			s.Sweep()
		}
	}
}

// Sweep compacts every context (see crdt.Context.Compact) and drops contexts left with
// nothing to remember. It returns how many contexts it changed. The sweeper calls it;
// it is exported for tests and tools.
//
// The contexts in the cache are compacted in place, under the lock. Of the others, kept
// encoded, only those due (see sweepDue) are decoded and compacted, a batch at a time and
// outside the lock, so that writers never wait for a pass over every context; those that
// changed are put back under the lock, unless a write changed them meanwhile (the next
// sweep takes them then).
func (s *Store) Sweep() int {
	now := s.now()
	horizon := crdt.TimestampOf(s.opt.Now().Add(-s.opt.TombstoneTTL))
	// drop reports whether a compacted context has nothing left to remember.
	drop := func(c *crdt.Context) bool {
		return c.Size() == 0 && !c.Alive(now) && max(c.Cleared, c.Meta.TS) < horizon
	}
	s.mu.Lock()
	if s.writable() != nil {
		s.mu.Unlock()
		return 0
	}
	n := 0
	var cold []string
	for name, sl := range s.contexts {
		if sl.due <= now && s.cache.m[name] == nil {
			cold = append(cold, name)
		}
	}
	for h := s.cache.head.next; h != &s.cache.head; {
		name, c := h.name, h.c
		h = h.next // before remove unlinks it
		counted := !c.Marker()
		changed := c.Compact(now, s.opt.TombstoneTTL)
		if drop(c) {
			s.remove(name)
			if counted {
				s.counted--
			}
			changed = true
		} else if changed {
			s.changed(name)
			s.recount(counted, c)
		}
		if changed {
			n++
			s.markDirty(name)
		}
	}
	s.mu.Unlock()

	type compacted struct {
		name    string
		data    string // the encoding compacted
		c       *crdt.Context
		counted bool // before
	}
	const batch = 256
	for len(cold) > 0 {
		part := cold[:min(batch, len(cold))]
		cold = cold[len(part):]
		var found []compacted
		s.mu.RLock()
		for _, name := range part {
			if sl, ok := s.contexts[name]; ok && s.cache.m[name] == nil {
				found = append(found, compacted{name: name, data: sl.data})
			}
		}
		s.mu.RUnlock()
		changed := found[:0]
		for _, f := range found {
			c, err := decodeState(f.name, f.data)
			if err != nil {
				s.log.Error("sweep: context skipped", "context", f.name, "error", err)
				continue
			}
			f.counted = !c.Marker()
			if c.Compact(now, s.opt.TombstoneTTL) || drop(c) {
				f.c = c
				changed = append(changed, f)
			}
		}
		if len(changed) == 0 {
			continue
		}
		s.mu.Lock()
		if s.writable() != nil {
			s.mu.Unlock()
			break
		}
		for _, f := range changed {
			sl, ok := s.contexts[f.name]
			if !ok || s.cache.m[f.name] != nil || sl.data != f.data {
				continue // changed since it was read
			}
			if drop(f.c) {
				s.remove(f.name)
				if f.counted {
					s.counted--
				}
			} else {
				sl.data, sl.due = s.encodeState(f.c)
				s.contexts[f.name] = sl
				s.recount(f.counted, f.c)
			}
			n++
			s.markDirty(f.name)
		}
		s.mu.Unlock()
	}
	if n > 0 {
		select {
		case s.kick <- struct{}{}:
		default:
		}
		s.log.Debug("swept", "contexts", n)
	}
	return n
}

// Stats counts the store's work since Open.
type Stats struct {
	Commits    uint64        // bbolt transactions committed (two fsyncs each)
	LogSyncs   uint64        // records appended to the write-ahead log (one fdatasync each)
	Changes    uint64        // writes and merges made durable
	Failures   uint64        // commits or log syncs that failed
	CommitTime time.Duration // time spent in commits and log syncs, fsync included
	Contexts   int           // contexts held, expired ones included until swept
	Counted    int           // contexts that count toward Limits.MaxContexts (not markers)
	Seq        uint64        // this replica's sequence number
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.stats
	st.Contexts = len(s.contexts)
	st.Counted = s.counted
	st.Seq = s.seq
	return st
}
