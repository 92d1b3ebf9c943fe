package schemas

import (
	"net/url"
	"reflect"
	"strconv"
	"strings"
)

// Expansion bounds, from a schema document alone, how many schemas a
// validator evaluates against one value of an instance: a schema counts
// one, plus every schema it applies to the same value — each branch of
// allOf, anyOf and oneOf (the validator tries them all), not, if, then and
// else together, dependentSchemas, and what $ref, $dynamicRef and
// $recursiveRef point to, followed through every level. Branches multiply
// through references: a chain of 17 schemas, each an anyOf of two $refs to
// the next, is 2^18 evaluations on every value, whatever its size. The
// result is the largest over every schema in the document; schemas
// applied to the members and items of a value (properties, items, ...)
// count for those values, not this one. A cycle of references on the same
// value (which no validator finishes) and a document nested too deep are
// unbounded: MaxExpansion.
//
// References are resolved within the document: JSON pointers, $anchor,
// $dynamicAnchor and $id relative to the base they are in. A reference to
// another document counts one (a compile refuses it: remote references
// are not loaded). A $dynamicRef or $recursiveRef counts the costliest
// schema it may resolve to.
func Expansion(doc any) int64 {
	return expansion(doc, false)
}

// treeExpansion is like Expansion, but also follows the keywords applying
// to members and items (properties, items, ...): the most schemas checking
// any one value of an instance can evaluate, whatever its size, when no
// reference recurses into members or items. A recursive schema (which
// can evaluate more on a deeper instance) is MaxExpansion.
func treeExpansion(doc any) int64 {
	return expansion(doc, true)
}

func expansion(doc any, children bool) int64 {
	e := expander{
		children:    children,
		resources:   map[string]located{},
		anchors:     map[string]located{},
		dynamic:     map[string][]located{},
		memo:        map[uintptr]int64{},
		visiting:    map[uintptr]bool{},
		dynamicMemo: map[string]int64{},
	}
	e.resources[expansionBase] = located{doc, expansionBase}
	e.index(doc, expansionBase, 0)
	if e.tooDeep {
		return MaxExpansion
	}
	if children {
		return e.count(doc, expansionBase, 0)
	}
	var worst int64
	for _, s := range e.schemas {
		worst = max(worst, e.count(s.v, s.base, 0))
		if worst >= MaxExpansion {
			return MaxExpansion
		}
	}
	return worst
}

// MaxExpansion is what Expansion reports for an unbounded expansion, and
// the most it counts.
const MaxExpansion int64 = 1 << 40

// expansionBase is the base URI of a document without $id. Any base
// serves: a reference resolves against it only to find its own document.
const expansionBase = "mem:///schema.json"

// maxExpansionDepth stops Expansion on documents nested deeper than any
// decoder here accepts, and on chains of references that long.
const maxExpansionDepth = 10_000

// located is a schema with the base URI of the schema it is in: its own
// $id, if any, is resolved against it.
type located struct {
	v    any
	base string
}

type expander struct {
	children  bool // count follows keywords applying to members and items
	schemas   []located
	resources map[string]located   // base URI → the schema with that $id
	anchors   map[string]located   // base URI#name → the schema with that anchor
	dynamic   map[string][]located // name → every schema with that $dynamicAnchor
	recursive []located            // every schema with "$recursiveAnchor": true
	memo      map[uintptr]int64
	visiting  map[uintptr]bool
	// dynamicMemo is dynamicCount's, by anchor name ("#name"; "" for
	// $recursiveAnchor).
	dynamicMemo map[string]int64
	tooDeep     bool
}

