package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// incrCorpus holds bodies of POST .../counters/{key}: the forms clients send, and the
// edges where fastIncr must decline (escapes, other spellings of the names, numbers
// encoding/json refuses or reads otherwise, duplicates, trailing data).
var incrCorpus = []string{
	`{}`, ` { } `, "{\"by\":5}\n", `{"by":-2,"ttl":"1h"}`, `{"ttl":"1h","by":-2}`,
	"\t{\r\n\"by\" : 7 ,\n \"ttl\" : \"90s\" }\r\n", `{"by":0}`, `{"by":-0}`,
	`{"by":123456789012345678}`, `{"by":-123456789012345678}`, `{"by":1234567890123456789}`,
	`{"by":9223372036854775807}`, `{"by":9223372036854775808}`, `{"by":-9223372036854775808}`,
	`{"by":1.5}`, `{"by":1.0}`, `{"by":1e3}`, `{"by":1E3}`, `{"by":01}`, `{"by":+1}`, `{"by":-}`,
	`{"by":"1"}`, `{"by":null}`, `{"by":true}`, `{"by":[1]}`, `{"by":{}}`, `{"ttl":null}`,
	`{"ttl":""}`, `{"ttl":"0"}`, `{"ttl":"soon"}`, `{"ttl":"-1s"}`, `{"ttl":"1\u0068"}`,
	`{"ttl":"a\"b"}`, "{\"ttl\":\"\xff\"}", "{\"ttl\":\"é\"}", "{\"ttl\":\"\x01\"}", `{"ttl":1}`,
	`{"BY":3}`, `{"By":3}`, `{"b\u0079":3}`, `{"ttl":"1h","TTL":"2h"}`, `{"by":1,"by":2}`,
	`{"ttl":"1h","ttl":"2h"}`, `{"by":1,"bye":2}`, `{"bye":2}`, `{"by":1,}`, `{,"by":1}`,
	`{"by" 1}`, `{"by":1 "ttl":"1h"}`, `{"by":1} {}`, `{"by":1}x`, `{"by":1}}`, `{"by":`,
	`{"by":1`, `{`, `}`, `[]`, `null`, `"by"`, `1`, ``, ` `, `{"by":1}` + "\x00",
	"\xef\xbb\xbf{\"by\":1}", `{'by':1}`, `{by:1}`, `{"":1}`, `{"by":1,"ttl":"1h","x":0}`,
}

// TestFastIncr_Differential checks fastIncr against encoding/json as the handler used it
// (decodeJSON) on the corpus: whatever fastIncr accepts, encoding/json accepts into the
// same incrRequest. The plain bodies of the corpus must take the fast path.
func TestFastIncr_Differential(t *testing.T) {
	for _, body := range incrCorpus {
		t.Run(fmt.Sprintf("%q", body), func(t *testing.T) { checkFastIncr(t, []byte(body)) })
	}
	for _, body := range []string{`{}`, `{"by":5}`, `{"by":-2,"ttl":"1h"}`, "\t{\r\n\"by\" : 7 ,\n \"ttl\" : \"90s\" }\r\n", `{"by":-123456789012345678}`} {
		if _, ok := fastIncr([]byte(body)); !ok {
			t.Errorf("fastIncr(%q) declined a plain body", body)
		}
	}
}

func checkFastIncr(t *testing.T, body []byte) {
	t.Helper()
	got, ok := fastIncr(body)
	if !ok {
		return // the handler decodes with encoding/json: the same answer by construction
	}
	var want incrRequest
	if e := decodeJSON(body, &want, true); e != nil {
		t.Fatalf("fastIncr(%q) accepted what encoding/json refuses: %s", body, e.Message)
	}
	if got.ttl != want.TTL || got.hasBy != (want.By != nil) || (got.hasBy && got.by != *want.By) {
		t.Fatalf("fastIncr(%q) = %+v, encoding/json = %s", body, got, show(want))
	}
}

func show(r incrRequest) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// FuzzFastIncr: go test ./admin -run '^$' -fuzz FuzzFastIncr -fuzztime 30s
func FuzzFastIncr(f *testing.F) {
	for _, body := range incrCorpus {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFastIncr(t, bytes.Clone(body))
	})
}

// BenchmarkIncrBody compares the decode of an increment's body with and without
// encoding/json, and times its answer: go test ./admin -run '^$' -bench IncrBody -benchmem
func BenchmarkIncrBody(b *testing.B) {
	body := []byte(`{"by":1}`)
	b.Run("decode/fast", func(b *testing.B) {
		for b.Loop() {
			if _, ok := fastIncr(body); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("decode/encoding-json", func(b *testing.B) {
		for b.Loop() {
			var req incrRequest
			if e := decodeJSON(body, &req, true); e != nil {
				b.Fatal(e.Message)
			}
		}
	})
	w := &discardWriter{h: http.Header{}}
	b.Run("answer/WriteJSON", func(b *testing.B) {
		for b.Loop() {
			WriteJSON(w, http.StatusOK, valueAnswer[int64]{12345})
		}
	})
	b.Run("answer/writeCounter", func(b *testing.B) {
		for b.Loop() {
			writeCounter(w, 12345)
		}
	})
}

// discardWriter is a ResponseWriter that keeps nothing, for benchmarks.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
