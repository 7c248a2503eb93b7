package headers

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// CtxSig is the header in which a sidecar's outbound proxy vouches for the context
// members it forwards (SPEC §4a), in canonical form:
//
//	ctx-sig: 00-<unix seconds>-<32 lowercase hex digits>
//
// The hex digits are the first 16 bytes of an HMAC-SHA256, under a key derived from the
// fleet's secret (sync.key_file), of the time, the trace-id of the forwarded
// traceparent and every ctx.* member of the forwarded baggage. The receiving sidecar
// recomputes it: a match shows that a sidecar of the same fleet sent exactly these
// members on exactly this trace, at about this time. It is stripped before the app sees
// the request and replaced on the way out, so it never travels further than one hop.
const CtxSig = "Ctx-Sig"

// MaxSignatureSkew is how far the time in a ctx-sig may be from the receiver's clock.
// A signature is made when the request leaves the sending sidecar and checked when it
// arrives, so the window only has to cover clock skew between nodes and transit; it
// bounds how long a captured signature can be replayed (on the same trace, with the
// same members: nothing else verifies).
const MaxSignatureSkew = 5 * time.Minute

// The reasons a ctx-sig does not verify, wrapped in the error Verify returns.
var (
	ErrSigMalformed = errors.New("malformed ctx-sig")
	ErrSigMismatch  = errors.New("ctx-sig does not match")
	ErrSigStale     = errors.New("ctx-sig time out of range")
)

// sigInfo separates the key that signs context from every other use of the fleet's
// secret (memberlist encrypts peer traffic with the same secret).
const sigInfo = "ctxprop ctx-sig 00"

// macLen is the length of the truncated HMAC (RFC 2104 §5 allows truncation to half
// the hash output; 128 bits is far beyond what an online forgery can try).
const macLen = 16

// Signer makes and checks ctx-sig values for one fleet. It holds keys derived from the
// fleet's secrets: it signs with the first and accepts any of them, so the secret can
// be rotated the way the sync keyring is (add the new one second, roll, swap, roll,
// remove the old). It is safe for concurrent use.
type Signer struct {
	keys []*sigKey
}

type sigKey struct {
	pool sync.Pool // of *macState, each an HMAC keyed with this key
}

// macState is one reusable HMAC with the buffers to feed and read it without
// allocating on the request path.
type macState struct {
	h   hash.Hash
	msg []byte
	sum []byte
}

// NewSigner returns a Signer for the fleet secrets (the keyring of sync.key_file, the
// first one used to sign). Each secret must be at least 16 bytes.
func NewSigner(secrets [][]byte) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("headers: no secret to sign context with; set sync.key_file")
	}
	s := &Signer{}
	for i, secret := range secrets {
		if len(secret) < 16 {
			return nil, fmt.Errorf("headers: secret %d is %d bytes, want at least 16", i+1, len(secret))
		}
		key, err := hkdf.Key(sha256.New, secret, nil, sigInfo, sha256.Size)
		if err != nil {
			return nil, fmt.Errorf("headers: derive the ctx-sig key: %w", err)
		}
		k := &sigKey{}
		k.pool.New = func() any {
			return &macState{h: hmac.New(sha256.New, key), msg: make([]byte, 0, 256), sum: make([]byte, 0, sha256.Size)}
		}
		s.keys = append(s.keys, k)
	}
	return s, nil
}

// Sign returns the ctx-sig value for the members name and flags (flags sorted by name,
// as ReadInbound and ReadOutbound hold them) forwarded on trace traceID at time now. An
// empty name means no ctx.name member; an invalid traceID means no traceparent.
func (s *Signer) Sign(traceID trace.TraceID, name string, flags []Flag, now time.Time) string {
	var mac [macLen]byte
	t := now.Unix()
	s.keys[0].mac(&mac, t, traceID, name, flags)
	var b [3 + 20 + 1 + 2*macLen]byte
	v := append(b[:0], "00-"...)
	v = strconv.AppendInt(v, t, 10)
	v = append(v, '-')
	v = append(v, make([]byte, 2*macLen)...)
	encodeHex(v[len(v)-2*macLen:], mac[:])
	return string(v)
}

