package flags

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/ops"
)

// Where API-managed flags live in the store: entries of one map of one reserved context,
// so that they replicate like any other context (SPEC §6).
const (
	Context = "ctxprop.flags" // the context
	Map     = "flags"         // its map: flag key → flagd definition (JSON)
)

// Writer stores the API-managed flags. Its methods must be safe for concurrent use and
// block until the write is as durable as asked (Flags asks ctxstore.Durable) or ctx ends.
type Writer interface {
	Apply(ctx context.Context, name string, list []ops.Op, d ctxstore.Durability) (ctxstore.Result, error)
	SetTTL(ctx context.Context, name string, ttl time.Duration, fixed bool) error
}

// Reader follows the API-managed flags. Its methods must be safe for concurrent use. Map
// must not block on disk. Watch must report local and replicated changes alike, and close
// the subscription's channel when the store closes (a ctxstore.ErrClosed to a later Watch)
// or ctx ends.
type Reader interface {
	Map(name, m string) (map[string]json.RawMessage, error)
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
}

// Store is what Options.Store must do; *localstore.Store is one, wired in cmd/sidecar.
type Store interface {
	Writer
	Reader
}

// Options configure Flags. Zero fields take the defaults named next to them.
type Options struct {
	// Store holds the API-managed flags. Nil means none: the files alone serve, and PUT and
	// DELETE /v1/flags/{key} answer 503.
	Store Store
	// Files are flagd flag files (config flags.files), reloaded when they change. A later
	// file's flag overrides an earlier file's flag of the same key; a flag set through the
	// API overrides both. Relative paths are read from the working directory.
	Files []string
	// PollInterval is how often the files are checked for changes; 0 means 2s.
	PollInterval time.Duration

	// Pinned names the flags evaluated at the edge of a request chain and pinned in
	// baggage (config flags.pinned; SPEC §6). Empty means Pin pins nothing.
	Pinned []string
	// TargetingKeyHeader names the request header whose value is the targetingKey of the
	// evaluation context Pin builds (e.g. "X-User-Id"); empty means none.
	TargetingKeyHeader string
	// ContextHeaders maps evaluation-context attributes to the request headers they are
	// read from (e.g. "plan" → "X-Plan"); nil means none.
	ContextHeaders map[string]string
	// ContextBaggage maps evaluation-context attributes to the baggage members they are read
	// from (e.g. "tenant" → "tenant.id"); nil means none.
	ContextBaggage map[string]string

	// MaxBodyBytes bounds a request body on the flag routes; 0 means 1 MiB.
	MaxBodyBytes int64
	// KeepAlive is the interval of the comments that keep an event stream open; 0 means 15s.
	KeepAlive time.Duration
	// Logger; nil discards.
	Logger hclog.Logger
	// Now returns wall time; nil means time.Now. Tests use a fake clock.
	Now func() time.Time
}

// Problem is a definition that was refused; the last good one, if any, keeps serving.
type Problem struct {
	Source  string `json:"source"`         // "api" or "file:<path>"
	Flag    string `json:"flag,omitempty"` // "" when the whole file was refused
	Message string `json:"message"`
}

// Flags serves feature flags: it merges the flag files and the API-managed flags into one
// configuration, evaluates it (Evaluate, OFREP), pins flags at the edge of request chains
// (Pin) and manages the API-managed ones (Register). Create it with New, then Open; Close
// stops it. Its methods are safe for concurrent use.
type Flags struct {
	opt Options
	log hclog.Logger

	mu       sync.Mutex // guards the layers below and serialises rebuild
	files    map[string]*fileState
	api      map[string]*Flag
	apiRaw   map[string]string // the stored JSON each api flag was parsed from
	apiProbs map[string]error
	snap     atomic.Pointer[snapshot]

	ttlCleared atomic.Bool
	counters   counters

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	openMu    sync.Mutex
	opened    bool
	closeOnce sync.Once
}

// fileState is what was last read from one flag file.
type fileState struct {
	modTime  time.Time
	size     int64
	sum      [32]byte
	read     bool
	flags    map[flagID]*Flag // the last good definitions
	meta     map[string]any   // the last good file's metadata (flag set metadata)
	err      error            // why the file itself was refused, if it was
	problems map[string]error // flags of the file that were refused, by key
}

