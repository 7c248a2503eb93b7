package flags

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// Flag sets and selectors, as flagd has them since 0.13 (docs: concepts/selectors.md,
// reference/selector-syntax.md, concepts/metadata.md; ADRs "Decouple flag sync sources and
// flag sets" and "Support for Duplicate Flag Keys"):
//
//   - A flag belongs to the flag set named by metadata.flagSetId, its own or inherited from
//     its file's metadata; without one it belongs to no flag set. A flag is identified by
//     its flag set and key, so one key may be defined in several sets (in one file with the
//     array form of "flags", or in several sources).
//   - Without a selector, a key evaluates to its definition of highest precedence: the API's,
//     then a later file's over an earlier file's, as before flag sets; within one source,
//     the one whose flag set ID sorts last (flagd keeps the last of its key index, which is
//     ordered by flag set ID).
//   - The Flagd-Selector request header narrows both OFREP evaluations to one flag set
//     ("flagSetId=payments"; "flagSetId=" is the flags of no set) or one source
//     ("source=flags.json", or the bare "flags.json" that older providers send), and the
//     same precedence picks among what remains. A flag outside the selection is
//     FLAG_NOT_FOUND.
//   - The selector is reflected in the metadata, as flagd does: under each flag's own
//     metadata, and at the top of the bulk answer, where ctxprop also puts the flag set
//     metadata of the files the answer's flags come from (see bulkMetadata).

// HeaderSelector is the request header that selects the flags an OFREP evaluation sees.
const HeaderSelector = "Flagd-Selector"

// ranked is a definition serving, with the precedence of its source: the file's index in
// Options.Files, or len(Files) for the API.
type ranked struct {
	*Flag
	rank int
}

// sortRanked orders by key, then by precedence, lowest first: the last of a key is the one
// that serves without a selector.
func sortRanked(all []ranked) {
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		return a.FlagSetID < b.FlagSetID
	})
}

