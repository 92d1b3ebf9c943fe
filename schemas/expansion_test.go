package schemas_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/pnpworker/pnpworker/schemas"
)

// chain is a schema of depth levels, each an anyOf of two $refs to the
// next: 2^(depth+1) evaluations on every value.
func chain(depth int) string {
	var b strings.Builder
	b.WriteString(`{"$ref":"#/$defs/d0","$defs":{`)
	for i := range depth {
		fmt.Fprintf(&b, `"d%d":{"anyOf":[{"$ref":"#/$defs/d%d"},{"$ref":"#/$defs/d%d"}]},`, i, i+1, i+1)
	}
	fmt.Fprintf(&b, `"d%d":{"type":"string"}}}`, depth)
	return b.String()
}

// manyDynamic has n schemas with one dynamic anchor, each with a
// $dynamicRef to it under items.
func manyDynamic(n int) string {
	var b strings.Builder
	b.WriteString(`{"$defs":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"s%d":{"$dynamicAnchor":"x","items":{"$dynamicRef":"#x"}}`, i)
	}
	b.WriteString(`}}`)
	return b.String()
}

// Expansion counts the schemas evaluated on one value, multiplying
// branches through references, whatever form the references take.
func TestExpansion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		schema string
		want   int64
	}{
		{"empty", `{}`, 1},
		{"boolean", `true`, 0},
		{"properties count for their own values", `{"properties":{"a":{"type":"string"},"b":{"anyOf":[{},{}]}}}`, 3},
		{"anyOf of two", `{"anyOf":[{"type":"string"},{"type":"number"}]}`, 3},
		{"if then else all count", `{"if":{},"then":{},"else":{},"not":{}}`, 5},
		{"allOf through a ref", `{"allOf":[{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"}],"$defs":{"a":{"anyOf":[{},{},{}]}}}`, 1 + 2*(1+4)},
		{"chain of 3", chain(3), 1 + (1 + 2*(1+(1+2*(1+(1+2*(1+1))))))},
		{"chain of 17", chain(17), 1<<19 - 2},
		{"anchor", `{"anyOf":[{"$ref":"#x"},{"$ref":"#x"}],"$defs":{"a":{"$anchor":"x","anyOf":[{},{}]}}}`, 1 + 2*(1+3)},
		{"draft-7 id anchor", `{"$schema":"http://json-schema.org/draft-07/schema#","anyOf":[{"$ref":"#x"},{"$ref":"#x"}],"definitions":{"a":{"$id":"#x","anyOf":[{},{}]}}}`, 1 + 2*(1+3)},
		{"relative $id", `{"$id":"https://example.com/root.json","anyOf":[{"$ref":"sub.json"},{"$ref":"sub.json#/$defs/b"}],"$defs":{"s":{"$id":"sub.json","allOf":[{}],"$defs":{"b":{"anyOf":[{},{},{}]}}}}}`, 1 + (1 + 2) + (1 + 4)},
		{"escaped pointer", `{"$ref":"#/$defs/a~1b","$defs":{"a/b":{"oneOf":[{},{}]}}}`, 1 + 3},
		{"other document counts one", `{"anyOf":[{"$ref":"https://example.com/x.json"}]}`, 3},
		{"dynamicRef takes the costliest anchor", `{"$dynamicAnchor":"n","$ref":"#/$defs/u","$defs":{"u":{"$dynamicRef":"#n"},"big":{"$dynamicAnchor":"n","anyOf":[{},{},{},{}]}}}`, -1},
		{"dynamic recursion through properties is per value", `{"$dynamicAnchor":"node","type":"object","properties":{"kids":{"type":"array","items":{"$dynamicRef":"#node"}}}}`, 2},
		{"many dynamic references to many anchors", manyDynamic(300), 2},
		{"recursion through items is per value", `{"$defs":{"t":{"anyOf":[{"type":"string"},{"items":{"$ref":"#/$defs/t"}}]}},"$ref":"#/$defs/t"}`, 1 + 3},
		{"a cycle on the same value", `{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`, schemas.MaxExpansion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := schemas.DecodeJSON([]byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			got := schemas.Expansion(v)
			if tc.want < 0 {
				// Bounded below by the costliest resolution.
				if got < 5 {
					t.Fatalf("expansion %d, want at least the costliest dynamic anchor's 5", got)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("expansion %d, want %d", got, tc.want)
			}
		})
	}
}

