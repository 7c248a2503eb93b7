// Package ops defines the operations an app applies to a context (SPEC §4) and their two
// wire forms: the ctx-ops HTTP header, an RFC 9651 Structured Field List such as
//
//	ctx-ops: incr;key="orders";by=2, put;map="steps";key="pay";value="done";ttl=3600
//
// and the JSON list accepted by POST /v1/contexts/{ctx}/ops:
//
//	[{"op":"incr","key":"orders","by":2},{"op":"put","map":"steps","key":"pay","value":{"ok":true},"ttl":"1h"}]
//
// Both parsers return Ops that pass Validate, so the store can trust them. Parsing is strict:
// an unknown operation or parameter, a missing or wrongly typed one, or a bad name is an
// error naming the item and the parameter, because a silently ignored typo would lose an
// update the app believes it made.
//
// Names (counter keys, map names and keys, set names and members) are 1 to 200 bytes of
// valid UTF-8 without control characters. In the header, a name or string value outside
// printable ASCII travels as an RFC 9651 Display String (%"caf%c3%a9"); Format writes one
// when needed and the parser accepts both forms.
package ops
