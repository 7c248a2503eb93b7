package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/ops"
)

// clientName is the value of HeaderRequestedBy the Client sends.
const clientName = "ctxprop-client"

// Client calls the admin API of one sidecar. It is safe for concurrent use and keeps
// connections open between calls: create one and reuse it.
//
// Every method returns an *Error for an error answer of the API, and another error when
// the call did not get an answer (connection refused, ctx done).
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the API at baseURL, e.g. "http://127.0.0.1:7400" (a
// missing scheme means http). hc nil means a client of its own, with a pool of
// keep-alive connections and no proxy: the admin API is on loopback, and the app's
// HTTP_PROXY (the sidecar's outbound proxy) must not carry it. Watch needs an hc without
// Timeout, as a watch lasts until it is stopped.
func NewClient(baseURL string, hc *http.Client) *Client {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        128,
			MaxIdleConnsPerHost: 128, // benchmarks and load tests call one host concurrently
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// List returns a summary of every live context, sorted by name.
func (c *Client) List(ctx context.Context) ([]ctxstore.Summary, error) {
	var out listAnswer
	err := c.do(ctx, http.MethodGet, "/v1/contexts", "", nil, &out)
	return out.Contexts, err
}

// Get returns the content of a context; an *Error with Status 404 if it is absent.
func (c *Client) Get(ctx context.Context, name string) (ctxstore.Snapshot, error) {
	var out ctxstore.Snapshot
	err := c.do(ctx, http.MethodGet, ctxPath(name), "", nil, &out)
	return out, err
}

// Delete deletes a context on every replica. A context this sidecar does not hold alive
// (never written, deleted or expired) is an *Error with Status 404 (see IsNotFound), and
// nothing was stored.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, ctxPath(name), "", nil, nil)
}

// SetTTL sets a context's time to live; 0 removes its expiry. With fixed, writes do not
// slide it.
func (c *Client) SetTTL(ctx context.Context, name string, ttl time.Duration, fixed bool) error {
	return c.doJSON(ctx, http.MethodPut, ctxPath(name)+"/ttl", map[string]any{"ttl": ttl.String(), "fixed": fixed}, nil)
}

// Counter returns a counter's value, 0 if it was never written.
func (c *Client) Counter(ctx context.Context, name, key string) (int64, error) {
	var out valueAnswer[int64]
	err := c.do(ctx, http.MethodGet, ctxPath(name)+"/counters/"+seg(key), "", nil, &out)
	return out.Value, err
}

// Incr adds by (which may be negative) to a counter and returns its new value. A
// positive ttl sets the counter's expiry to now+ttl if that is later.
func (c *Client) Incr(ctx context.Context, name, key string, by int64, ttl time.Duration) (int64, error) {
	var out valueAnswer[int64]
	err := c.doJSON(ctx, http.MethodPost, ctxPath(name)+"/counters/"+seg(key), incrBody{By: by, TTL: ttlString(ttl)}, &out)
	return out.Value, err
}

type incrBody struct {
	By  int64  `json:"by"`
	TTL string `json:"ttl,omitempty"`
}

// Map returns the live entries of a map; an absent map has none.
func (c *Client) Map(ctx context.Context, name, m string) (map[string]json.RawMessage, error) {
	var out entriesAnswer
	err := c.do(ctx, http.MethodGet, ctxPath(name)+"/maps/"+seg(m), "", nil, &out)
	return out.Entries, err
}

// MapGet returns one map entry's JSON value; an *Error with Status 404 if it is absent.
func (c *Client) MapGet(ctx context.Context, name, m, key string) (json.RawMessage, error) {
	var out valueAnswer[json.RawMessage]
	err := c.do(ctx, http.MethodGet, ctxPath(name)+"/maps/"+seg(m)+"/"+seg(key), "", nil, &out)
	return out.Value, err
}

// Put sets a map entry to a JSON value. A positive ttl makes it expire at now+ttl.
func (c *Client) Put(ctx context.Context, name, m, key string, value json.RawMessage, ttl time.Duration) error {
	return c.doJSON(ctx, http.MethodPut, ctxPath(name)+"/maps/"+seg(m)+"/"+seg(key), putBody{Value: value, TTL: ttlString(ttl)}, nil)
}

type putBody struct {
	Value json.RawMessage `json:"value"`
	TTL   string          `json:"ttl,omitempty"`
}

// Del deletes a map entry.
func (c *Client) Del(ctx context.Context, name, m, key string) error {
	return c.do(ctx, http.MethodDelete, ctxPath(name)+"/maps/"+seg(m)+"/"+seg(key), "", nil, nil)
}

// Set returns the members of a set, sorted; an absent set has none.
func (c *Client) Set(ctx context.Context, name, set string) ([]string, error) {
	var out membersAnswer
	err := c.do(ctx, http.MethodGet, ctxPath(name)+"/sets/"+seg(set), "", nil, &out)
	return out.Members, err
}

// UpdateSet adds and removes members in one atomic write (removals after additions) and
// returns the members. A positive ttl makes the additions expire at now+ttl.
func (c *Client) UpdateSet(ctx context.Context, name, set string, add, remove []string, ttl time.Duration) ([]string, error) {
	var out membersAnswer
	err := c.doJSON(ctx, http.MethodPost, ctxPath(name)+"/sets/"+seg(set), setBody{add, remove, ttlString(ttl)}, &out)
	return out.Members, err
}

type setBody struct {
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
	TTL    string   `json:"ttl,omitempty"`
}

// Ops applies list to a context atomically, sent as the JSON list of ops.ParseJSON.
func (c *Client) Ops(ctx context.Context, name string, list []ops.Op) error {
	wire := make([]opBody, len(list))
	for i, op := range list {
		wire[i] = opBody{Op: op.Kind.String(), Key: op.Key, Map: op.Map, Set: op.Set, Member: op.Member, Value: op.Value, TTL: ttlString(op.TTL)}
		if op.Kind == ops.Incr {
			by := op.By
			wire[i].By = &by
		}
	}
	return c.doJSON(ctx, http.MethodPost, ctxPath(name)+"/ops", wire, nil)
}

type opBody struct {
	Op     string          `json:"op"`
	Key    string          `json:"key,omitempty"`
	Map    string          `json:"map,omitempty"`
	Set    string          `json:"set,omitempty"`
	Member string          `json:"member,omitempty"`
	By     *int64          `json:"by,omitempty"`
	Value  json.RawMessage `json:"value,omitempty"`
	TTL    string          `json:"ttl,omitempty"`
}

// OpsHeader applies the ops of a ctx-ops header value (SPEC §4) to a context atomically.
func (c *Client) OpsHeader(ctx context.Context, name, header string) error {
	return c.do(ctx, http.MethodPost, ctxPath(name)+"/ops", "text/plain; charset=utf-8", []byte(header), nil)
}

// Peers returns the replication peers.
func (c *Client) Peers(ctx context.Context) ([]PeerStatus, error) {
	var out peersAnswer
	err := c.do(ctx, http.MethodGet, "/v1/peers", "", nil, &out)
	return out.Peers, err
}

// Health returns nil if the sidecar process answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", "", nil, nil)
}