// Keywords whose value is one schema applied to the same value (inPlace)
// or to others (child); arrays and maps of schemas likewise.
var (
	inPlaceOne  = []string{"not", "if", "then", "else"}
	inPlaceMany = []string{"allOf", "anyOf", "oneOf"}
	inPlaceMap  = []string{"dependentSchemas", "dependencies"}
	childOne    = []string{"additionalProperties", "additionalItems", "items", "contains", "propertyNames", "unevaluatedProperties", "unevaluatedItems", "contentSchema"}
	childMany   = []string{"items", "prefixItems"}
	childMap    = []string{"properties", "patternProperties", "$defs", "definitions"}
	refKeywords = []string{"$ref", "$dynamicRef", "$recursiveRef"}
	oneSchema   = [][]string{inPlaceOne, childOne}
)

// index records every schema of the document with its base URI, and the
// resources and anchors references may name.
func (e *expander) index(v any, base string, depth int) {
	if depth > maxExpansionDepth {
		e.tooDeep = true
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		return // a boolean schema, or not a schema
	}
	e.schemas = append(e.schemas, located{m, base})
	base = e.enter(m, base)
	for _, kws := range oneSchema {
		for _, k := range kws {
			if s, ok := m[k]; ok {
				e.index(s, base, depth+1)
			}
		}
	}
	for _, kws := range [][]string{inPlaceMany, childMany} {
		for _, k := range kws {
			if a, ok := m[k].([]any); ok {
				for _, s := range a {
					e.index(s, base, depth+1)
				}
			}
		}
	}
	for _, kws := range [][]string{inPlaceMap, childMap} {
		for _, k := range kws {
			if sm, ok := m[k].(map[string]any); ok {
				for _, s := range sm {
					e.index(s, base, depth+1)
				}
			}
		}
	}
}

// enter registers m's $id (or draft-4 id) and anchors, and returns the
// base URI inside m.
func (e *expander) enter(m map[string]any, parent string) string {
	base := ownBase(m, parent)
	if base != parent {
		e.resources[base] = located{m, parent}
	}
	here := located{m, parent}
	if id, ok := m["$id"].(string); ok && len(id) > 1 && id[0] == '#' {
		// Drafts 6 and 7: "$id": "#name" is an anchor.
		e.anchors[base+id] = here
	}
	if a, ok := m["$anchor"].(string); ok {
		e.anchors[base+"#"+a] = here
	}
	if a, ok := m["$dynamicAnchor"].(string); ok {
		e.anchors[base+"#"+a] = here
		e.dynamic[a] = append(e.dynamic[a], here)
	}
	if r, ok := m["$recursiveAnchor"].(bool); ok && r {
		e.recursive = append(e.recursive, here)
	}
	return base
}

// ownBase is the base URI inside m: its $id (or draft-4 id) resolved
// against parent, or parent.
func ownBase(m map[string]any, parent string) string {
	for _, k := range []string{"$id", "id"} {
		id, ok := m[k].(string)
		if !ok || strings.HasPrefix(id, "#") {
			continue
		}
		if u, err := resolveURI(parent, id); err == nil {
			base, _, _ := strings.Cut(u, "#")
			return base
		}
	}
	return parent
}

