package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/httpapi"
)

// WatchEvent is one event of GET /v1/watch.
//
// A "change" event (the SSE default event type, so a browser's EventSource onmessage sees
// it) gives the values, read from the store when the event is sent, of everything the
// change touched: counters, map entries (null when deleted or expired) and sets. A change
// that removes set members does not say from which set (a removal is a set of dots in the
// replicated state), so such an event lists every live set of the context; a set the
// removal emptied is absent from that list. Cleared says everything written to the context
// before the change is gone: it was deleted, or it had expired and this write began anew.
//
// A "reset" event says events were missed (the watcher resumed from an ID the store no
// longer holds, or fell behind): reread the state with GET /v1/contexts/{ctx}.
type WatchEvent struct {
	ID       uint64                                `json:"-"`
	Type     string                                `json:"-"` // "change" or "reset"
	Context  string                                `json:"context"`
	Origin   string                                `json:"origin,omitempty"` // replica id, hex
	Time     time.Time                             `json:"time,omitzero"`
	Reason   string                                `json:"reason,omitempty"` // of a reset: "missed" or "lagged"
	Cleared  bool                                  `json:"cleared,omitempty"`
	Counters map[string]int64                      `json:"counters,omitempty"`
	Maps     map[string]map[string]json.RawMessage `json:"maps,omitempty"`
	Sets     map[string][]string                   `json:"sets,omitempty"`
}

// Event types of WatchEvent.Type.
const (
	EventChange = "change"
	EventReset  = "reset"
)

var jsonNull = json.RawMessage("null")

func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("context")
	var after uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		var err error
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			WriteError(w, badRequest("Last-Event-ID %q is not an event ID; send the id: of the last event received, or omit it", v))
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.stop, cancel) // Close ends the stream, not just Shutdown's deadline
	defer stop()

	sub, err := s.changes.Watch(ctx, name, after)
	if err != nil {
		WriteError(w, StoreError(err))
		return
	}
	defer func() { sub.Close() }()

	stream := httpapi.StartSSE(w)
	if sub.Missed() {
		writeReset(stream, name, "missed")
	} else {
		// A comment sends the headers now, so the client knows the watch is in place.
		stream.Comment("watching")
	}
	if stream.Flush() != nil {
		return
	}

	keepAlive := time.NewTicker(s.opt.KeepAlive)
	defer keepAlive.Stop()
	last := after
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepAlive.C:
			stream.Comment("keep-alive")
			if stream.Flush() != nil {
				return
			}
		case ev, ok := <-sub.Events():
			if !ok {
				if ctx.Err() != nil || !sub.Lagged() {
					return // client gone, server closing, or store closed
				}
				// Too slow for the store's buffer: resume from the store's event log.
				sub.Close()
				if sub, err = s.changes.Watch(ctx, name, last); err != nil {
					return
				}
				if last == 0 || sub.Missed() {
					writeReset(stream, name, "lagged")
				}
				continue
			}
			if err := s.writeEvent(stream, ev); err != nil {
				s.log.Error("watch: encoding an event failed", "context", ev.Context, "error", err)
				return
			}
			last = ev.ID
			if len(sub.Events()) == 0 { // flush once per burst
				if stream.Flush() != nil {
					return
				}
			}
		}
	}
}

func writeReset(stream *httpapi.SSE, name, reason string) {
	data, _ := json.Marshal(WatchEvent{Context: name, Reason: reason})
	stream.Event("", EventReset, data)
}

// writeEvent writes a change with the default event type, which a browser's EventSource
// hands to onmessage.
func (s *Server) writeEvent(stream *httpapi.SSE, ev ctxstore.Event) error {
	data, err := json.Marshal(s.eventData(ev))
	if err != nil {
		return err
	}
	return stream.Event(strconv.FormatUint(ev.ID, 10), "", data)
}

// eventData reads from the store the values of what ev touched.
func (s *Server) eventData(ev ctxstore.Event) WatchEvent {
	t := ev.Touched
	out := WatchEvent{
		ID:      ev.ID,
		Type:    EventChange,
		Context: ev.Context,
		Origin:  ev.Origin.String(),
		Time:    ev.Time,
		Cleared: ev.Delta.Cleared != 0,
	}
	for _, k := range t.Counters {
		if out.Counters == nil {
			out.Counters = make(map[string]int64, len(t.Counters))
		}
		out.Counters[k], _ = s.values.Counter(ev.Context, k)
	}
	for m, keys := range t.Maps {
		if out.Maps == nil {
			out.Maps = make(map[string]map[string]json.RawMessage, len(t.Maps))
		}
		vals := make(map[string]json.RawMessage, len(keys))
		for _, k := range keys {
			v, err := s.values.MapGet(ev.Context, m, k)
			if err != nil {
				v = jsonNull
			}
			vals[k] = v
		}
		out.Maps[m] = vals
	}
	for _, set := range t.Sets {
		if out.Sets == nil {
			out.Sets = make(map[string][]string, len(t.Sets))
		}
		out.Sets[set], _ = s.values.Set(ev.Context, set)
	}
	return out
}
