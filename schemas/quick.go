package schemas

import (
	"bytes"
	"encoding/json"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

// Verdict is what Quick.Check concluded about a document.
type Verdict uint8

// The verdicts of Quick.Check.
const (
	// Unsure: the document holds something the quick check does not
	// decide (it is not JSON, repeats a key, has a number it would need
	// big-number arithmetic for, ...). Ask the full validator.
	Unsure Verdict = iota
	// Valid: the document is JSON that DecodeJSON accepts, and the
	// compiled schema accepts its value.
	Valid
	// Invalid: the document is JSON that DecodeJSON accepts, and the
	// compiled schema rejects its value. The full validator says why.
	Invalid
)

// String names v.
func (v Verdict) String() string {
	switch v {
	case Valid:
		return "valid"
	case Invalid:
		return "invalid"
	}
	return "unsure"
}

// Quick checks JSON documents against a schema in one pass over their
// bytes, without decoding them into Go values: the cheap path for the
// common schemas (objects of typed properties with bounds, arrays, enums,
// patterns, formats), with santhosh-tekuri/jsonschema as the validator of
// record. Its verdicts are the validator's (FuzzQuickMatchesValidator
// checks them against it); where it cannot be sure of that it says Unsure.
//
// It covers draft 2020-12 schemas built from the keywords type, enum,
// const, properties, required, additionalProperties, items,
// minItems/maxItems, minProperties/maxProperties, minLength/maxLength,
// pattern, format, minimum/maximum, exclusiveMinimum/exclusiveMaximum and
// multipleOf, and the annotations (title, description, default, examples,
// ...). A schema with anything else (references, combinators,
// conditionals, another draft) has no Quick.
//
// A Quick is immutable and safe for concurrent use.
type Quick struct{ root *qnode }

// quickMaxDepth is the deepest nesting Check decides; deeper documents are
// Unsure (and well below MaxNesting, which the controller refuses).
const quickMaxDepth = 128

// NewQuick returns the quick check of a schema document (as DecodeJSON
// returns it) and of its compiled form (CompileBytes, CompileLimited), or
// nil when the schema uses anything Quick does not cover. The quick check
// shares the compiled form's regular expressions: it adds little memory to
// it.
func NewQuick(doc any, compiled *jsonschema.Schema) *Quick {
	if compiled == nil {
		return nil
	}
	m, ok := doc.(map[string]any)
	if ok {
		if s, ok := m["$schema"]; ok && s != "https://json-schema.org/draft/2020-12/schema" {
			return nil
		}
	}
	n, ok := quickNode(doc, compiled, true)
	if !ok {
		return nil
	}
	return &Quick{root: n}
}

// qnode is one schema of the covered subset. A nil *qnode accepts any
// value.
type qnode struct {
	never bool  // the schema false
	types uint8 // bits of typeNull...; 0: any type

	enum []any // nil: no enum (const is an enum of one); strings, bools, nil, json.Number
	// enumStrings holds the strings of a long enum, to look them up at
	// once.
	enumStrings map[string]bool
	enumNums    []*qnum // the numbers of the enum

	minLen, maxLen int // -1: none
	pattern        *regexp.Regexp
	format         func(any) bool

	minimum, maximum, exclusiveMin, exclusiveMax, multipleOf *qnum

	props               map[string]*qnode
	required            []string
	additional          *qnode // nil: any additional property
	additionalSet       bool
	minProps, maxProps  int
	items               *qnode
	minItems, maxItems  int
	hasObject, hasArray bool // object or array keywords present
}

const (
	typeNull = 1 << iota
	typeBoolean
	typeInteger
	typeNumber // integers included
	typeString
	typeArray
	typeObject
)

var typeBits = map[string]uint8{
	"null": typeNull, "boolean": typeBoolean, "integer": typeInteger, "number": typeNumber,
	"string": typeString, "array": typeArray, "object": typeObject,
}

// annotations are keywords that do not change a verdict.
var annotations = map[string]bool{
	"$comment": true, "title": true, "description": true, "default": true,
	"examples": true, "deprecated": true, "readOnly": true, "writeOnly": true,
	"contentEncoding": true, "contentMediaType": true,
}

// qnum is a number of a schema: exact as a big.Rat, and as an int64 when
// it is an integer that fits.
type qnum struct {
	rat   *big.Rat
	i     int64
	isInt bool
}

func newQnum(v any) (*qnum, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok {
		return nil, false
	}
	q := &qnum{rat: r}
	if r.IsInt() && r.Num().IsInt64() {
		q.i, q.isInt = r.Num().Int64(), true
	}
	return q, true
}

func quickCount(v any) (int, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 32)
	return int(i), err == nil && i >= 0
}