// Ready returns nil if the sidecar is ready, else an *Error whose Message gives the reasons.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", "", nil, nil)
}

// Watch opens a stream of the changes of context name ("" for every context) after event
// ID after (0: only changes from now on). It returns once the server has the watch in
// place, so every change committed after Watch returns is delivered; an *Error if the
// server refused it. Read the events with Next; Close the Watcher when done, or cancel
// ctx.
func (c *Client) Watch(ctx context.Context, name string, after uint64) (*Watcher, error) {
	u := c.base + "/v1/watch"
	if name != "" {
		u += "?context=" + url.QueryEscape(name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if after != 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	return &Watcher{ctx: ctx, body: resp.Body, sc: sc}, nil
}

// Watcher reads the events of one watch stream. It is not safe for concurrent use.
type Watcher struct {
	ctx  context.Context
	body io.ReadCloser
	sc   *bufio.Scanner
	// Last is the ID of the last change event Next returned: watch again from it to resume.
	Last uint64
}

// Next returns the next event. Its error is ctx's error once ctx is done, or
// io.ErrUnexpectedEOF when the server ended the stream (it is shutting down): watch
// again from Last to resume.
func (w *Watcher) Next() (WatchEvent, error) {
	var id, typ string
	var data []byte
	for w.sc.Scan() {
		line := w.sc.Text()
		if line == "" {
			if data == nil {
				continue // the end of a comment
			}
			ev := WatchEvent{Type: EventChange}
			if typ != "" {
				ev.Type = typ
			}
			if err := json.Unmarshal(data, &ev); err != nil {
				return WatchEvent{}, fmt.Errorf("watch: event %s: %w", id, err)
			}
			if id != "" {
				ev.ID, _ = strconv.ParseUint(id, 10, 64)
				w.Last = ev.ID
			}
			return ev, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			typ = value
		case "data":
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, value...)
		}
	}
	if err := w.ctx.Err(); err != nil {
		return WatchEvent{}, err
	}
	if err := w.sc.Err(); err != nil {
		return WatchEvent{}, err
	}
	return WatchEvent{}, io.ErrUnexpectedEOF
}

// Close ends the stream.
func (w *Watcher) Close() error { return w.body.Close() }

func (c *Client) doJSON(ctx context.Context, method, path string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, "application/json", data, out)
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	// A write without a JSON body (DELETE, ctx-ops as text/plain) proves with this header
	// that no web page sent it (SPEC §4a); on the others it costs nothing.
	req.Header.Set(HeaderRequestedBy, clientName)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer func() {
		// Drain so the connection goes back to the pool.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// readError turns an error answer into an *Error.
func readError(resp *http.Response) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	var b errorBody
	if err == nil && json.Unmarshal(data, &b) == nil && b.Error.Code != "" {
		e.Code, e.Message, e.Limit = b.Error.Code, b.Error.Message, b.Error.Limit
		return e
	}
	// Not an answer of this API (a proxy in between, or another server on the port).
	e.Message = fmt.Sprintf("admin API answered %s: %s; check the -addr of the sidecar", resp.Status, strings.TrimSpace(string(data)))
	return e
}

// ctxPath is the path of a context.
func ctxPath(name string) string { return "/v1/contexts/" + seg(name) }

// seg percent-encodes one path segment, dots included: an unescaped "." or ".." segment
// would be resolved as a relative path.
func seg(s string) string {
	switch s {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(s)
}

func ttlString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// IsNotFound reports whether err is an API answer 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}