// snapshot is one merged configuration. It is never modified once published.
type snapshot struct {
	flags   map[string]*Flag // by key, the definition serving without a selector
	keys    []string         // sorted
	digest  string           // covers every definition, its source, flag set and metadata
	version uint64
	built   time.Time
	changed chan struct{} // closed when a newer snapshot replaces this one

	// all is every definition serving, in every flag set, from every source, sorted by
	// key (Flagd-Selector chooses among them; see flagsets.go).
	all []ranked
	// setMeta is each file's own metadata (flagd's flag set metadata), by source.
	setMeta map[string]map[string]any
}

// New returns Flags for opt. It reads nothing and starts nothing: call Open.
func New(opt Options) *Flags {
	if opt.PollInterval <= 0 {
		opt.PollInterval = 2 * time.Second
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 1 << 20
	}
	if opt.KeepAlive <= 0 {
		opt.KeepAlive = 15 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	f := &Flags{
		opt:      opt,
		log:      opt.Logger,
		files:    map[string]*fileState{},
		api:      map[string]*Flag{},
		apiRaw:   map[string]string{},
		apiProbs: map[string]error{},
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	// Event IDs start from the wall clock, so an ID from before a restart is older than
	// every ID after it and a reconnecting watcher is told to refetch.
	f.snap.Store(&snapshot{flags: map[string]*Flag{}, version: uint64(opt.Now().UnixMicro()), built: opt.Now(), changed: make(chan struct{}), digest: digestOf(nil, nil)})
	return f
}

// Open reads the flag files and the API-managed flags and starts following both. A file
// that cannot be read or is not a flag file fails Open (fix it or the config); a single
// invalid flag is logged and left out.
func (f *Flags) Open() error {
	f.openMu.Lock()
	defer f.openMu.Unlock()
	if f.opened {
		return errors.New("flags: Open called twice")
	}
	if err := checkPinned(f.opt.Pinned); err != nil {
		return err
	}
	f.mu.Lock()
	for _, path := range f.opt.Files {
		st := &fileState{}
		f.files[path] = st
		if err := f.reloadFile(path, st); err != nil {
			f.mu.Unlock()
			return err
		}
	}
	f.rebuild()
	f.mu.Unlock()

	var sub ctxstore.Subscription
	if f.opt.Store != nil {
		var err error
		// Subscribe before reading, so no change falls between the read and the watch.
		if sub, err = f.opt.Store.Watch(f.ctx, Context, 0); err != nil {
			return fmt.Errorf("flags: watch context %s: %w", Context, err)
		}
		if err := f.loadAPI(); err != nil {
			sub.Close()
			return fmt.Errorf("flags: read context %s: %w", Context, err)
		}
	}
	f.opened = true
	if len(f.opt.Files) > 0 {
		f.wg.Add(1)
		go f.pollFiles()
	}
	if sub != nil {
		f.wg.Add(1)
		go f.followStore(sub)
	}
	return nil
}

// Close stops following files and the store and ends the event streams. Close it before
// the admin server, whose Shutdown waits for open streams. Safe to call twice.
func (f *Flags) Close() error {
	f.closeOnce.Do(func() {
		f.cancel()
		f.wg.Wait()
	})
	return nil
}

// Flag returns the flag serving under key, or nil.
func (f *Flags) Flag(key string) *Flag { return f.snap.Load().flags[key] }

// Keys returns the keys of every flag serving, sorted.
func (f *Flags) Keys() []string { return slices.Clone(f.snap.Load().keys) }

// Problems returns the definitions refused since they were last changed, sorted by source
// and flag.
func (f *Flags) Problems() []Problem {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Problem
	for _, path := range f.opt.Files {
		st := f.files[path]
		if st == nil {
			continue
		}
		if st.err != nil {
			out = append(out, Problem{Source: "file:" + path, Message: st.err.Error()})
		}
		for _, k := range sortedKeys(st.problems) {
			out = append(out, Problem{Source: "file:" + path, Flag: k, Message: st.problems[k].Error()})
		}
	}
	for _, k := range sortedKeys(f.apiProbs) {
		out = append(out, Problem{Source: SourceAPI, Flag: k, Message: f.apiProbs[k].Error()})
	}
	return out
}

// Evaluate evaluates the flag key for the evaluation context ectx; see Flag.Evaluate. An
// unknown key gives FLAG_NOT_FOUND. The Result's Value must not be modified.
func (f *Flags) Evaluate(key string, ectx map[string]any) Result {
	fl := f.Flag(key)
	if fl == nil {
		return failure(key, CodeFlagNotFound, "no flag %q; define it in a flag file or with PUT /v1/flags/{key}", key)
	}
	return fl.Evaluate(ectx, f.opt.Now())
}

// pollFiles reloads the files that changed, every PollInterval.
func (f *Flags) pollFiles() {
	defer f.wg.Done()
	t := time.NewTicker(f.opt.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		for _, path := range f.opt.Files {
			if err := f.reloadFile(path, f.files[path]); err != nil {
				f.log.Error("flag file refused; its last good flags keep serving", "path", path, "error", err)
			}
		}
		f.rebuild()
		f.mu.Unlock()
	}
}

// reloadFile rereads path into st when its size, time or content changed. It returns the
// error that refused the whole file; st keeps its last good flags then. Called with f.mu.
func (f *Flags) reloadFile(path string, st *fileState) error {
	source := "file:" + path
	fi, err := os.Stat(path)
	if err != nil {
		if st.read && st.err != nil && errors.Is(err, os.ErrNotExist) {
			return nil // already reported
		}
		st.err = fmt.Errorf("flag file %s: %w; fix flags.files or restore the file", path, err)
		return st.err
	}
	if st.read && fi.ModTime().Equal(st.modTime) && fi.Size() == st.size {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		st.err = fmt.Errorf("flag file %s: %w", path, err)
		return st.err
	}
	sum := sha256.Sum256(data)
	st.modTime, st.size = fi.ModTime(), fi.Size()
	if st.read && sum == st.sum {
		return nil
	}
	st.read, st.sum = true, sum
	ff, err := parseFile(source, data)
	if err != nil {
		// The flag problems were about the previous content, no longer current.
		st.err, st.problems = err, nil
		return err
	}
	st.err = nil
	for key, perr := range ff.problems {
		// The last good definitions of the key keep serving, in every flag set the new
		// content does not define anew.
		for id, old := range st.flags {
			if _, ok := ff.flags[id]; id.key == key && !ok {
				ff.flags[id] = old
			}
		}
		f.log.Error("flag definition refused", "source", source, "flag", key, "error", perr)
	}
	st.flags, st.problems, st.meta = ff.flags, ff.problems, ff.meta
	f.log.Info("flag file loaded", "path", path, "flags", len(ff.flags), "refused", len(ff.problems))
	return nil
}

// followStore reloads the API-managed flags on every change of the flags context, local or
// replicated, until Close.
func (f *Flags) followStore(sub ctxstore.Subscription) {
	defer f.wg.Done()
	for {
		for range sub.Events() {
			// Changes come in bursts (a batch of replicated deltas): take them all, then read once.
			for drained := false; !drained; {
				select {
				case _, ok := <-sub.Events():
					drained = !ok
				default:
					drained = true
				}
			}
			if err := f.loadAPI(); err != nil {
				f.log.Error("reading API-managed flags failed", "error", err)
			}
		}
		lagged := sub.Lagged()
		sub.Close()
		if f.ctx.Err() != nil || !lagged {
			return // closed, or the store closed
		}
		var err error
		for {
			if sub, err = f.opt.Store.Watch(f.ctx, Context, 0); err == nil {
				break
			}
			if errors.Is(err, ctxstore.ErrClosed) {
				return
			}
			f.log.Error("watching API-managed flags failed; retrying", "error", err)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		if err := f.loadAPI(); err != nil {
			f.log.Error("reading API-managed flags failed", "error", err)
		}
	}
}

// loadAPI rereads the API-managed flags from the store and publishes the result.
func (f *Flags) loadAPI() error {
	entries, err := f.opt.Store.Map(Context, Map)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	next := make(map[string]*Flag, len(entries))
	raws := make(map[string]string, len(entries))
	probs := map[string]error{}
	for key, raw := range entries {
		raws[key] = string(raw)
		if old, ok := f.api[key]; ok && f.apiRaw[key] == string(raw) {
			next[key] = old
			if p, ok := f.apiProbs[key]; ok {
				probs[key] = p
			}
			continue
		}
		fl, err := ParseFlag(key, raw)
		if err != nil {
			// PUT refuses invalid definitions, so this one came from a peer with other
			// rules (another version): keep serving the last good one.
			probs[key] = err
			if old, ok := f.api[key]; ok {
				next[key] = old
			}
			f.log.Error("stored flag definition refused; the last good one keeps serving", "flag", key, "error", err)
			continue
		}
		next[key] = fl
	}
	f.api, f.apiRaw, f.apiProbs = next, raws, probs
	f.rebuild()
	return nil
}

// rebuild merges the layers and publishes a new snapshot if the configuration changed.
// Called with f.mu.
func (f *Flags) rebuild() {
	var all []ranked
	setMeta := map[string]map[string]any{}
	for i, path := range f.opt.Files {
		if st := f.files[path]; st != nil {
			for _, fl := range st.flags {
				all = append(all, ranked{fl, i})
			}
			if len(st.meta) > 0 {
				setMeta["file:"+path] = st.meta
			}
		}
	}
	for _, fl := range f.api {
		all = append(all, ranked{fl, len(f.opt.Files)})
	}
	sortRanked(all)
	merged := map[string]*Flag{}
	for _, r := range all {
		merged[r.Key] = r.Flag // sorted: the last of a key wins
	}
	keys := sortedKeys(merged)
	digest := digestOfAll(all)
	old := f.snap.Load()
	if digest == old.digest {
		return
	}
	f.snap.Store(&snapshot{flags: merged, keys: keys, all: all, setMeta: setMeta, digest: digest, version: old.version + 1, built: f.opt.Now(), changed: make(chan struct{})})
	close(old.changed)
	f.counters.changes.Add(1)
}

func digestOf(flags map[string]*Flag, keys []string) string {
	h := sha256.New()
	for _, k := range keys {
		fl := flags[k]
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(fl.Source))
		h.Write([]byte{0})
		h.Write(fl.definition)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// put stores def as the API-managed definition of key, durably, and serves it at once.
func (f *Flags) put(ctx context.Context, key string, fl *Flag) error {
	if err := f.clearTTL(ctx); err != nil {
		return err
	}
	if _, err := f.opt.Store.Apply(ctx, Context, []ops.Op{{Kind: ops.Put, Map: Map, Key: key, Value: fl.definition}}, ctxstore.Durable); err != nil {
		return err
	}
	// The watch would bring the change too; reading now makes the write visible to the
	// caller's next request (read your writes).
	return f.loadAPI()
}

func (f *Flags) del(ctx context.Context, key string) error {
	if _, err := f.opt.Store.Apply(ctx, Context, []ops.Op{{Kind: ops.Del, Map: Map, Key: key}}, ctxstore.Durable); err != nil {
		return err
	}
	return f.loadAPI()
}

// clearTTL removes any expiry of the flags context before this sidecar's first write: a
// store configured with a context TTL (store.context_ttl) gives one to every new context,
// and flags must not expire with it. A later timestamp wins, so one call per process
// suffices even when another replica created the context.
func (f *Flags) clearTTL(ctx context.Context) error {
	if f.ttlCleared.Load() {
		return nil
	}
	if err := f.opt.Store.SetTTL(ctx, Context, 0, false); err != nil {
		return err
	}
	f.ttlCleared.Store(true)
	return nil
}

// checkPinned refuses names that cannot follow "ctx.flag." in a baggage key (a token).
func checkPinned(names []string) error {
	for _, n := range names {
		if n == "" {
			return errors.New("flags.pinned: an empty flag name; remove it")
		}
		for i := 0; i < len(n); i++ {
			if !tokenByte(n[i]) {
				return fmt.Errorf("flags.pinned: %q has %q, which a baggage key cannot hold; pinned flag keys use letters, digits and !#$%%&'*+-.^_`|~", n, n[i])
			}
		}
	}
	return nil
}

func tokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}