// quickNode builds the node of schema doc, compiled as c, reporting false
// when it uses anything outside the subset.
func quickNode(doc any, c *jsonschema.Schema, root bool) (*qnode, bool) {
	switch d := doc.(type) {
	case bool:
		if d {
			return nil, true
		}
		return &qnode{never: true}, true
	case map[string]any:
		n := &qnode{minLen: -1, maxLen: -1, minProps: -1, maxProps: -1, minItems: -1, maxItems: -1}
		for k, v := range d {
			if !n.keyword(k, v, c, root) {
				return nil, false
			}
		}
		if n.types == 0 && n.enum == nil && n.minLen < 0 && n.maxLen < 0 && n.pattern == nil && n.format == nil &&
			n.minimum == nil && n.maximum == nil && n.exclusiveMin == nil && n.exclusiveMax == nil && n.multipleOf == nil &&
			!n.hasObject && !n.hasArray {
			return nil, true // accepts anything
		}
		return n, true
	}
	return nil, false
}

func (n *qnode) keyword(k string, v any, c *jsonschema.Schema, root bool) bool {
	var ok bool
	switch k {
	case "$id":
		_, ok = v.(string)
		return ok && root
	case "$schema":
		return root // NewQuick checked its value
	case "type":
		switch t := v.(type) {
		case string:
			n.types, ok = typeBits[t]
			return ok
		case []any:
			for _, e := range t {
				s, _ := e.(string)
				b, ok := typeBits[s]
				if !ok {
					return false
				}
				n.types |= b
			}
			return n.types != 0
		}
		return false
	case "enum", "const":
		vals := []any{v}
		if k == "enum" {
			if vals, ok = v.([]any); !ok || len(vals) == 0 {
				return false
			}
		}
		if n.enum != nil { // both enum and const: not covered
			return false
		}
		for _, e := range vals {
			switch e.(type) {
			case string, bool, nil:
			case json.Number:
				q, ok := newQnum(e)
				if !ok {
					return false
				}
				n.enumNums = append(n.enumNums, q)
			default:
				return false
			}
		}
		n.enum = vals
		if len(vals) > 8 {
			n.enumStrings = map[string]bool{}
			for _, e := range vals {
				if es, ok := e.(string); ok {
					n.enumStrings[es] = true
				}
			}
		}
		return true
	case "minLength":
		n.minLen, ok = quickCount(v)
	case "maxLength":
		n.maxLen, ok = quickCount(v)
	case "pattern":
		// The validator's own expression: the same verdicts, and no
		// second copy in memory.
		s, isStr := v.(string)
		if !isStr || c == nil || c.Pattern == nil || c.Pattern.String() != s {
			return false
		}
		n.pattern, ok = c.Pattern, true
	case "format":
		s, isStr := v.(string)
		if !isStr {
			return false
		}
		// What the validator asserts (the compiler's AssertFormat): a
		// format it does not know asserts nothing.
		n.format = jsonschema.Formats[s]
		return true
	case "minimum":
		n.minimum, ok = newQnum(v)
	case "maximum":
		n.maximum, ok = newQnum(v)
	case "exclusiveMinimum":
		n.exclusiveMin, ok = newQnum(v)
	case "exclusiveMaximum":
		n.exclusiveMax, ok = newQnum(v)
	case "multipleOf":
		n.multipleOf, ok = newQnum(v)
		ok = ok && n.multipleOf.rat.Sign() > 0
	case "properties":
		m, isMap := v.(map[string]any)
		if !isMap {
			return false
		}
		n.props = make(map[string]*qnode, len(m))
		if c == nil {
			return false
		}
		for name, sch := range m {
			child, ok := quickNode(sch, c.Properties[name], false)
			if !ok {
				return false
			}
			n.props[name] = child
		}
		n.hasObject = true
		return true
	case "required":
		a, isArr := v.([]any)
		if !isArr {
			return false
		}
		for _, e := range a {
			s, isStr := e.(string)
			if !isStr {
				return false
			}
			if !slices.Contains(n.required, s) {
				n.required = append(n.required, s)
			}
		}
		n.hasObject = true
		return true
	case "additionalProperties":
		var ac *jsonschema.Schema
		if c != nil {
			ac, _ = c.AdditionalProperties.(*jsonschema.Schema)
		}
		n.additional, ok = quickNode(v, ac, false)
		n.additionalSet, n.hasObject = true, true
	case "minProperties":
		n.minProps, ok = quickCount(v)
		n.hasObject = true
	case "maxProperties":
		n.maxProps, ok = quickCount(v)
		n.hasObject = true
	case "items":
		var ic *jsonschema.Schema
		if c != nil {
			ic = c.Items2020
		}
		n.items, ok = quickNode(v, ic, false)
		n.hasArray = true
	case "minItems":
		n.minItems, ok = quickCount(v)
		n.hasArray = true
	case "maxItems":
		n.maxItems, ok = quickCount(v)
		n.hasArray = true
	default:
		return annotations[k]
	}
	return ok
}

