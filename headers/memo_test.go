package headers

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// The memo of readBaggage must be invisible: a line read again gives what parsing
// gives, problems are reported on every request, and no caller can change what the
// next one gets.
func TestReadBaggage_Memo(t *testing.T) {
	cases := []struct {
		name, line string
		wantName   string
		wantFlags  []Flag
		wantErrs   []error
	}{
		{"context", "ctx.name=memo-1", "memo-1", nil, nil},
		{"context and flags", "userId=alice,ctx.name=memo-2,ctx.flag.b=2,ctx.flag.a=%20one", "memo-2", []Flag{{"a", " one"}, {"b", "2"}}, nil},
		{"invalid name", "ctx.name=bad%2Fname", "", nil, []error{ErrName}},
		{"invalid member", "ctx.name=memo-3,=x", "memo-3", nil, []error{ErrBaggage}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := range 3 {
				var errs []error
				b := readBaggage([]string{c.line}, &errs)
				if got, want := b.name, c.wantName; got != want {
					t.Errorf("read %d: name = %q, want %q", i, got, want)
				}
				if got, want := b.flags, c.wantFlags; !reflect.DeepEqual(got, want) {
					t.Errorf("read %d: flags = %v, want %v", i, got, want)
				}
				checkErrs(t, errs, c.wantErrs...)
				// A caller that changes its flags (ReadOutbound appends and
				// sorts) must not change the next caller's.
				for j := range b.flags {
					b.flags[j] = Flag{"changed", "changed"}
				}
				b.flags = append(b.flags, Flag{"added", "added"})
			}
		})
	}
}

// Many lines hashing to the same slots and read concurrently still each get their
// own result (run with -race).
func TestReadBaggage_MemoConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				n := (g*7 + i) % 1000
				name := fmt.Sprintf("ctx-%d", n)
				line := fmt.Sprintf("ctx.name=%s,ctx.flag.f=%d", name, n)
				var errs []error
				b := readBaggage([]string{line}, &errs)
				if errs != nil || b.name != name || len(b.flags) != 1 || b.flags[0].Value != fmt.Sprint(n) {
					t.Errorf("line %q: got name %q flags %v errors %v", line, b.name, b.flags, errs)
					return
				}
			}
		})
	}
	wg.Wait()
}

// A line longer than the memo's limit is parsed every time, with the same result.
func TestReadBaggage_LongLineNotMemoized(t *testing.T) {
	line := "pad=" + strings.Repeat("x", maxMemoLine) + ",ctx.name=long"
	for range 2 {
		var errs []error
		if b := readBaggage([]string{line}, &errs); b.name != "long" || errs != nil {
			t.Fatalf("name %q, errors %v; want long, none", b.name, errs)
		}
	}
}

// BenchmarkReadBaggage compares a line seen before (a context's requests) with a
// line new every time (an app that puts a request id in baggage): the memo's gain
// and its cost on a miss.
func BenchmarkReadBaggage(b *testing.B) {
	b.Run("repeated", func(b *testing.B) {
		v := []string{"userId=alice,ctx.name=checkout-7,ctx.flag.new-ui=on"}
		b.ReportAllocs()
		for b.Loop() {
			var errs []error
			readBaggage(v, &errs)
		}
	})
	b.Run("unique", func(b *testing.B) {
		lines := make([][]string, 4096)
		for i := range lines {
			lines[i] = []string{fmt.Sprintf("requestId=%d,ctx.name=checkout-7,ctx.flag.new-ui=on", i)}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var errs []error
			readBaggage(lines[i%len(lines)], &errs)
			i++
		}
	})
	b.Run("unique, no memo", func(b *testing.B) {
		lines := make([][]string, 4096)
		for i := range lines {
			lines[i] = []string{fmt.Sprintf("requestId=%d,ctx.name=checkout-7,ctx.flag.new-ui=on", i)}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var errs []error
			parseBaggage(lines[i%len(lines)], &errs)
			i++
		}
	})
}