// count is the number of schemas evaluated on one value when v is
// applied to it.
func (e *expander) count(v any, base string, depth int) int64 {
	m, ok := v.(map[string]any)
	if !ok {
		return 1
	}
	if depth > maxExpansionDepth {
		return MaxExpansion
	}
	key := reflect.ValueOf(m).Pointer()
	if n, ok := e.memo[key]; ok {
		return n
	}
	if e.visiting[key] {
		// The same schema again on the same value: the validator never
		// ends (or refuses the schema).
		return MaxExpansion
	}
	e.visiting[key] = true
	defer delete(e.visiting, key)
	base = ownBase(m, base)

	n := int64(1)
	add := func(c int64) { n = min(n+c, MaxExpansion) }
	for _, k := range inPlaceOne {
		if s, ok := m[k]; ok {
			add(e.count(s, base, depth+1))
		}
	}
	for _, k := range inPlaceMany {
		if a, ok := m[k].([]any); ok {
			for _, s := range a {
				add(e.count(s, base, depth+1))
			}
		}
	}
	for _, k := range inPlaceMap {
		if sm, ok := m[k].(map[string]any); ok {
			for _, s := range sm {
				if _, isList := s.([]any); !isList { // draft-7 dependencies: a list is property names
					add(e.count(s, base, depth+1))
				}
			}
		}
	}
	if e.children {
		for _, k := range childOne {
			if s, ok := m[k]; ok {
				add(e.count(s, base, depth+1))
			}
		}
		for _, k := range childMany {
			if a, ok := m[k].([]any); ok {
				for _, s := range a {
					add(e.count(s, base, depth+1))
				}
			}
		}
		for _, k := range []string{"properties", "patternProperties"} {
			if sm, ok := m[k].(map[string]any); ok {
				for _, s := range sm {
					add(e.count(s, base, depth+1))
				}
			}
		}
	}
	for _, k := range refKeywords {
		ref, ok := m[k].(string)
		if !ok {
			continue
		}
		var c int64
		for _, t := range e.targets(k, ref, base) {
			c = max(c, e.count(t.v, t.base, depth+1))
		}
		c = max(c, e.dynamicCount(k, ref, base, depth+1))
		add(max(c, 1))
	}
	e.memo[key] = n
	return n
}

// targets lists the schemas a reference may resolve to, each with its
// base; none when it leaves the document or names nothing in it.
func (e *expander) targets(keyword, ref, base string) []located {
	u, err := resolveURI(base, ref)
	if err != nil {
		return nil
	}
	doc, frag, _ := strings.Cut(u, "#")
	var out []located
	if t, ok := e.resolve(doc, frag); ok {
		out = append(out, t)
	}
	return out
}

// dynamicCount is the costliest schema a $dynamicRef or $recursiveRef may
// resolve to in the dynamic scope: any schema with the same dynamic
// anchor, or any with "$recursiveAnchor": true. It is computed once per
// anchor name, so a document of many such references and anchors costs
// their sum, not their product.
func (e *expander) dynamicCount(keyword, ref, base string, depth int) int64 {
	var name string
	var candidates []located
	switch keyword {
	case "$dynamicRef":
		u, err := resolveURI(base, ref)
		if err != nil {
			return 0
		}
		_, frag, _ := strings.Cut(u, "#")
		if frag == "" || strings.HasPrefix(frag, "/") {
			return 0
		}
		name, candidates = "#"+frag, e.dynamic[frag]
	case "$recursiveRef":
		name, candidates = "", e.recursive
	default:
		return 0
	}
	if n, ok := e.dynamicMemo[name]; ok {
		return n
	}
	// Reached again while its candidates are being counted: one of them
	// may apply itself to the same value through it, a cycle.
	e.dynamicMemo[name] = MaxExpansion
	var c int64
	for _, t := range candidates {
		c = max(c, e.count(t.v, t.base, depth))
	}
	e.dynamicMemo[name] = c
	return c
}

func (e *expander) resolve(doc, frag string) (located, bool) {
	if frag != "" && !strings.HasPrefix(frag, "/") {
		t, ok := e.anchors[doc+"#"+frag]
		return t, ok
	}
	t, ok := e.resources[doc]
	if !ok || frag == "" {
		return t, ok
	}
	v, parent := t.v, t.base
	for _, tok := range strings.Split(frag[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := v.(type) {
		case map[string]any:
			parent = ownBase(c, parent)
			if v, ok = c[tok]; !ok {
				return located{}, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return located{}, false
			}
			v = c[i]
		default:
			return located{}, false
		}
	}
	return located{v, parent}, true
}

// resolveURI resolves ref against base, as a validator does. Fragments
// are kept as written (JSON pointers are percent-decoded).
func resolveURI(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	u := b.ResolveReference(r)
	frag := u.Fragment
	u.Fragment, u.RawFragment = "", ""
	return u.String() + "#" + frag, nil
}
