package schemas

import (
	"regexp/syntax"
)

// Cost estimates what compiling a schema document takes: the compiled form
// of a schema grows with its size, and each regular expression ("pattern",
// the keys of "patternProperties") costs in proportion to its compiled
// program and character classes, which can be far more than its text:
// `^[\pL\pN]{1,30}$` is 16 bytes and compiles to about half a megabyte.
//
// Readers of untrusted schemas (registrations) refuse documents whose cost
// exceeds their limits before compiling them, and bound caches by Memory.
type Cost struct {
	// Bytes is the size of the document.
	Bytes int
	// Patterns counts the regular expressions in the document.
	Patterns int
	// RegexpBytes estimates the heap the compiled regular expressions
	// hold.
	RegexpBytes int64
	// Expansion is the most schemas validation may evaluate on one value
	// of an instance (see Expansion): what validating costs, where the
	// other fields are what compiling costs.
	Expansion int64
}

// bytesFactor is the heap a compiled schema holds per byte of its text
// without regular expressions (about 17 measured on schemas of thousands
// of properties; rounded up).
const bytesFactor = 24

// Memory estimates the heap a compiled schema holds, in bytes.
func (c Cost) Memory() int64 { return int64(c.Bytes)*bytesFactor + c.RegexpBytes }

// EstimateCost walks a decoded JSON document (as DecodeJSON returns it) and
// estimates the cost of compiling it as a schema. size is the length of
// the document's text. Every string under a "pattern" key and every key of
// a "patternProperties" object counts as a regular expression, wherever it
// is, so the estimate errs on the high side.
func EstimateCost(doc any, size int) Cost {
	c := Cost{Bytes: size}
	var walk func(v any, depth int)
	walk = func(v any, depth int) {
		if depth > maxWalkDepth {
			return
		}
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				switch k {
				case "pattern":
					if p, ok := child.(string); ok {
						c.addPattern(p)
					}
				case "patternProperties":
					if m, ok := child.(map[string]any); ok {
						for p := range m {
							c.addPattern(p)
						}
					}
				}
				walk(child, depth+1)
			}
		case []any:
			for _, child := range v {
				walk(child, depth+1)
			}
		}
	}
	walk(doc, 0)
	c.Expansion = Expansion(doc)
	return c
}

// maxWalkDepth stops EstimateCost on documents nested deeper than any
// decoder here accepts.
const maxWalkDepth = 10_000

func (c *Cost) addPattern(p string) {
	c.Patterns++
	c.RegexpBytes += regexpCost(p)
}

// regexpCost estimates the heap of regexp.Compile(p): the program's
// instructions and their rune ranges, counted twice since the one-pass
// form, when the expression has one, is a copy with tables of its own
// per instruction.
// An expression that does not parse costs its text: its compile fails.
func regexpCost(p string) int64 {
	re, err := syntax.Parse(p, syntax.Perl)
	if err != nil {
		return int64(len(p))
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return int64(len(p))
	}
	var n, onePass int64
	seen := map[*rune]bool{}
	for _, in := range prog.Inst {
		n += instBytes
		// Repetitions of one class share its ranges...
		if len(in.Rune) > 0 && !seen[&in.Rune[0]] {
			seen[&in.Rune[0]] = true
			n += runeBytes * int64(len(in.Rune))
		}
		// ...except in the one-pass form, which has tables per instruction.
		onePass += onePassRuneBytes * int64(len(in.Rune))
	}
	if first := prog.Inst[prog.Start]; first.Op != syntax.InstEmptyWidth || syntax.EmptyOp(first.Arg)&syntax.EmptyBeginText == 0 {
		// Only expressions anchored at the start have a one-pass form.
		onePass = 0
	}
	return regexpFactor*n + onePass
}

// Sizes used by regexpCost: a syntax.Inst with its slice header, one rune
// of a range, and the factor for the copies and tables regexp.Compile
// makes (one-pass form, per-instruction rune tables), calibrated so the
// estimate is above the measured heap of every case in cost_test.go.
const (
	instBytes    = 48
	runeBytes    = 4
	regexpFactor = 4
	// onePassRuneBytes is per rune of each instruction's ranges in the
	// one-pass form (about 14 measured for `^[\pL\pN]{1,30}$`).
	onePassRuneBytes = 20
)