// Verify checks value, the ctx-sig lines of a request, against the members read from
// its baggage and the trace-id of its traceparent, at time now. It returns nil when a
// key of the fleet made it within MaxSignatureSkew of now, and otherwise an error
// wrapping ErrSigMalformed, ErrSigMismatch or ErrSigStale.
func (s *Signer) Verify(values []string, traceID trace.TraceID, name string, flags []Flag, now time.Time) error {
	if len(values) != 1 {
		return fmt.Errorf("%w: %d header lines, want exactly one", ErrSigMalformed, len(values))
	}
	t, mac, err := parseSig(values[0])
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(t, 0)); d > MaxSignatureSkew || d < -MaxSignatureSkew {
		return fmt.Errorf("%w: signed at %s, %s from this sidecar's clock, more than %s; check the clocks of the nodes (NTP)",
			ErrSigStale, time.Unix(t, 0).UTC().Format(time.RFC3339), d.Round(time.Second), MaxSignatureSkew)
	}
	var want [macLen]byte
	for _, k := range s.keys {
		k.mac(&want, t, traceID, name, flags)
		if hmac.Equal(want[:], mac[:]) {
			return nil
		}
	}
	return fmt.Errorf("%w the members and trace-id under any key of this sidecar: not sent by a sidecar of this fleet, or sync.key_file differs between sidecars", ErrSigMismatch)
}

// parseSig reads "00-<unix seconds>-<32 hex>" strictly: version 00, a decimal time of
// 1 to 19 digits without sign or leading zero, lowercase hex.
func parseSig(v string) (t int64, mac [macLen]byte, err error) {
	fail := func(why string) (int64, [macLen]byte, error) {
		if len(v) > 80 {
			v = v[:80] + "…"
		}
		return 0, mac, fmt.Errorf("%w: %q: %s; want 00-<unix seconds>-<32 lowercase hex digits>", ErrSigMalformed, v, why)
	}
	if len(v) < 3 || v[:3] != "00-" {
		return fail("version is not 00")
	}
	rest := v[3:]
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i > 19 || (i > 1 && rest[0] == '0') {
		return fail("the time is not a decimal number of seconds")
	}
	t, perr := strconv.ParseInt(rest[:i], 10, 64)
	if perr != nil {
		return fail("the time is out of range")
	}
	rest = rest[i:]
	if len(rest) != 1+2*macLen || rest[0] != '-' || !decodeHex(mac[:], rest[1:]) {
		return fail("the MAC is not 32 lowercase hex digits")
	}
	return t, mac, nil
}

// mac computes the truncated HMAC of the signed message into dst. The message is one
// line per field, and no field can hold a newline (context names and flag values are
// checked, flag names are tokens), so two different member sets never share a message.
func (k *sigKey) mac(dst *[macLen]byte, t int64, traceID trace.TraceID, name string, flags []Flag) {
	st := k.pool.Get().(*macState)
	m := append(st.msg[:0], sigInfo...)
	m = append(m, '\n')
	m = strconv.AppendInt(m, t, 10)
	m = append(m, '\n')
	if traceID.IsValid() {
		n := len(m)
		m = append(m, make([]byte, 32)...)
		encodeHex(m[n:], traceID[:])
	}
	m = append(m, "\nctx.name="...)
	m = append(m, name...)
	m = append(m, '\n')
	for _, f := range flags {
		m = append(m, FlagKeyPrefix...)
		m = append(m, f.Name...)
		m = append(m, '=')
		m = append(m, f.Value...)
		m = append(m, '\n')
	}
	st.h.Reset()
	st.h.Write(m)
	st.sum = st.h.Sum(st.sum[:0])
	copy(dst[:], st.sum)
	if cap(m) <= 4096 { // keep the grown buffer, unless a huge baggage made it so
		st.msg = m[:0]
	}
	k.pool.Put(st)
}
