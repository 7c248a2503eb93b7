package ops

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"pgregory.net/rapid"
)

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func TestParseHeader_Valid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		want   []Op
	}{
		{"empty", "", nil},
		{"spaces only", "   ", nil},
		{"spec example",
			`incr;key="orders";by=2, put;map="steps";key="pay";value="done";ttl=3600, add;set="regions";member="eu-west", del;map="steps";key="pay", rem;set="regions";member="x"`,
			[]Op{
				{Kind: Incr, Key: "orders", By: 2},
				{Kind: Put, Map: "steps", Key: "pay", Value: raw(`"done"`), TTL: time.Hour},
				{Kind: Add, Set: "regions", Member: "eu-west"},
				{Kind: Del, Map: "steps", Key: "pay"},
				{Kind: Rem, Set: "regions", Member: "x"},
			}},
		{"by defaults to 1", `incr;key="k"`, []Op{{Kind: Incr, Key: "k", By: 1}}},
		{"negative by", `incr;key="k";by=-5`, []Op{{Kind: Incr, Key: "k", By: -5}}},
		{"parameters in any order", `put;ttl=60;value=1;key="k";map="m"`,
			[]Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`1`), TTL: time.Minute}}},
		{"ttl zero keeps expiry", `add;set="s";member="m";ttl=0`, []Op{{Kind: Add, Set: "s", Member: "m"}}},
		{"whitespace around items", `  incr;key="a"  ,	incr;key="b";by=3   `,
			[]Op{{Kind: Incr, Key: "a", By: 1}, {Kind: Incr, Key: "b", By: 3}}},
		{"no space after comma", `incr;key="a",incr;key="b"`,
			[]Op{{Kind: Incr, Key: "a", By: 1}, {Kind: Incr, Key: "b", By: 1}}},
		{"space after semicolon", `incr; key="a"; by=4`, []Op{{Kind: Incr, Key: "a", By: 4}}},
		{"repeated parameter: last wins (RFC 9651 §4.2.3.2)", `incr;key="a";key="b"`,
			[]Op{{Kind: Incr, Key: "b", By: 1}}},
		{"value integer", `put;map="m";key="k";value=-42`, []Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`-42`)}}},
		{"value decimal", `put;map="m";key="k";value=2.50`, []Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`2.5`)}}},
		{"value decimal zero fraction", `put;map="m";key="k";value=-0.0`, []Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`0`)}}},
		{"value true", `put;map="m";key="k";value`, []Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`true`)}}},
		{"value false", `put;map="m";key="k";value=?0`, []Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`false`)}}},
		{"value string escapes", `put;map="m";key="k";value="a\"b\\c<&>"`,
			[]Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`"a\"b\\c<&>"`)}}},
		{"display strings", `add;set=%"caf%c3%a9";member=%"%e2%9c%93 ok"`,
			[]Op{{Kind: Add, Set: "café", Member: "✓ ok"}}},
		{"display string value with newline", `put;map="m";key="k";value=%"a%0ab"`,
			[]Op{{Kind: Put, Map: "m", Key: "k", Value: raw(`"a\nb"`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseHeader(tc.header)
			if err != nil {
				t.Fatalf("ParseHeader(%q): %v", tc.header, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseHeader(%q) =\n%+v\nwant\n%+v", tc.header, got, tc.want)
			}
		})
	}
}

func TestParseHeaderValues_MultipleLines(t *testing.T) {
	got, err := ParseHeaderValues([]string{`incr;key="a"`, `del;map="m";key="k", rem;set="s";member="x"`})
	if err != nil {
		t.Fatal(err)
	}
	want := []Op{
		{Kind: Incr, Key: "a", By: 1},
		{Kind: Del, Map: "m", Key: "k"},
		{Kind: Rem, Set: "s", Member: "x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := ParseHeaderValues([]string{`incr;key="a"`, `bogus`}); err == nil || !strings.Contains(err.Error(), "item 2") {
		t.Fatalf("error for a bad second line = %v, want one naming item 2", err)
	}
}

func TestParseHeader_Invalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		want   []string // substrings of the error
	}{
		{"not sf", `incr;key="a`, []string{"ctx-ops: not a structured field list"}},
		{"trailing comma", `incr;key="a",`, []string{"not a structured field list"}},
		{"inner list", `incr;key="a", (incr put)`, []string{"ctx-ops item 2: an inner list is not an operation"}},
		{"string op", `"incr";key="a"`, []string{"item 1: want an operation token", "got a string"}},
		{"integer op", `7`, []string{"item 1: want an operation token", "got an integer"}},
		{"unknown op", `incr;key="a", mul;key="b"`, []string{"item 2:", `unknown op "mul"`}},
		{"upper case op", `INCR;key="a"`, []string{"item 1:", `unknown op "INCR"`}},
		{"missing key", `incr, put;map="m";value=1`, []string{`ctx-ops item 1 (incr): parameter "key" missing; want incr;key="k"`}},
		{"brief example", `incr;key="a", put;map="m";value=1`, []string{`ctx-ops item 2 (put): parameter "key" missing; want put;map="m";key="k";value=...`}},
		{"missing value", `put;map="m";key="k"`, []string{`(put): parameter "value" missing`}},
		{"missing member", `rem;set="s"`, []string{`(rem): parameter "member" missing`}},
		{"unknown parameter", `incr;key="a";step=2`, []string{`(incr): unknown parameter "step" (incr takes key, by and ttl)`}},
		{"ttl on del", `del;map="m";key="k";ttl=5`, []string{`(del): unknown parameter "ttl"`}},
		{"key token", `incr;key=orders`, []string{`(incr): parameter "key" is the token orders, not a string`}},
		{"key integer", `incr;key=5`, []string{`parameter "key" is an integer, not a string`}},
		{"bare key", `incr;key`, []string{`parameter "key" is a boolean (a parameter without =value is boolean true), not a string`}},
		{"by string", `incr;key="k";by="2"`, []string{`parameter "by" is a string, not an integer`}},
		{"by decimal", `incr;key="k";by=1.5`, []string{`parameter "by" is a decimal, not an integer`}},
		{"by zero", `incr;key="k";by=0`, []string{`item 1 (incr): "by" is zero`}},
		{"negative ttl", `add;set="s";member="m";ttl=-1`, []string{`(add): parameter "ttl" is -1; want 0 to`}},
		{"ttl too large", `add;set="s";member="m";ttl=999999999999999`, []string{`parameter "ttl" is 999999999999999`}},
		{"ttl decimal", `add;set="s";member="m";ttl=1.5`, []string{`parameter "ttl" is a decimal`}},
		{"value token", `put;map="m";key="k";value=done`, []string{`parameter "value" is the token done; quote text (value="done")`}},
		{"value bytes", `put;map="m";key="k";value=:aGk=:`, []string{`parameter "value" is a byte sequence`}},
		{"value date", `put;map="m";key="k";value=@1700000000`, []string{`parameter "value" is a date`}},
		{"empty name", `incr;key=""`, []string{`item 1 (incr): "key" is empty`}},
		{"name too long", `incr;key="` + strings.Repeat("a", 201) + `"`, []string{`"key" is 201 bytes; want 1 to 200`}},
		{"control in display string", `add;set="s";member=%"a%07b"`, []string{`"member" holds control character U+0007`}},
		{"invalid utf-8 display string", `add;set="s";member=%"%ff"`, []string{"not a structured field list"}},
		{"non-ascii raw", "incr;key=\"caf\xc3\xa9\"", []string{"not a structured field list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := ParseHeader(tc.header)
			if err == nil {
				t.Fatalf("ParseHeader(%q) = %+v, want an error", tc.header, ops)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseHeader(%q) error\n%s\nwant it to contain\n%s", tc.header, err, w)
				}
			}
		})
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []Op
		want string
	}{
		{"empty", nil, ""},
		{"all kinds", []Op{
			{Kind: Incr, Key: "orders", By: 2},
			{Kind: Incr, Key: "hits", By: 1, TTL: time.Minute},
			{Kind: Put, Map: "steps", Key: "pay", Value: raw(`"done"`), TTL: time.Hour},
			{Kind: Del, Map: "steps", Key: "pay"},
			{Kind: Add, Set: "regions", Member: "eu-west"},
			{Kind: Rem, Set: "regions", Member: "x"},
		}, `incr;key="orders";by=2, incr;key="hits";ttl=60, put;map="steps";key="pay";value="done";ttl=3600, del;map="steps";key="pay", add;set="regions";member="eu-west", rem;set="regions";member="x"`},
		{"values", []Op{
			{Kind: Put, Map: "m", Key: "i", Value: raw(`-999999999999999`)},
			{Kind: Put, Map: "m", Key: "d", Value: raw(`12.125`)},
			{Kind: Put, Map: "m", Key: "e", Value: raw(`1.5e2`)},
			{Kind: Put, Map: "m", Key: "b", Value: raw(` false `)},
			{Kind: Put, Map: "m", Key: "s", Value: raw(`"q\"\\ é\u0001"`)},
		}, `put;map="m";key="i";value=-999999999999999, put;map="m";key="d";value=12.125, put;map="m";key="e";value=150, put;map="m";key="b";value=?0, put;map="m";key="s";value=%"q%22\ %c3%a9%01"`},
		{"display names", []Op{{Kind: Add, Set: "café", Member: "100%"}}, `add;set=%"caf%c3%a9";member="100%"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Format(tc.ops)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Format =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestFormat_Errors(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   Op
		want string
	}{
		{"object", Op{Kind: Put, Map: "m", Key: "k", Value: raw(`{"a":1}`)}, "send this op as JSON"},
		{"array", Op{Kind: Put, Map: "m", Key: "k", Value: raw(`[1]`)}, "send this op as JSON"},
		{"null", Op{Kind: Put, Map: "m", Key: "k", Value: raw(`null`)}, "send this op as JSON"},
		{"four decimals", Op{Kind: Put, Map: "m", Key: "k", Value: raw(`0.0001`)}, `"value" 0.0001`},
		{"16 digits", Op{Kind: Put, Map: "m", Key: "k", Value: raw(`1000000000000000`)}, "at most 15 digits"},
		{"13 integer digits with a fraction", Op{Kind: Put, Map: "m", Key: "k", Value: raw(`1000000000000.5`)}, "send this op as JSON"},
		{"by too big", Op{Kind: Incr, Key: "k", By: 1e15}, `"by" 1000000000000000 is beyond`},
		{"sub-second ttl", Op{Kind: Add, Set: "s", Member: "m", TTL: 1500 * time.Millisecond}, `"ttl" 1.5s is not a whole number of seconds`},
		{"invalid op", Op{Kind: Incr, Key: "k"}, `"by" is zero`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Format([]Op{{Kind: Incr, Key: "ok", By: 1}, tc.op})
			if err == nil {
				t.Fatalf("Format = %q, want an error", s)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "op 2") {
				t.Fatalf("Format error %q, want it to name op 2 and contain %q", err, tc.want)
			}
		})
	}
}

// genName draws a valid name: 1 to MaxNameBytes bytes of printable text, mostly ASCII
// because that is what apps send, sometimes any non-control rune.
func genName() *rapid.Generator[string] {
	ascii := rapid.RuneFrom(nil, &unicode.RangeTable{R16: []unicode.Range16{{Lo: 0x20, Hi: 0x7e, Stride: 1}}})
	anyRune := rapid.Rune().Filter(func(r rune) bool { return !unicode.IsControl(r) })
	return rapid.StringOfN(rapid.OneOf(ascii, ascii, anyRune), 1, 60, MaxNameBytes)
}

// genValue draws a Put value in the canonical form ParseHeader produces.
func genValue() *rapid.Generator[json.RawMessage] {
	return rapid.OneOf(
		rapid.Map(rapid.String(), func(s string) json.RawMessage { return jsonString(strings.ToValidUTF8(s, "?")) }),
		rapid.Map(rapid.Int64Range(-maxSFInteger, maxSFInteger), func(n int64) json.RawMessage {
			return json.RawMessage(strconv.FormatInt(n, 10))
		}),
		rapid.Custom(func(t *rapid.T) json.RawMessage {
			whole := rapid.Int64Range(-999_999_999_999, 999_999_999_999).Draw(t, "whole")
			milli := rapid.Int64Range(1, 999).Draw(t, "milli")
			text := strconv.FormatInt(whole, 10) + "." + strings.TrimRight(strconv.FormatInt(1000+milli, 10)[1:], "0")
			if whole == 0 && rapid.Bool().Draw(t, "negative") {
				text = "-" + text
			}
			return json.RawMessage(text)
		}),
		rapid.Map(rapid.Bool(), func(b bool) json.RawMessage { return json.RawMessage(strconv.FormatBool(b)) }),
	)
}

func genOp() *rapid.Generator[Op] {
	return rapid.Custom(func(t *rapid.T) Op {
		ttl := time.Duration(rapid.OneOf(rapid.Just[int64](0), rapid.Int64Range(0, int64(MaxTTL/time.Second))).Draw(t, "ttl")) * time.Second
		switch kind := Kind(rapid.IntRange(int(Incr), int(Rem)).Draw(t, "kind")); kind {
		case Incr:
			by := rapid.Int64Range(-maxSFInteger, maxSFInteger).Filter(func(n int64) bool { return n != 0 }).Draw(t, "by")
			return Op{Kind: Incr, Key: genName().Draw(t, "key"), By: by, TTL: ttl}
		case Put:
			return Op{Kind: Put, Map: genName().Draw(t, "map"), Key: genName().Draw(t, "key"), Value: genValue().Draw(t, "value"), TTL: ttl}
		case Del:
			return Op{Kind: Del, Map: genName().Draw(t, "map"), Key: genName().Draw(t, "key")}
		case Add:
			return Op{Kind: Add, Set: genName().Draw(t, "set"), Member: genName().Draw(t, "member"), TTL: ttl}
		default:
			return Op{Kind: Rem, Set: genName().Draw(t, "set"), Member: genName().Draw(t, "member")}
		}
	})
}

func TestFormat_RoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ops := rapid.SliceOfN(genOp(), 1, 8).Draw(t, "ops")
		header, err := Format(ops)
		if err != nil {
			t.Fatalf("Format: %v", err)
		}
		got, err := ParseHeader(header)
		if err != nil {
			t.Fatalf("ParseHeader(%q): %v", header, err)
		}
		if !reflect.DeepEqual(got, ops) {
			t.Fatalf("ParseHeader(Format(ops)) =\n%+v\nwant\n%+v\nheader %s", got, ops, header)
		}
	})
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		"",
		`incr;key="orders";by=2, put;map="steps";key="pay";value="done";ttl=3600, add;set="regions";member="eu-west", del;map="steps";key="pay", rem;set="regions";member="x"`,
		`put;map="m";key="k";value=2.5`,
		`put;map="m";key="k";value=?1;ttl=0`,
		`add;set=%"caf%c3%a9";member=%"%e2%9c%93"`,
		`incr;key="a", (incr put)`,
		`put;map="m";key="k";value=:aGk=:`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		ops, err := ParseHeader(header)
		if err != nil {
			return
		}
		for i, op := range ops {
			if err := Validate(op); err != nil {
				t.Fatalf("ParseHeader(%q) op %d %+v does not validate: %v", header, i, op, err)
			}
		}
		// Everything the parser accepts can be written back and reads the same.
		again, err := Format(ops)
		if err != nil {
			t.Fatalf("Format(ParseHeader(%q)): %v", header, err)
		}
		ops2, err := ParseHeader(again)
		if err != nil {
			t.Fatalf("ParseHeader(%q) (formatted from %q): %v", again, header, err)
		}
		if !reflect.DeepEqual(ops, ops2) {
			t.Fatalf("round trip of %q through %q:\n%+v\n%+v", header, again, ops, ops2)
		}
	})
}