// Check decides whether data, one JSON document, satisfies the schema,
// without allocating for the documents it decides in the common case.
func (q *Quick) Check(data []byte) Verdict {
	if !utf8.Valid(data) {
		return Unsure
	}
	s := scanner{data: data}
	s.space()
	s.value(q.root, 0)
	s.space()
	if s.unsure || s.i != len(data) {
		return Unsure
	}
	if s.bad {
		return Invalid
	}
	return Valid
}

// scanner walks a document once. unsure is set when it meets anything it
// does not decide (malformed JSON included), bad when a value breaks the
// schema; after either it only reads on, to tell malformed documents
// (Unsure) from invalid ones.
type scanner struct {
	data   []byte
	i      int
	unsure bool
	bad    bool
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value reads one value at s.i and checks it against n (nil: anything).
func (s *scanner) value(n *qnode, depth int) {
	if depth > quickMaxDepth || s.i >= len(s.data) {
		s.unsure = true
		return
	}
	if n != nil && n.never {
		s.bad = true
		n = nil
	}
	switch c := s.data[s.i]; {
	case c == '{':
		s.object(n, depth)
	case c == '[':
		s.array(n, depth)
	case c == '"':
		start := s.i
		escaped := s.string()
		if n != nil && !s.unsure {
			s.checkString(n, s.data[start:s.i], escaped)
		}
	case c == 't':
		s.literal("true")
		s.checkScalar(n, typeBoolean, true)
	case c == 'f':
		s.literal("false")
		s.checkScalar(n, typeBoolean, false)
	case c == 'n':
		s.literal("null")
		s.checkScalar(n, typeNull, nil)
	case c == '-' || '0' <= c && c <= '9':
		start := s.i
		isInt := s.number()
		if n != nil && !s.unsure {
			s.checkNumber(n, s.data[start:s.i], isInt)
		}
	default:
		s.unsure = true
	}
}

func (s *scanner) literal(word string) {
	if !bytes.HasPrefix(s.data[s.i:], []byte(word)) {
		s.unsure = true
		s.i = len(s.data)
		return
	}
	s.i += len(word)
}

// typeOK reports whether a value of type t (typeInteger for integers)
// satisfies n's type.
func (n *qnode) typeOK(t uint8) bool {
	if n.types == 0 || n.types&t != 0 {
		return true
	}
	return t == typeInteger && n.types&typeNumber != 0
}

func (s *scanner) checkScalar(n *qnode, t uint8, v any) {
	if n == nil {
		return
	}
	if !n.typeOK(t) {
		s.bad = true
		return
	}
	if n.enum != nil {
		found := false
		for _, e := range n.enum {
			if e == v {
				found = true
				break
			}
		}
		s.bad = s.bad || !found
	}
	if n.format != nil && !n.format(v) {
		s.bad = true
	}
}

// string reads a string at its opening quote and reports whether it has
// escapes; it sets unsure on a malformed one.
func (s *scanner) string() (escaped bool) {
	s.i++
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			s.i++
			return escaped
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.data) {
				s.i = len(s.data)
				s.unsure = true
				return escaped
			}
			switch s.data[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.data) || !isHex4(s.data[s.i+2:s.i+6]) {
					s.i = len(s.data)
					s.unsure = true
					return escaped
				}
				s.i += 6
			default:
				s.i = len(s.data)
				s.unsure = true
				return escaped
			}
		case c < 0x20:
			s.i = len(s.data)
			s.unsure = true
			return escaped
		default:
			s.i++
		}
	}
	s.unsure = true
	return escaped
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// stringValue is the text of a string token (quotes included).
func stringValue(tok []byte, escaped bool) (string, bool) {
	if !escaped {
		return string(tok[1 : len(tok)-1]), true
	}
	var v string
	err := json.Unmarshal(tok, &v)
	return v, err == nil
}

