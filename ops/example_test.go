package ops_test

import (
	"fmt"

	"github.com/ctxprop/ctxprop/ops"
)

func ExampleParseHeader() {
	list, err := ops.ParseHeader(`incr;key="orders";by=2, put;map="steps";key="pay";value="done";ttl=3600, add;set="regions";member="eu-west"`)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, op := range list {
		switch op.Kind {
		case ops.Incr:
			fmt.Printf("%s %s by %d\n", op.Kind, op.Key, op.By)
		case ops.Put:
			fmt.Printf("%s %s[%s] = %s for %s\n", op.Kind, op.Map, op.Key, op.Value, op.TTL)
		case ops.Add:
			fmt.Printf("%s %q to %s\n", op.Kind, op.Member, op.Set)
		}
	}

	_, err = ops.ParseHeader(`incr;key="orders", put;map="steps";value=1`)
	fmt.Println(err)
	// Output:
	// incr orders by 2
	// put steps[pay] = "done" for 1h0m0s
	// add "eu-west" to regions
	// ctx-ops item 2 (put): parameter "key" missing; want put;map="m";key="k";value=...
}

func ExampleFormat() {
	s, err := ops.Format([]ops.Op{
		{Kind: ops.Incr, Key: "orders", By: 2},
		{Kind: ops.Put, Map: "steps", Key: "pay", Value: []byte(`"done"`)},
	})
	fmt.Println(s, err)
	// Output: incr;key="orders";by=2, put;map="steps";key="pay";value="done" <nil>
}
