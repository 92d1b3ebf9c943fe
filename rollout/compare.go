package rollout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultTolerance is how far apart two numbers may be and still compare
// equal: absolute, or relative to the larger magnitude, whichever is
// looser.
const DefaultTolerance = 1e-6

// MaxDiffs bounds the differences one comparison records.
const MaxDiffs = 50

// MaxDiffValue bounds, in bytes of encoded JSON, each value and pointer
// a Diff records, so that a comparison of large outputs still fits a
// message: a longer value is recorded as a JSON string holding the start
// of its JSON text followed by "…", a longer pointer is cut the same way,
// and the Diff is marked Truncated.
const MaxDiffValue = 1024

// CompareOptions tunes Compare. The zero value compares numbers with
// DefaultTolerance and ignores nothing.
type CompareOptions struct {
	// Tolerance for numbers; 0 means DefaultTolerance, a negative value
	// exact comparison.
	Tolerance float64
	// FieldTolerance overrides Tolerance below a JSON pointer (the
	// longest matching prefix wins).
	FieldTolerance map[string]float64
	// Ignore lists JSON pointers whose subtrees are not compared, e.g.
	// "/timing".
	Ignore []string
}

// Diff is one difference between two outputs.
type Diff struct {
	// Pointer is the JSON pointer (RFC 6901) of the differing value.
	Pointer string `json:"pointer"`
	// Stable and Candidate are the two values (absent: missing).
	Stable    json.RawMessage `json:"stable,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
	// Truncated is set when a value or the pointer was longer than
	// MaxDiffValue and is recorded cut.
	Truncated bool `json:"truncated,omitempty"`
}

// bound cuts d's values and pointer so that each takes at most about
// MaxDiffValue bytes once the comparison is encoded (encoding/json
// escapes quotes, backslashes and <, >, &).
func (d *Diff) bound() {
	cutValue := func(v json.RawMessage) json.RawMessage {
		if v == nil || encodedLen(v) <= MaxDiffValue {
			return v
		}
		d.Truncated = true
		b, _ := json.Marshal(fitString(string(v), MaxDiffValue))
		return b
	}
	d.Stable, d.Candidate = cutValue(d.Stable), cutValue(d.Candidate)
	if encodedLen(d.Pointer) > MaxDiffValue {
		d.Truncated = true
		d.Pointer = fitString(d.Pointer, MaxDiffValue)
	}
}

// encodedLen is the length of v encoded by json.Marshal.
func encodedLen(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return math.MaxInt
	}
	return len(b)
}

// fitString returns the longest prefix of s, cut on a rune boundary and
// followed by "…", whose JSON encoding takes at most limit bytes.
func fitString(s string, limit int) string {
	n := min(len(s), limit)
	for {
		p := cutUTF8(s, n) + "…"
		l := encodedLen(p)
		if l <= limit || n == 0 {
			return p
		}
		n = min(n-1, n*limit/l)
	}
}

// cutUTF8 returns s cut to at most n bytes, on a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Compare compares two JSON documents and returns the differences, at most
// MaxDiffs, sorted by pointer, each cut to MaxDiffValue. Documents that
// are not JSON compare as whole values (a difference at "").
func Compare(stable, candidate []byte, o CompareOptions) []Diff {
	var a, b any
	errA, errB := decode(stable, &a), decode(candidate, &b)
	var out []Diff
	switch {
	case errA != nil || errB != nil:
		if bytes.Equal(stable, candidate) {
			return nil
		}
		out = []Diff{{Pointer: "", Stable: raw(stable), Candidate: raw(candidate)}}
	default:
		compareValue("", a, b, o, &out)
		sort.Slice(out, func(i, j int) bool { return out[i].Pointer < out[j].Pointer })
	}
	for i := range out {
		out[i].bound()
	}
	return out
}

func decode(b []byte, v *any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

func raw(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

func marshal(v any) json.RawMessage {
	if v == nil {
		return json.RawMessage("null")
	}
	b, _ := json.Marshal(v)
	return b
}

func escape(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

func ignored(ptr string, o CompareOptions) bool {
	for _, p := range o.Ignore {
		if ptr == p || strings.HasPrefix(ptr, p+"/") {
			return true
		}
	}
	return false
}

func tolerance(ptr string, o CompareOptions) float64 {
	tol, best := o.Tolerance, -1
	if tol == 0 {
		tol = DefaultTolerance
	}
	for p, t := range o.FieldTolerance {
		if (ptr == p || strings.HasPrefix(ptr, p+"/")) && len(p) > best {
			tol, best = t, len(p)
		}
	}
	return tol
}

func compareValue(ptr string, a, b any, o CompareOptions, out *[]Diff) {
	if len(*out) >= MaxDiffs || ignored(ptr, o) {
		return
	}
	add := func(sa, sb json.RawMessage) {
		*out = append(*out, Diff{Pointer: ptr, Stable: sa, Candidate: sb})
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			add(marshal(a), marshal(b))
			return
		}
		keys := make([]string, 0, len(x)+len(y))
		for k := range x {
			keys = append(keys, k)
		}
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := ptr + "/" + escape(k)
			va, inA := x[k]
			vb, inB := y[k]
			switch {
			case inA && inB:
				compareValue(p, va, vb, o, out)
			case ignored(p, o) || len(*out) >= MaxDiffs:
			case inA:
				*out = append(*out, Diff{Pointer: p, Stable: marshal(va)})
			default:
				*out = append(*out, Diff{Pointer: p, Candidate: marshal(vb)})
			}
		}
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			add(marshal(a), marshal(b))
			return
		}
		for i := range x {
			compareValue(ptr+"/"+strconv.Itoa(i), x[i], y[i], o, out)
		}
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			add(marshal(a), marshal(b))
			return
		}
		if x == y {
			return
		}
		fa, errA := x.Float64()
		fb, errB := y.Float64()
		tol := tolerance(ptr, o)
		if errA != nil || errB != nil || tol < 0 || !closeEnough(fa, fb, tol) {
			add(marshal(a), marshal(b))
		}
	default:
		if fmt.Sprint(a) != fmt.Sprint(b) || typeName(a) != typeName(b) {
			add(marshal(a), marshal(b))
		}
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

func closeEnough(a, b, tol float64) bool {
	d := math.Abs(a - b)
	return d <= tol || d <= tol*math.Max(math.Abs(a), math.Abs(b))
}
