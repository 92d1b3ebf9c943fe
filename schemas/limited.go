package schemas

import (
	"errors"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

// ErrTooCostly is wrapped by Limited.Validate's error when checking an
// instance would take more schema evaluations than it was allowed.
var ErrTooCostly = errors.New("too costly to check")

// ErrTooDeep is wrapped, with ErrTooCostly, by Limited.Validate's error
// when the instance is nested deeper than MaxNesting.
var ErrTooDeep = errors.New("nested too deep to check")

// Limited is a compiled schema whose validations are bounded: each counts
// the schemas it evaluates and stops past the limit it was given, so the
// time and memory one check takes are bounded whatever the schema and the
// instance (branches multiplied through references, or through recursion
// on a deeply nested instance). It is for schemas nobody vouches for, such
// as those of registrations; the runner checks its own input with its own
// schema.
//
// A Limited is safe for concurrent use. Validations that need counting
// run one at a time, as the count is the compiled schema's; those of a
// small schema that cannot recurse, whose cost is bounded by the
// instance's size, run at once without it.
type Limited struct {
	mu     sync.Mutex
	schema *jsonschema.Schema // counts its evaluations in count
	count  *evalCount

	// plain is the schema compiled without counting, when it cannot
	// evaluate more than perValue schemas on any value (it does not
	// recurse, and perValue is at most plainExpansion): checks whose
	// bound perValue × values is within their limit need neither the
	// count nor the lock.
	plain    *jsonschema.Schema
	perValue int64

	// quick decides most documents from their bytes, with no decoding
	// and no count: its work is linear in the document's size and the
	// schema's, since the schemas it covers cannot recurse.
	quick *Quick
}

// plainExpansion is the most schemas per value of a schema checked
// without counting, and plainMemory the most its compiled form may take
// (Cost.Memory), as it is compiled twice.
const (
	plainExpansion = 256
	plainMemory    = 256 << 10
)

// evalCount is shared by every schema of one compile; the extension
// counting evaluations increments it.
type evalCount struct {
	left int64
	// weight is what one evaluation costs: the validator's work for one
	// schema grows with how deep the value is (it builds locations from
	// the whole path), so evaluations on a deeply nested instance weigh
	// more.
	weight int64
}

// depthPerWeight is the nesting depth that adds one to an evaluation's
// weight.
const depthPerWeight = 16

// MaxNesting is the deepest instance Limited.Validate checks: the
// validator's work grows with the square of the depth before the first
// schema is charged (each level builds its location from the whole path),
// about half a second at 2000 levels, so a deeper value is refused as too
// costly at once.
const MaxNesting = 256

// budgetExceeded unwinds a validation past its limit; Validate recovers it.
type budgetExceeded struct{}

// CompileLimited compiles a schema document like CompileBytes, for
// bounded validation. A small schema (at most 256 KiB estimated compiled)
// that does not recurse and evaluates at most 256 schemas on any value is
// compiled a second time without counting, for checks that need no count
// (CompiledTwice).
func CompileLimited(name string, schema []byte) (*Limited, error) {
	count := &evalCount{}
	s, err := compile(name, schema, func(c *jsonschema.Compiler) {
		c.RegisterExtension("pnp-evaluation-limit", nil, counter{count})
	})
	if err != nil {
		return nil, err
	}
	l := &Limited{schema: s, count: count}
	doc, err := DecodeJSON(schema)
	if err == nil {
		l.quick = NewQuick(doc, s)
	}
	if err == nil && EstimateCost(doc, len(schema)).Memory() <= plainMemory {
		if n := treeExpansion(doc); n <= plainExpansion {
			if l.plain, err = CompileBytes(name, schema); err != nil {
				return nil, err
			}
			l.perValue = max(n, 1)
		}
	}
	return l, nil
}

// CompiledTwice reports whether the schema is held twice, with and
// without counting, so that its memory is twice its estimate.
func (l *Limited) CompiledTwice() bool { return l.plain != nil }

// Quick decides data from its bytes when the schema is within Quick's
// subset and the document within what Quick decides (see Quick.Check),
// and says Unsure otherwise. Its verdicts are Validate's.
func (l *Limited) Quick(data []byte) Verdict {
	if l.quick == nil {
		return Unsure
	}
	return l.quick.Check(data)
}

// Validate checks v (as DecodeJSON returns it) spending at most limit
// units: one per schema evaluated and per subschema it applies directly,
// one more per 16 levels of the instance's nesting. It returns nil when v
// satisfies the schema, a *jsonschema.ValidationError when it does not
// (Violations lists why), an error wrapping ErrTooCostly when the limit
// was reached first or v is nested deeper than MaxNesting, and the validator's own errors (an infinite loop, a
// value that is not JSON) otherwise. used is the units spent.
func (l *Limited) Validate(v any, limit int64) (used int64, err error) {
	depth, values := nesting(v, 0)
	if depth > MaxNesting {
		return 0, fmt.Errorf("schemas: %w: %w: %d levels, more than %d", ErrTooCostly, ErrTooDeep, depth, MaxNesting)
	}
	weight := 1 + int64(depth)/depthPerWeight
	if l.plain != nil {
		if bound := l.perValue * values * weight; bound <= limit {
			return bound, l.plain.Validate(v)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count.left, l.count.weight = limit, weight
	defer func() {
		used = limit - l.count.left
		if r := recover(); r != nil {
			if _, ok := r.(budgetExceeded); !ok {
				panic(r)
			}
			used = limit
			err = fmt.Errorf("schemas: %w: more than %d schema evaluations", ErrTooCostly, limit)
		}
	}()
	return 0, l.schema.Validate(v)
}

// counter is a keyword extension present in every schema of a compile:
// the validator calls it once per evaluation of the schema, after the
// schema's own keywords. It charges the evaluation and the subschemas the
// schema applies directly (each branch, reference and, per member or item
// of the value, each keyword applying to members or items), since a
// subschema that rejects the value's type ends without calling it.
// Charging only after the work overshoots the limit by at most one
// schema's direct work.
type counter struct{ c *evalCount }

func (k counter) Compile(_ jsonschema.CompilerContext, m map[string]any) (jsonschema.ExtSchema, error) {
	n := node{c: k.c, self: 1}
	for kw, v := range m {
		switch kw {
		case "allOf", "anyOf", "oneOf":
			if a, ok := v.([]any); ok {
				n.self += int64(len(a))
			}
		case "not", "if", "then", "else", "$ref", "$dynamicRef", "$recursiveRef":
			n.self++
		case "dependentSchemas", "dependencies":
			if sm, ok := v.(map[string]any); ok {
				n.self += int64(len(sm))
			}
		case "properties", "additionalProperties", "propertyNames", "unevaluatedProperties",
			"items", "prefixItems", "additionalItems", "contains", "unevaluatedItems":
			n.perMember++
		case "patternProperties":
			if sm, ok := v.(map[string]any); ok {
				n.perMember += int64(len(sm))
			}
		}
	}
	return n, nil
}

// node charges one evaluation of one schema.
type node struct {
	c         *evalCount
	self      int64 // the schema and its direct subschemas on the same value
	perMember int64 // subschemas per member or item of the value
}

func (n node) Validate(_ jsonschema.ValidationContext, v any) error {
	cost := n.self
	switch v := v.(type) {
	case map[string]any:
		cost += n.perMember * int64(len(v))
	case []any:
		cost += n.perMember * int64(len(v))
	}
	n.c.left -= cost * n.c.weight
	if n.c.left < 0 {
		panic(budgetExceeded{})
	}
	return nil
}

// nesting returns the depth of v's deepest value (depth is v's own) and
// the number of values in v, v included.
func nesting(v any, depth int) (deepest int, values int64) {
	deepest, values = depth, 1
	switch v := v.(type) {
	case map[string]any:
		for _, c := range v {
			if isScalar(c) {
				deepest, values = max(deepest, depth+1), values+1
				continue
			}
			d, n := nesting(c, depth+1)
			deepest, values = max(deepest, d), values+n
		}
	case []any:
		for _, c := range v {
			if isScalar(c) {
				deepest, values = max(deepest, depth+1), values+1
				continue
			}
			d, n := nesting(c, depth+1)
			deepest, values = max(deepest, d), values+n
		}
	}
	return deepest, values
}

func isScalar(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return false
	}
	return true
}
