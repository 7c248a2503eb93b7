package ops

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseJSON_Valid(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want []Op
	}{
		{"empty list", `[]`, nil},
		{"every kind", `[
			{"op":"incr","key":"orders","by":2,"ttl":"1h"},
			{"op":"put","map":"steps","key":"pay","value":{ "any" : ["json", 1.50, null] },"ttl":3600},
			{"op":"del","map":"steps","key":"pay"},
			{"op":"add","set":"regions","member":"eu-west","ttl":"90s"},
			{"op":"rem","set":"regions","member":"x"}
		]`, []Op{
			{Kind: Incr, Key: "orders", By: 2, TTL: time.Hour},
			{Kind: Put, Map: "steps", Key: "pay", Value: raw(`{"any":["json",1.50,null]}`), TTL: time.Hour},
			{Kind: Del, Map: "steps", Key: "pay"},
			{Kind: Add, Set: "regions", Member: "eu-west", TTL: 90 * time.Second},
			{Kind: Rem, Set: "regions", Member: "x"},
		}},
		{"by defaults to 1, fields in any order", `[{"key":"k","op":"incr"}]`, []Op{{Kind: Incr, Key: "k", By: 1}}},
		{"ttl zero string", `[{"op":"add","set":"s","member":"m","ttl":"0"}]`, []Op{{Kind: Add, Set: "s", Member: "m"}}},
		{"sub-second ttl", `[{"op":"add","set":"s","member":"m","ttl":"1500ms"}]`, []Op{{Kind: Add, Set: "s", Member: "m", TTL: 1500 * time.Millisecond}}},
		{"null value", `[{"op":"put","map":"m","key":"k","value":null}]`, []Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`null`)}}},
		{"unicode names", `[{"op":"add","set":"caf\u00e9","member":"✓"}]`, []Op{{Kind: Add, Set: "café", Member: "✓"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseJSON([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParseJSON: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseJSON =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestParseJSON_Invalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want []string
	}{
		{"empty body", ``, []string{"ops: malformed JSON", "want a JSON array"}},
		{"object", `{"op":"incr"}`, []string{"ops: found an object where \"[\" belongs"}},
		{"truncated", `[{"op":"incr","key":"k"}`, []string{"ops: malformed JSON"}},
		{"trailing data", `[] []`, []string{"unexpected data after the closing ]"}},
		{"item not object", `[{"op":"incr","key":"k"}, 3]`, []string{"ops[1]: found a number where \"{\" belongs"}},
		{"missing op", `[{"key":"k"}]`, []string{`ops[0]: field "op" missing`}},
		{"op number", `[{"op":1}]`, []string{`ops[0]: field "op" is the number 1, not a string`}},
		{"unknown op", `[{"op":"mul"}]`, []string{`ops[0]: unknown op "mul"`}},
		{"missing key", `[{"op":"incr","key":"k"},{"op":"put","map":"m","value":1}]`, []string{`ops[1] (put): field "key" missing; want {"op":"put","map":"m","key":"k","value":...}`}},
		{"missing value", `[{"op":"put","map":"m","key":"k"}]`, []string{`ops[0] (put): field "value" missing`}},
		{"unknown field", `[{"op":"del","map":"m","key":"k","ttl":"1h"}]`, []string{`ops[0] (del): unknown field "ttl" (del takes map and key)`}},
		{"duplicate field", `[{"op":"incr","key":"a","key":"b"}]`, []string{`ops[0]: field "key" appears twice`}},
		{"key number", `[{"op":"incr","key":5}]`, []string{`ops[0] (incr): field "key" is the number 5, not a string`}},
		{"key null", `[{"op":"incr","key":null}]`, []string{`field "key" is null, not a string`}},
		{"by float", `[{"op":"incr","key":"k","by":1.5}]`, []string{`field "by" is the number 1.5; want a 64-bit integer`}},
		{"by string", `[{"op":"incr","key":"k","by":"2"}]`, []string{`field "by" is a string`}},
		{"by zero", `[{"op":"incr","key":"k","by":0}]`, []string{`ops[0] (incr): "by" is zero`}},
		{"by overflow", `[{"op":"incr","key":"k","by":9223372036854775808}]`, []string{`field "by" is the number 9223372036854775808`}},
		{"ttl bad string", `[{"op":"incr","key":"k","ttl":"soon"}]`, []string{`field "ttl" "soon" is not a duration`}},
		{"ttl negative seconds", `[{"op":"incr","key":"k","ttl":-1}]`, []string{`field "ttl" is -1; want 0 to`}},
		{"ttl negative duration", `[{"op":"incr","key":"k","ttl":"-1m"}]`, []string{`"ttl" -1m0s is negative`}},
		{"ttl bool", `[{"op":"incr","key":"k","ttl":true}]`, []string{`field "ttl" is a boolean`}},
		{"empty name", `[{"op":"add","set":"","member":"m"}]`, []string{`ops[0] (add): "set" is empty`}},
		{"control character", `[{"op":"add","set":"s","member":"a\tb"}]`, []string{`"member" holds control character U+0009`}},
		{"invalid utf-8 name", "[{\"op\":\"add\",\"set\":\"\xff\",\"member\":\"m\"}]", []string{`field "set" is not valid UTF-8`}},
		{"invalid utf-8 value", "[{\"op\":\"put\",\"map\":\"m\",\"key\":\"k\",\"value\":\"\xff\"}]", []string{`"value" is not valid UTF-8`}},
		{"name too long", `[{"op":"del","map":"m","key":"` + strings.Repeat("k", 201) + `"}]`, []string{`"key" is 201 bytes`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := ParseJSON([]byte(tc.body))
			if err == nil {
				t.Fatalf("ParseJSON(%s) = %+v, want an error", tc.body, ops)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseJSON(%s) error\n%s\nwant it to contain\n%s", tc.body, err, w)
				}
			}
		})
	}
}

// TestParseJSON_SameAsHeader checks that the two wire forms of the same ops agree.
func TestParseJSON_SameAsHeader(t *testing.T) {
	fromHeader, err := ParseHeader(`incr;key="orders";by=2;ttl=60, put;map="steps";key="pay";value="done", add;set="r";member="eu"`)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := ParseJSON([]byte(`[{"op":"incr","key":"orders","by":2,"ttl":"1m"},{"op":"put","map":"steps","key":"pay","value":"done"},{"op":"add","set":"r","member":"eu"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromHeader, fromJSON) {
		t.Fatalf("header form %+v\nJSON form %+v", fromHeader, fromJSON)
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`[]`,
		`[{"op":"incr","key":"orders","by":2,"ttl":"1h"},{"op":"put","map":"steps","key":"pay","value":{"any":"json"},"ttl":3600}]`,
		`[{"op":"del","map":"m","key":"k"},{"op":"add","set":"s","member":"m"},{"op":"rem","set":"s","member":"m"}]`,
		`[{"op":"incr","key":"a","key":"b"}]`,
		`{"op":"incr"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := ParseJSON(data)
		if err != nil {
			return
		}
		for i, op := range ops {
			if err := Validate(op); err != nil {
				t.Fatalf("ParseJSON(%q) op %d %+v does not validate: %v", data, i, op, err)
			}
		}
	})
}
