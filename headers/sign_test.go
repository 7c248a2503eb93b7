package headers

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// fuzzSigner signs and verifies in the fuzz targets: a fleet key like any other.
var fuzzSigner = mustSigner([]byte("0123456789abcdef0123456789abcdef"))

func mustSigner(secrets ...[]byte) *Signer {
	s, err := NewSigner(secrets)
	if err != nil {
		panic(err)
	}
	return s
}

var sigTime = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func TestSigner_SignVerify(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(specTraceID)
	other, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	flags := []Flag{{"beta", "on"}, {"color", "dark red"}}
	fleet := mustSigner([]byte("fleet-secret-of-32-bytes-exactly"))
	sig := fleet.Sign(tid, "orders-42", flags, sigTime)
	if len(sig) != len("00-1795867200-")+32 || !strings.HasPrefix(sig, "00-1795867200-") {
		t.Fatalf("Sign = %q, want 00-<unix seconds>-<32 hex digits>", sig)
	}

	tests := []struct {
		name   string
		signer *Signer
		values []string
		trace  trace.TraceID
		ctx    string
		flags  []Flag
		now    time.Time
		want   error
	}{
		{"same members, same trace", fleet, []string{sig}, tid, "orders-42", flags, sigTime, nil},
		{"checked a little later", fleet, []string{sig}, tid, "orders-42", flags, sigTime.Add(MaxSignatureSkew), nil},
		{"receiver's clock a little behind", fleet, []string{sig}, tid, "orders-42", flags, sigTime.Add(-MaxSignatureSkew), nil},
		{"replayed onto another trace", fleet, []string{sig}, other, "orders-42", flags, sigTime, ErrSigMismatch},
		{"replayed without a traceparent", fleet, []string{sig}, trace.TraceID{}, "orders-42", flags, sigTime, ErrSigMismatch},
		{"another context name", fleet, []string{sig}, tid, "orders-43", flags, sigTime, ErrSigMismatch},
		{"a flag added", fleet, []string{sig}, tid, "orders-42", append(flags[:2:2], Flag{"admin", "true"}), sigTime, ErrSigMismatch},
		{"a flag changed", fleet, []string{sig}, tid, "orders-42", []Flag{{"beta", "off"}, {"color", "dark red"}}, sigTime, ErrSigMismatch},
		{"a flag dropped", fleet, []string{sig}, tid, "orders-42", flags[:1], sigTime, ErrSigMismatch},
		{"name moved into a flag value", fleet, []string{sig}, tid, "", []Flag{{"beta", "on\nctx.name=orders-42"}, {"color", "dark red"}}, sigTime, ErrSigMismatch},
		{"another fleet's key", mustSigner([]byte("another-fleet-secret-32-bytes!!!")), []string{sig}, tid, "orders-42", flags, sigTime, ErrSigMismatch},
		{"too old", fleet, []string{sig}, tid, "orders-42", flags, sigTime.Add(MaxSignatureSkew + time.Second), ErrSigStale},
		{"from the future", fleet, []string{sig}, tid, "orders-42", flags, sigTime.Add(-MaxSignatureSkew - time.Second), ErrSigStale},
		{"two lines", fleet, []string{sig, sig}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
		{"uppercase hex", fleet, []string{strings.ToUpper(sig)}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
		{"version 01", fleet, []string{"01" + sig[2:]}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
		{"short MAC", fleet, []string{sig[:len(sig)-2]}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
		{"leading zero in the time", fleet, []string{"00-0" + sig[3:]}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
		{"signed time", fleet, []string{"00-+" + sig[3:]}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
		{"time too long", fleet, []string{"00-99999999999999999999" + sig[13:]}, tid, "orders-42", flags, sigTime, ErrSigMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.signer.Verify(tt.values, tt.trace, tt.ctx, tt.flags, tt.now)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestSigner_Rotation: a Signer accepts what any of its keys signed and signs with its
// first, so a fleet rotates its secret the way it rotates the sync keyring.
func TestSigner_Rotation(t *testing.T) {
	oldKey, newKey := []byte("old-fleet-secret-0123456789abcde"), []byte("new-fleet-secret-0123456789abcde")
	tid, _ := trace.TraceIDFromHex(specTraceID)
	old := mustSigner(oldKey)
	both := mustSigner(newKey, oldKey)
	next := mustSigner(newKey)
	if err := both.Verify([]string{old.Sign(tid, "c", nil, sigTime)}, tid, "c", nil, sigTime); err != nil {
		t.Errorf("a rolling sidecar refuses the old key: %v", err)
	}
	if err := next.Verify([]string{both.Sign(tid, "c", nil, sigTime)}, tid, "c", nil, sigTime); err != nil {
		t.Errorf("a rolled sidecar refuses what a rolling one signed: %v", err)
	}
	if err := next.Verify([]string{old.Sign(tid, "c", nil, sigTime)}, tid, "c", nil, sigTime); !errors.Is(err, ErrSigMismatch) {
		t.Errorf("the old key alone still verifies after the roll: %v", err)
	}
}

func TestNewSigner_Errors(t *testing.T) {
	if _, err := NewSigner(nil); err == nil || !strings.Contains(err.Error(), "sync.key_file") {
		t.Errorf("NewSigner(nil) = %v, want an error naming sync.key_file", err)
	}
	if _, err := NewSigner([][]byte{[]byte("short")}); err == nil {
		t.Error("NewSigner accepted a 5-byte secret")
	}
}

// TestInbound_Trust is the trust contract of SPEC §4a on the inbound path, header by
// header: what reaches the app, what the sidecar acts on, and what is counted.
func TestInbound_Trust(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(specTraceID)
	fleet := mustSigner([]byte("fleet-secret-of-32-bytes-exactly"))
	pinned := func(name string) bool { return name == "new-ui" }
	signed := func(name string, flags ...Flag) string { return fleet.Sign(tid, name, flags, sigTime) }
	base := Options{Signer: fleet, Pinnable: pinned, Now: func() time.Time { return sigTime }}
	with := func(f func(*Options)) Options { o := base; f(&o); return o }

	tests := []struct {
		name        string
		opt         Options
		from        Source
		in          http.Header
		wantName    string
		wantFlags   []Flag
		wantBaggage []string
		wantFlagHdr string // Ctx-Flag-New-Ui to the app
		wantRefused Refused
	}{
		{
			name:        "signed by a sidecar of the fleet: kept",
			opt:         base,
			in:          hdr("traceparent", specTP, "baggage", "u=1,ctx.name=orders-42,ctx.flag.new-ui=on", "ctx-sig", signed("orders-42", Flag{"new-ui", "on"})),
			wantName:    "orders-42",
			wantFlags:   []Flag{{"new-ui", "on"}},
			wantBaggage: []string{"u=1,ctx.name=orders-42,ctx.flag.new-ui=on"},
			wantFlagHdr: "on",
		},
		{
			name:        "unsigned from another pod: removed, the rest goes on",
			opt:         base,
			in:          hdr("traceparent", specTP, "baggage", "u=1,ctx.name=random-123,ctx.flag.new-ui=on"),
			wantBaggage: []string{"u=1"},
			wantRefused: Refused{Unsigned: 2},
		},
		{
			name:        "no key here: nothing from other pods is trusted",
			opt:         with(func(o *Options) { o.Signer = nil }),
			in:          hdr("traceparent", specTP, "baggage", "ctx.name=orders-42", "ctx-sig", signed("orders-42")),
			wantRefused: Refused{Unsigned: 1},
		},
		{
			name:        "a flag added to a signed request: everything removed",
			opt:         base,
			in:          hdr("traceparent", specTP, "baggage", "ctx.name=orders-42,ctx.flag.new-ui=on", "ctx-sig", signed("orders-42")),
			wantRefused: Refused{BadSignature: 2},
		},
		{
			name:        "replayed onto another trace",
			opt:         base,
			in:          hdr("traceparent", "00-0af7651916cd43dd8448eb211c80319c-"+specSpanID+"-01", "baggage", "ctx.name=orders-42", "ctx-sig", signed("orders-42")),
			wantRefused: Refused{BadSignature: 1},
		},
		{
			name:        "stale signature",
			opt:         with(func(o *Options) { o.Now = func() time.Time { return sigTime.Add(time.Hour) } }),
			in:          hdr("traceparent", specTP, "baggage", "ctx.name=orders-42", "ctx-sig", signed("orders-42")),
			wantRefused: Refused{StaleSignature: 1},
		},
		{
			name:        "flag not in flags.pinned from a trusted sidecar: only it removed",
			opt:         base,
			in:          hdr("traceparent", specTP, "baggage", "ctx.name=orders-42,ctx.flag.admin=true", "ctx-sig", signed("orders-42", Flag{"admin", "true"})),
			wantName:    "orders-42",
			wantBaggage: []string{"ctx.name=orders-42"},
			wantRefused: Refused{NotPinnable: 1},
		},
		{
			name:        "trusted source: kept unsigned, unpinnable flag still removed",
			opt:         base,
			from:        Source{Trusted: true},
			in:          hdr("baggage", "ctx.name=orders-42,ctx.flag.new-ui=on,ctx.flag.admin=true"),
			wantName:    "orders-42",
			wantFlags:   []Flag{{"new-ui", "on"}},
			wantBaggage: []string{"ctx.name=orders-42,ctx.flag.new-ui=on"},
			wantFlagHdr: "on",
			wantRefused: Refused{NotPinnable: 1},
		},
		{
			name:        "edge taking ctx.name from any caller: the name, not the flags",
			opt:         with(func(o *Options) { o.ContextBaggage = NameKey }),
			in:          hdr("baggage", "ctx.name=order-1001,ctx.flag.new-ui=on,u=1"),
			wantName:    "order-1001",
			wantBaggage: []string{"ctx.name=order-1001,u=1"},
			wantRefused: Refused{Unsigned: 1},
		},
		{
			name:        "edge taking the context from a header",
			opt:         with(func(o *Options) { o.ContextHeader = "X-Workflow-Id" }),
			in:          hdr("X-Workflow-Id", "wf-77", "baggage", "u=1"),
			wantName:    "wf-77",
			wantBaggage: []string{"u=1,ctx.name=wf-77"},
		},
		{
			name:        "edge taking the context from another baggage member",
			opt:         with(func(o *Options) { o.ContextBaggage = "workflow.id" }),
			in:          hdr("baggage", "workflow.id=wf-78,ctx.name=forged"),
			wantName:    "wf-78",
			wantBaggage: []string{"workflow.id=wf-78,ctx.name=wf-78"},
			wantRefused: Refused{Unsigned: 1},
		},
		{
			name:        "edge taking ctx.name from any caller, nothing else: untouched",
			opt:         with(func(o *Options) { o.ContextBaggage = NameKey }),
			in:          hdr("baggage", "ctx.name=order-1001,u=1"),
			wantName:    "order-1001",
			wantBaggage: []string{"ctx.name=order-1001,u=1"},
		},
		{
			name:        "edge baggage member wins over the edge header",
			opt:         with(func(o *Options) { o.ContextBaggage = "workflow.id"; o.ContextHeader = "X-Workflow-Id" }),
			in:          hdr("X-Workflow-Id", "wf-1", "baggage", "workflow.id=wf-2"),
			wantName:    "wf-2",
			wantBaggage: []string{"workflow.id=wf-2,ctx.name=wf-2"},
		},
		{
			name:        "edge header with an invalid name: no context",
			opt:         with(func(o *Options) { o.ContextHeader = "X-Workflow-Id" }),
			in:          hdr("X-Workflow-Id", "../etc", "baggage", "u=1"),
			wantBaggage: []string{"u=1"},
		},
		{
			name:        "signed context wins over the edge header",
			opt:         with(func(o *Options) { o.ContextHeader = "X-Workflow-Id" }),
			in:          hdr("traceparent", specTP, "X-Workflow-Id", "wf-77", "baggage", "ctx.name=orders-42", "ctx-sig", signed("orders-42")),
			wantName:    "orders-42",
			wantBaggage: []string{"ctx.name=orders-42"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := ReadInbound(tt.in, tt.opt, tt.from)
			if got, want := in.Name, tt.wantName; got != want {
				t.Errorf("Name = %q, want %q", got, want)
			}
			if got, want := in.Flags, tt.wantFlags; !reflect.DeepEqual(got, want) {
				t.Errorf("Flags = %q, want %q", got, want)
			}
			if got, want := in.Refused, tt.wantRefused; got != want {
				t.Errorf("Refused = %v, want %v", got, want)
			}
			if untrusted := tt.wantRefused[Unsigned]+tt.wantRefused[BadSignature]+tt.wantRefused[StaleSignature] > 0; untrusted != (in.Untrusted != nil) {
				t.Errorf("Untrusted = %v, want an error: %v", in.Untrusted, untrusted)
			}
			out := tt.in.Clone()
			in.Apply(out, trace.SpanContext{})
			if got, want := out[Baggage], tt.wantBaggage; !reflect.DeepEqual(got, want) {
				t.Errorf("baggage to the app = %q, want %q", got, want)
			}
			if got, want := out.Get("Ctx-Flag-New-Ui"), tt.wantFlagHdr; got != want {
				t.Errorf("Ctx-Flag-New-Ui = %q, want %q", got, want)
			}
			if v, ok := out[CtxSig]; ok {
				t.Errorf("ctx-sig %q reached the app", v)
			}
			if got, want := in.Entry(), (Entry{Name: tt.wantName, Flags: tt.wantFlags}); !reflect.DeepEqual(got, want) {
				t.Errorf("Entry() = %+v, want %+v", got, want)
			}
		})
	}
}

// TestChain_Signed: what one sidecar's outbound proxy forwards, the next one's inbound
// proxy trusts, with tracing on and off, correlated or sent by the app; and an app's
// own ctx-sig is never forwarded.
func TestChain_Signed(t *testing.T) {
	fleet := mustSigner([]byte("fleet-secret-of-32-bytes-exactly"))
	tid, _ := trace.TraceIDFromHex(specTraceID)
	corr := NewCorrelator(16, 0)
	defer corr.Begin(tid, Entry{Name: "orders-42", Flags: []Flag{{"new-ui", "on"}}})()
	for _, tracing := range []bool{false, true} {
		for _, tt := range []struct {
			name string
			app  http.Header
		}{
			{"correlated", hdr("traceparent", specTP, "ctx-sig", "00-1-00000000000000000000000000000000")},
			{"app's baggage", hdr("traceparent", specTP, "baggage", "ctx.name=orders-42,ctx.flag.new-ui=on,ctx.flag.admin=1")},
			{"no traceparent", hdr("baggage", "ctx.name=orders-42")},
		} {
			opt := Options{Tracing: tracing, Signer: fleet, Pinnable: func(n string) bool { return n == "new-ui" }}
			o, _ := ReadOutbound(tt.app, opt, corr)
			var child trace.SpanContext
			if tracing {
				id := o.Parent.TraceID()
				if !id.IsValid() {
					id = trace.TraceID{7}
				}
				child = trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: trace.SpanID{1}})
			}
			wire := tt.app.Clone()
			o.Apply(wire, child)
			if got := wire.Get(CtxSig); got == "" || got == tt.app.Get(CtxSig) {
				t.Fatalf("tracing %v, %s: ctx-sig %q forwarded, want a new one", tracing, tt.name, got)
			}
			in, errs := ReadInbound(wire, opt, Source{})
			if in.Refused.Any() || in.Name != o.Name || !reflect.DeepEqual(in.Flags, o.Flags) {
				t.Errorf("tracing %v, %s: sent %q %v, the next hop keeps %q %v (refused %v: %v; errors %v)",
					tracing, tt.name, o.Name, o.Flags, in.Name, in.Flags, in.Refused, in.Untrusted, errs)
			}
		}
	}
}

// FuzzCtxSig: any ctx-sig value is refused or verified without a panic, and only the
// value made for exactly these members verifies.
func FuzzCtxSig(f *testing.F) {
	f.Add("00-1795867200-0123456789abcdef0123456789abcdef", "orders-42", "on", int64(1795867200))
	f.Add("00-0-", "", "", int64(0))
	f.Add("00-9223372036854775807-ffffffffffffffffffffffffffffffff", "n", "\t", int64(-1))
	f.Fuzz(func(t *testing.T, value, name, flag string, unix int64) {
		tid, _ := trace.TraceIDFromHex(specTraceID)
		at := time.Unix(unix&(1<<40-1), 0) // clocks run after 1970
		flags := []Flag{{"f", flag}}
		if err := fuzzSigner.Verify([]string{value}, tid, name, flags, at); err == nil && value != fuzzSigner.Sign(tid, name, flags, time.Unix(mustTime(t, value), 0)) {
			t.Fatalf("%q verified for %q %q without being its signature", value, name, flag)
		}
		if err := fuzzSigner.Verify([]string{fuzzSigner.Sign(tid, name, flags, at)}, tid, name, flags, at); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
	})
}

func mustTime(t *testing.T, value string) int64 {
	ts, _, err := parseSig(value)
	if err != nil {
		t.Fatalf("verified a value that does not parse: %v", err)
	}
	return ts
}