// digestOfAll covers every definition serving, its flag set, source and inherited metadata,
// so that a change to a flag only a selector reaches, or to a file's metadata, is a change.
func digestOfAll(all []ranked) string {
	h := sha256.New()
	for _, r := range all {
		meta, _ := json.Marshal(r.Metadata) // keys sorted
		for _, part := range [][]byte{[]byte(r.Key), []byte(r.Source), []byte(r.FlagSetID), r.definition, meta} {
			h.Write(part)
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// selector is a parsed Flagd-Selector: at most one constraint, as flagd has it.
type selector struct {
	hasSet    bool
	set       string // "" with hasSet: the flags of no flag set
	hasSource bool
	source    string
}

func (s selector) empty() bool { return !s.hasSet && !s.hasSource }

// parseSelector reads the Flagd-Selector header of r. Like flagd it takes one key=value
// pair, split at the first "="; a value without "=" is a source. Unlike flagd, which
// answers an unknown key with a failed query, it refuses what it cannot apply, naming the
// header, and it refuses more than one header line, since flagd would use the first and
// drop the rest without a word.
func parseSelector(r *http.Request) (selector, error) {
	values := r.Header.Values(HeaderSelector)
	if len(values) > 1 {
		return selector{}, fmt.Errorf("%d %s headers; send one selector, such as flagSetId=<flag set>", len(values), HeaderSelector)
	}
	if len(values) == 0 || strings.TrimSpace(values[0]) == "" {
		return selector{}, nil
	}
	expr := strings.TrimSpace(values[0])
	key, value, ok := strings.Cut(expr, "=")
	if !ok {
		key, value = "source", expr
	}
	switch key {
	case "flagSetId":
		return selector{hasSet: true, set: value}, nil
	case "source":
		if value == "" {
			return selector{}, fmt.Errorf("%s %q names no source; use source=<flag file path> or source=api", HeaderSelector, expr)
		}
		return selector{hasSource: true, source: value}, nil
	}
	return selector{}, fmt.Errorf("%s %q: unknown key %q; a selector is flagSetId=<flag set>, source=<flag file path> or a bare flag file path", HeaderSelector, expr, key)
}

// matches reports whether fl is in the selection. A source is named by its Source
// ("file:<path>", "api") or, as flagd names file sources, by the path alone.
func (s selector) matches(fl *Flag) bool {
	if s.hasSet && fl.FlagSetID != s.set {
		return false
	}
	if s.hasSource && fl.Source != s.source && fl.Source != "file:"+s.source {
		return false
	}
	return true
}

// String describes the selection in messages.
func (s selector) String() string {
	switch {
	case s.hasSet:
		return setName(s.set)
	case s.hasSource:
		return fmt.Sprintf("source %q", s.source)
	}
	return "every flag"
}

// reflect is the selector as metadata, as flagd returns it ("flagSetId", "source"); the
// selection of no flag set has no ID to reflect.
func (s selector) reflect() map[string]any {
	m := map[string]any{}
	if s.hasSet && s.set != "" {
		m["flagSetId"] = s.set
	}
	if s.hasSource {
		m["source"] = s.source
	}
	return m
}

// lookup returns the definition of key that serves under sel, or nil.
func (s *snapshot) lookup(key string, sel selector) *Flag {
	if sel.empty() {
		return s.flags[key]
	}
	i := sort.Search(len(s.all), func(i int) bool { return s.all[i].Key >= key })
	var found *Flag
	for ; i < len(s.all) && s.all[i].Key == key; i++ {
		if sel.matches(s.all[i].Flag) {
			found = s.all[i].Flag // sorted: the last match has precedence
		}
	}
	return found
}

// selected returns, sorted by key, the definition of each key that serves under sel.
func (s *snapshot) selected(sel selector) []*Flag {
	out := make([]*Flag, 0, len(s.keys))
	if sel.empty() {
		for _, k := range s.keys {
			out = append(out, s.flags[k])
		}
		return out
	}
	for _, r := range s.all {
		if !sel.matches(r.Flag) {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Key == r.Key {
			out[n-1] = r.Flag // sorted: a later one has precedence
			continue
		}
		out = append(out, r.Flag)
	}
	return out
}

// withSelector returns res with the selector reflected under its own metadata, as flagd's
// evaluations carry it. res.Metadata is shared with the flag: it is copied, not changed.
func withSelector(res Result, sel selector) Result {
	if sel.empty() {
		return res
	}
	m := sel.reflect()
	for k, v := range res.Metadata {
		m[k] = v
	}
	if len(m) > 0 {
		res.Metadata = m
	}
	return res
}

// bulkMetadata is the top-level metadata of a bulk answer (OFREP's flag set metadata) for
// the flags answered:
//
//   - the metadata of the files the flags come from (flagd's flag set metadata, which each
//     of their flags inherits), merged; a key two of those files give different values is
//     left out, since no one value holds for the answer (flagd 0.12 did the same);
//   - "flagSetId": the flag set every flag answered belongs to, if they share one (a file's
//     flagSetId is not every one of its flags' when a flag names its own);
//   - the selector, reflected as flagd does ("flagSetId", "source"), over the rest.
//
// flagd since 0.13 answers the reflected selector alone; its documentation (concepts/
// metadata.md, reference/selector-syntax.md) describes the set-level metadata as part of
// the answer too, and that is what an OFREP web provider falls back to for a flag's
// metadata.
func (s *snapshot) bulkMetadata(answered []*Flag, sel selector) map[string]any {
	meta := map[string]any{}
	conflict := map[string]bool{}
	seen := map[string]bool{}
	setID, oneSet := "", true
	for i, fl := range answered {
		if i == 0 {
			setID = fl.FlagSetID
		} else if fl.FlagSetID != setID {
			oneSet = false
		}
		if seen[fl.Source] {
			continue
		}
		seen[fl.Source] = true
		for k, v := range s.setMeta[fl.Source] {
			if old, ok := meta[k]; ok && old != v {
				conflict[k] = true
			}
			meta[k] = v
		}
	}
	for k := range conflict {
		delete(meta, k)
	}
	delete(meta, "flagSetId")
	if oneSet && setID != "" && len(answered) > 0 {
		meta["flagSetId"] = setID
	}
	for k, v := range sel.reflect() {
		meta[k] = v
	}
	return meta
}
