package flags_test

import (
	"fmt"
	"time"

	"github.com/ctxprop/ctxprop/flags"
)

func ExampleParseFlag() {
	f, err := flags.ParseFlag("new-checkout", []byte(`{
		"state": "ENABLED",
		"variants": {"on": true, "off": false},
		"defaultVariant": "off",
		"targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]}
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Now()
	for _, email := range []string{"ann@example.com", "bob@else.org"} {
		r := f.Evaluate(map[string]any{"email": email}, now)
		fmt.Println(email, string(r.Value), r.Variant, r.Reason)
	}

	_, err = flags.ParseFlag("new-checkout", []byte(`{"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "of"}`))
	fmt.Println(err)
	// Output:
	// ann@example.com true on TARGETING_MATCH
	// bob@else.org false off DEFAULT
	// flag "new-checkout": defaultVariant: "of" is not one of the variants (on)
}

func ExampleFlag_Evaluate_fractional() {
	f, _ := flags.ParseFlag("headerColor", []byte(`{
		"state": "ENABLED",
		"variants": {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"},
		"defaultVariant": "red",
		"targeting": {"fractional": [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]}
	}`))
	// The same targetingKey lands on the same variant on every sidecar, as in flagd ≥ 0.15.
	for _, user := range []string{"rachel", "monica", "rachel"} {
		r := f.Evaluate(map[string]any{"targetingKey": user}, time.Now())
		fmt.Println(user, r.Variant, r.Reason)
	}
	r := f.Evaluate(map[string]any{}, time.Now())
	fmt.Println(r.ErrorCode)
	// Output:
	// rachel yellow SPLIT
	// monica blue SPLIT
	// rachel yellow SPLIT
	// TARGETING_KEY_MISSING
}