func (s *scanner) checkString(n *qnode, tok []byte, escaped bool) {
	if !n.typeOK(typeString) {
		s.bad = true
		return
	}
	if n.enum == nil && n.minLen < 0 && n.maxLen < 0 && n.pattern == nil && n.format == nil {
		return
	}
	raw := tok[1 : len(tok)-1]
	if !escaped && n.enum == nil && n.pattern == nil && n.format == nil {
		// Lengths alone: the document is valid UTF-8, so counting the
		// runes of the raw bytes counts those of the text.
		s.checkLength(n, utf8.RuneCount(raw))
		return
	}
	v, ok := stringValue(tok, escaped)
	if !ok {
		s.unsure = true
		return
	}
	s.checkLength(n, utf8.RuneCountInString(v))
	if n.enumStrings != nil {
		s.bad = s.bad || !n.enumStrings[v]
	} else if n.enum != nil {
		found := false
		for _, e := range n.enum {
			if es, ok := e.(string); ok && es == v {
				found = true
				break
			}
		}
		s.bad = s.bad || !found
	}
	if n.pattern != nil && !n.pattern.MatchString(v) {
		s.bad = true
	}
	if n.format != nil && !n.format(v) {
		s.bad = true
	}
}

func (s *scanner) checkLength(n *qnode, length int) {
	if n.minLen >= 0 && length < n.minLen || n.maxLen >= 0 && length > n.maxLen {
		s.bad = true
	}
}

