package admin

// fastIncr decodes the body of POST .../counters/{key} when it is in the plain form every
// client sends ({"by":5}, {"ttl":"1h","by":-2}, {}), without encoding/json's reflection:
// the admin API's durable writes are measured against a handler that stores nothing
// (issue 14), and this decode was a tenth of the handler's own cost. It accepts a strict
// subset of what encoding/json accepts into incrRequest, decoded to the same value
// (TestFastIncr_Differential, FuzzFastIncr): the exact names "by" and "ttl" at most once
// each, "by" a plain integer of at most 18 digits, "ttl" a string of printable ASCII with
// no escapes, JSON whitespace around tokens and after the object. Anything else, valid or
// not, is ok=false, and the caller decodes with encoding/json, whose answers (values and
// error messages) are thereby unchanged.
func fastIncr(b []byte) (req plainIncr, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return req, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return req, skipSpace(b, i+1) == len(b)
	}
	var seenTTL bool
	for {
		var name []byte
		if name, i, ok = plainString(b, i); !ok {
			return plainIncr{}, false
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return plainIncr{}, false
		}
		i = skipSpace(b, i+1)
		switch {
		case string(name) == "by" && !req.hasBy:
			if req.by, i, ok = plainInt(b, i); !ok {
				return plainIncr{}, false
			}
			req.hasBy = true
		case string(name) == "ttl" && !seenTTL:
			var ttl []byte
			if ttl, i, ok = plainString(b, i); !ok {
				return plainIncr{}, false
			}
			req.ttl, seenTTL = string(ttl), true
		default:
			return plainIncr{}, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return plainIncr{}, false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return plainIncr{}, false
		}
		i = skipSpace(b, i+1)
	}
	if skipSpace(b, i+1) != len(b) {
		return plainIncr{}, false
	}
	return req, true
}

// plainIncr is an increment's body as fastIncr reads it: incrRequest without its pointer,
// which made every decode allocate. hasBy says whether "by" was given.
type plainIncr struct {
	by    int64
	hasBy bool
	ttl   string
}

// skipSpace returns the index of the first byte at or after i that is not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at b[i] made of printable ASCII without escapes, and
// returns its contents and the index after its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	start := i + 1
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[start:j], j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, i, false
		}
	}
	return nil, i, false
}

// plainInt reads a JSON integer at b[i] (an optional minus, then 0 or a non-zero digit
// and at most 17 more: always within int64) that no fraction or exponent follows.
func plainInt(b []byte, i int) (int64, int, bool) {
	j := i
	neg := j < len(b) && b[j] == '-'
	if neg {
		j++
	}
	start := j
	var v int64
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		v = v*10 + int64(b[j]-'0')
		j++
	}
	n := j - start
	if n == 0 || n > 18 || (n > 1 && b[start] == '0') {
		return 0, i, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, i, false
	}
	if neg {
		v = -v
	}
	return v, j, true
}