// A limited validation stops past its limit, whatever makes it costly:
// branches multiplied through references, or recursion on a deeply nested
// instance; within the limit it gives the validator's verdict.
func TestLimitedValidationStopsAtItsLimit(t *testing.T) {
	recursive := `{"$defs":{"t":{"type":"array","items":{"$ref":"#/$defs/t"}}},"$ref":"#/$defs/t"}`
	deep := func(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name, schema, instance string
		limit                  int64
		want                   string // "", "invalid" or "costly"
	}{
		{"valid", `{"type":"object","properties":{"a":{"type":"string"}}}`, `{"a":"x"}`, 100, ""},
		{"invalid", `{"type":"object","properties":{"a":{"type":"string"}}}`, `{"a":1}`, 100, "invalid"},
		{"a chain of 17 anyOf", chain(17), `{}`, 10_000, "costly"},
		{"a chain of 17 anyOf, even when valid", chain(17), `"x"`, 10_000, "costly"},
		{"a shallow recursion", recursive, deep(3), 1000, "invalid"},
		{"a deep recursion", recursive, deep(200), 2000, "costly"},
		{"too deep to check", `{}`, deep(schemas.MaxNesting + 1), 1 << 40, "deep"},
		{"type mismatches are charged to their parent", `{"anyOf":[` + strings.Repeat(`{"type":"null"},`, 999) + `{"type":"null"}]}`, `1`, 500, "costly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := schemas.CompileLimited("limited.json", []byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			v, err := schemas.DecodeJSON([]byte(tc.instance))
			if err != nil {
				t.Fatal(err)
			}
			used, err := l.Validate(v, tc.limit)
			got := ""
			switch {
			case errors.Is(err, schemas.ErrTooDeep) && errors.Is(err, schemas.ErrTooCostly):
				got = "deep"
			case errors.Is(err, schemas.ErrTooCostly):
				got = "costly"
			case schemas.Violations(err) != nil:
				got = "invalid"
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
			if used < 0 || used > tc.limit || (used == 0 && got != "deep") {
				t.Fatalf("used %d units, limit %d", used, tc.limit)
			}
		})
	}
}

// Concurrent checks of one schema, counted and not, each get their own
// verdict and their own limit.
func TestLimitedConcurrentChecks(t *testing.T) {
	for _, tc := range []struct{ name, schema, good, bad string }{
		{"small, not counted", `{"type":"object","properties":{"a":{"type":"string"}}}`, `{"a":"x"}`, `{"a":1}`},
		{"branching, counted", chain(8), `"x"`, `1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := schemas.CompileLimited("concurrent.json", []byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			good, _ := schemas.DecodeJSON([]byte(tc.good))
			bad, _ := schemas.DecodeJSON([]byte(tc.bad))
			var wg sync.WaitGroup
			errs := make(chan error, 400)
			for i := range 400 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, limit := good, int64(1<<20)
					if i%2 == 1 {
						v = bad
					}
					if i%4 >= 2 {
						limit = 1 // too little for anything
					}
					_, err := l.Validate(v, limit)
					var ok bool
					switch {
					case limit == 1:
						ok = errors.Is(err, schemas.ErrTooCostly)
					case i%2 == 0:
						ok = err == nil
					default:
						ok = schemas.Violations(err) != nil
					}
					if !ok {
						errs <- fmt.Errorf("check %d (limit %d): %v", i, limit, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