// number reads a number and reports whether it is written as an integer
// (no fraction, no exponent); it sets unsure on a malformed one.
func (s *scanner) number() (isInt bool) {
	d := s.data
	if d[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(d) && d[s.i] == '0':
		s.i++
	case s.i < len(d) && '1' <= d[s.i] && d[s.i] <= '9':
		for s.i < len(d) && '0' <= d[s.i] && d[s.i] <= '9' {
			s.i++
		}
	default:
		s.unsure = true
		return false
	}
	isInt = true
	if s.i < len(d) && d[s.i] == '.' {
		isInt = false
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(d) && (d[s.i] == 'e' || d[s.i] == 'E') {
		isInt = false
		s.i++
		if s.i < len(d) && (d[s.i] == '+' || d[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return isInt
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.data) && '0' <= s.data[s.i] && s.data[s.i] <= '9' {
		s.i++
	}
	if s.i == start {
		s.unsure = true
		return false
	}
	return true
}

// checkNumber checks a number token. An integer written without fraction
// or exponent that fits an int64 is compared as one; anything else that a
// keyword must look at takes the validator's own big.Rat arithmetic, and a
// fraction or exponent where the type says integer is left to the
// validator (1.0 is an integer to it).
func (s *scanner) checkNumber(n *qnode, tok []byte, isInt bool) {
	t := uint8(typeNumber)
	switch {
	case isInt:
		t = typeInteger
	case n.types != 0 && n.types&typeNumber == 0:
		switch {
		case n.types&typeInteger == 0:
			s.bad = true
			return
		case bytes.ContainsAny(tok, "eE"):
			s.unsure = true // 1e2 is an integer to the validator
			return
		case len(bytes.TrimRight(tok[bytes.IndexByte(tok, '.')+1:], "0")) > 0:
			s.bad = true // a fraction that is not zero
			return
		}
		t = typeInteger // 1.0 is an integer to the validator
	}
	if !n.typeOK(t) {
		s.bad = true
		return
	}
	if n.minimum == nil && n.maximum == nil && n.exclusiveMin == nil && n.exclusiveMax == nil && n.multipleOf == nil && n.enum == nil && n.format == nil {
		return
	}
	var i int64
	fits := false
	if isInt {
		v, err := strconv.ParseInt(string(tok), 10, 64)
		i, fits = v, err == nil
	}
	var rat *big.Rat
	num := func() *big.Rat {
		if rat == nil {
			rat, _ = new(big.Rat).SetString(string(tok))
		}
		return rat
	}
	cmp := func(q *qnum) int {
		if fits && q.isInt {
			switch {
			case i < q.i:
				return -1
			case i > q.i:
				return 1
			}
			return 0
		}
		return num().Cmp(q.rat)
	}
	if n.minimum != nil && cmp(n.minimum) < 0 ||
		n.exclusiveMin != nil && cmp(n.exclusiveMin) <= 0 ||
		n.maximum != nil && cmp(n.maximum) > 0 ||
		n.exclusiveMax != nil && cmp(n.exclusiveMax) >= 0 {
		s.bad = true
	}
	if m := n.multipleOf; m != nil {
		if fits && m.isInt {
			s.bad = s.bad || i%m.i != 0
		} else if !new(big.Rat).Quo(num(), m.rat).IsInt() {
			s.bad = true
		}
	}
	if n.enum != nil {
		found := false
		for _, q := range n.enumNums {
			if cmp(q) == 0 {
				found = true
				break
			}
		}
		s.bad = s.bad || !found
	}
	if n.format != nil && !n.format(json.Number(tok)) {
		s.bad = true
	}
}

// object reads an object and checks it against n.
func (s *scanner) object(n *qnode, depth int) {
	s.i++ // '{'
	if n != nil && !n.typeOK(typeObject) {
		s.bad = true
		n = nil
	}
	if n != nil && n.enum != nil {
		s.bad = true // the enum holds scalars only
		n = nil
	}
	var keys [][]byte // raw keys, to find repeated ones
	var seen map[string]struct{}
	required := 0
	s.space()
	if s.i < len(s.data) && s.data[s.i] == '}' {
		s.i++
		s.endObject(n, 0, 0)
		return
	}
	for !s.unsure {
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != '"' {
			s.unsure = true
			return
		}
		start := s.i
		if s.string() {
			s.unsure = true // an escaped key may repeat another one
			return
		}
		if s.unsure {
			return
		}
		key := s.data[start+1 : s.i-1]
		if n != nil {
			if len(keys) < 16 {
				for _, k := range keys {
					if bytes.Equal(k, key) {
						s.unsure = true
						return
					}
				}
				keys = append(keys, key)
			} else {
				if seen == nil {
					seen = make(map[string]struct{}, 32)
					for _, k := range keys {
						seen[string(k)] = struct{}{}
					}
				}
				if _, dup := seen[string(key)]; dup {
					s.unsure = true
					return
				}
				seen[string(key)] = struct{}{}
				keys = append(keys, key)
			}
		}
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			s.unsure = true
			return
		}
		s.i++
		s.space()
		var child *qnode
		if n != nil {
			if c, ok := n.props[string(key)]; ok {
				child = c
			} else if n.additionalSet {
				child = n.additional
			}
			for _, r := range n.required {
				if r == string(key) {
					required++
					break
				}
			}
		}
		s.value(child, depth+1)
		s.space()
		if s.i >= len(s.data) {
			s.unsure = true
			return
		}
		switch s.data[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.endObject(n, len(keys), required)
			return
		default:
			s.unsure = true
			return
		}
	}
}

// endObject checks what is known at the end of an object of count
// members, required of which are required ones.
func (s *scanner) endObject(n *qnode, count, required int) {
	if n == nil {
		return
	}
	if required < len(n.required) ||
		n.minProps >= 0 && count < n.minProps ||
		n.maxProps >= 0 && count > n.maxProps {
		s.bad = true
	}
	if n.format != nil && !n.format(map[string]any{}) {
		s.unsure = true
	}
}

// array reads an array and checks it against n.
func (s *scanner) array(n *qnode, depth int) {
	s.i++ // '['
	if n != nil && !n.typeOK(typeArray) {
		s.bad = true
		n = nil
	}
	if n != nil && n.enum != nil {
		s.bad = true // the enum holds scalars only
		n = nil
	}
	var items *qnode
	if n != nil {
		items = n.items
	}
	count := 0
	s.space()
	if s.i < len(s.data) && s.data[s.i] == ']' {
		s.i++
		s.endArray(n, 0)
		return
	}
	for !s.unsure {
		s.space()
		s.value(items, depth+1)
		count++
		s.space()
		if s.i >= len(s.data) {
			s.unsure = true
			return
		}
		switch s.data[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.endArray(n, count)
			return
		default:
			s.unsure = true
			return
		}
	}
}

func (s *scanner) endArray(n *qnode, count int) {
	if n == nil {
		return
	}
	if n.minItems >= 0 && count < n.minItems || n.maxItems >= 0 && count > n.maxItems {
		s.bad = true
	}
	if n.format != nil && !n.format([]any{}) {
		s.unsure = true
	}
}
