// Package flags serves feature flags (SPEC §6): flagd-format definitions from files and
// from a replicated context, evaluated with flagd's semantics, served on the admin
// listener by OFREP, and pinned at the edge of a request chain.
//
// # Sources and precedence
//
// Flags come from flag files (config flags.files; flagd's format, {"flags": {...},
// "$evaluators": {...}, "metadata": {...}}, with {"$ref"} to shared rules), reread when they
// change, and from the admin API (PUT/DELETE /v1/flags/{key}), which stores each definition
// as an entry of map "flags" of the context "ctxprop.flags". That context replicates like
// any other, so a flag set on one sidecar reaches every sidecar. Of two definitions of one
// key, the API's wins over a file's, and a later file's over an earlier file's: the API is
// how an operator overrides what was deployed, without a redeploy.
//
// An invalid definition is refused with the field named (a *DefinitionError); the last good
// definition of that flag keeps serving. A file that is not a flag file at all keeps its
// last good flags. GET /v1/flags lists what was refused.
//
// # Flag sets
//
// As in flagd since 0.13, a flag belongs to the flag set its metadata.flagSetId names (its
// own, or inherited from its file's metadata) and is identified by set and key; a file's
// "flags" may be an array of definitions with their "key", so one key can be defined in
// several sets. The Flagd-Selector request header narrows an OFREP evaluation to a flag set
// ("flagSetId=payments"; "flagSetId=" for the flags of no set) or a source ("source=path",
// or the bare path older providers send). Without one, a key evaluates to its definition of
// highest precedence, as above; within one source, the set ID that sorts last. A flag's
// metadata is its file's under its own, with the selector reflected; the bulk answer's
// top-level metadata is the flag set metadata of the files answered, the set its flags
// share and the selector. See flagsets.go.
//
// # Evaluation
//
// Targeting is JsonLogic (evaluated by this package: the standard operations plus flagd's
// fractional, sem_ver, starts_with and ends_with). The rule sees the evaluation context
// and "$flagd": {"flagKey", "timestamp"}. Rules are bounded: nesting to 64 levels, an
// evaluation to 100 000 operations. See Flag.Evaluate for the reasons and error codes.
// The operations give what flagd's JsonLogic (github.com/diegoholiveira/jsonlogic/v3)
// gives, not jsonlogic.com's JavaScript where the two differ; the tests compare them
// (jsonlogic_flagd_test.go) and pin the few deliberate differences.
//
// fractional follows flagd ≥ 0.15: the bucketing key (its first argument when it is a
// string, else $flagd.flagKey followed by the targetingKey) is hashed with 32-bit murmur3,
// and the hash h, unsigned, picks bucket (h × total weight) >> 32; each variant covers its
// weight's run of buckets, in order. The same key gets the same variant on every sidecar
// and in flagd (assignments changed with flagd 0.15, which is when ctxprop followed).
//
// A flag whose defaultVariant is null or absent answers, where the default would apply,
// reason DEFAULT without a value: the caller uses its code default (flagd ≥ 0.14).
//
// A DISABLED flag evaluates to reason DISABLED with no value: OpenFeature's DISABLED means
// the caller uses its code default, and OFREP (ADR-0006) lets a success carry no value for
// that. flagd before 0.12 answered FLAG_NOT_FOUND instead, which an SDK reports as an
// error; ctxprop does not, since disabling a flag is not a fault.
//
// A rule may also give SPLIT: when the variant chosen is the one fractional chose. flagd
// reports TARGETING_MATCH there; OpenFeature defines SPLIT for exactly this case.
//
// # OFREP
//
// POST /ofrep/v1/evaluate/flags/{key} and POST /ofrep/v1/evaluate/flags evaluate one or
// every flag for {"context": {...}}. Success is 200 with {"key","value","variant","reason",
// "metadata"} (bulk: {"flags": [...]}, failed flags in the list with their errorCode);
// FLAG_NOT_FOUND is 404; PARSE_ERROR, INVALID_CONTEXT, TARGETING_KEY_MISSING and GENERAL
// are 400. A DISABLED flag is reason DISABLED without a value in the bulk list (OFREP
// ADR-0006: the caller's default), and 404 FLAG_NOT_FOUND "flag is DISABLED" for a single
// evaluation, as flagd answers it, since the published server provider refuses a success
// without a value. Every success carries an ETag covering the flag configuration, the
// context and the answer; If-None-Match with it gives 304. GET /ofrep/v1/events is a
// Server-Sent Events stream with a {"type":"refetchEvaluation"} message on each change
// (OFREP ADR-0008); both answers point to it in eventStreams.
//
// # Pinning
//
// Flags.Pin evaluates the configured pinned flags for an inbound request that does not
// carry them and adds them to the chain's pinned flags; the headers package carries them
// downstream as baggage ctx.flag.<name> and gives them to the app as Ctx-Flag-<name>.
//
// # Lifecycle
//
// New builds; Open loads the files and the store's flags and starts following both;
// Register mounts the routes on the admin server; Close stops, and must come before the
// admin server's Close, which waits for open event streams.
package flags
