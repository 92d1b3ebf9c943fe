package rollout_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/schemas"
)

func pointers(ds []rollout.Diff) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Pointer)
	}
	return out
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   string
		opts   rollout.CompareOptions
		wanted []string
	}{
		{"equal", `{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, rollout.CompareOptions{}, nil},
		{"within default tolerance", `{"p":0.1234567}`, `{"p":0.1234568}`, rollout.CompareOptions{}, nil},
		{"beyond tolerance", `{"p":0.12}`, `{"p":0.13}`, rollout.CompareOptions{}, []string{"/p"}},
		{"exact", `{"p":1.0000001}`, `{"p":1.0000002}`, rollout.CompareOptions{Tolerance: -1}, []string{"/p"}},
		{"field tolerance", `{"p":0.12,"q":0.12}`, `{"p":0.13,"q":0.13}`, rollout.CompareOptions{FieldTolerance: map[string]float64{"/p": 0.1}}, []string{"/q"}},
		{"ignored", `{"timing":{"ms":3},"label":"x"}`, `{"timing":{"ms":9},"label":"y"}`, rollout.CompareOptions{Ignore: []string{"/timing"}}, []string{"/label"}},
		{"missing and extra", `{"a":1,"b":2}`, `{"a":1,"c":2}`, rollout.CompareOptions{}, []string{"/b", "/c"}},
		{"array length", `{"l":[1,2]}`, `{"l":[1]}`, rollout.CompareOptions{}, []string{"/l"}},
		{"nested", `{"x":[{"k":"v"}]}`, `{"x":[{"k":"w"}]}`, rollout.CompareOptions{}, []string{"/x/0/k"}},
		{"escaped key", `{"a/b":1}`, `{"a/b":2}`, rollout.CompareOptions{}, []string{"/a~1b"}},
		{"type change", `{"n":1}`, `{"n":"1"}`, rollout.CompareOptions{}, []string{"/n"}},
		{"not json", `nope`, `{}`, rollout.CompareOptions{}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pointers(rollout.Compare([]byte(tc.a), []byte(tc.b), tc.opts)); !slices.Equal(got, tc.wanted) {
				t.Errorf("diffs %v, want %v", got, tc.wanted)
			}
		})
	}
}

// The records rollout writes satisfy their schemas in schemas/.
func TestRecordsMatchSchemas(t *testing.T) {
	cmp := rollout.Comparison{Algorithm: "ocr", JobID: "j1", Source: rollout.SourceShadow, StableVersion: "1.0.0",
		CandidateVersion: "2.0.0", StableMS: 1.5, CandidateMS: 2, CandidateError: "422: no", At: time.Now().UTC()}
	cmp.Decide([]byte(`{"a":1}`), []byte(`{"a":2,"b":[1]}`), rollout.CompareOptions{})
	cmp2 := cmp
	cmp2.CandidateError = ""
	cmp2.Decide([]byte(`{"a":1}`), []byte(`{"a":2,"b":[1]}`), rollout.CompareOptions{})
	if cmp2.Equal || len(cmp2.Diffs) != 2 {
		t.Fatalf("decide: %+v", cmp2)
	}
	cmp3 := cmp2
	big := strings.Repeat("é", 1<<20)
	cmp3.Decide([]byte(`{"a":"`+big+`"}`), []byte(`{"a":"x`+big+`"}`), rollout.CompareOptions{})
	h := rollout.HistoryRecord{Algorithm: "ocr", JobID: "j1", Version: "1.0.0", Input: json.RawMessage(`{"x":1}`),
		Output: json.RawMessage(`{"y":2}`), MS: 3, At: time.Now().UTC()}
	h2 := h
	h2.Output, h2.OutputRef = nil, "obj://outputs/ocr/abc"
	cmp4 := cmp
	cmp4.CandidateError, cmp4.Diffs, cmp4.Equal, cmp4.NotCompared = "", nil, false, "recorded output: objref: obj://outputs/ocr/abc: not found"
	for file, v := range map[string]any{"comparison.json": cmp, "comparison.json ": cmp2, "comparison.json  ": cmp3, "comparison.json   ": cmp4, "history.json": h, "history.json ": h2} {
		s, err := schemas.Compile(strings.TrimSpace(file))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		doc, err := schemas.DecodeJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(doc); err != nil {
			t.Errorf("%s: %v\n%s", file, err, b)
		}
	}
}

// Values and pointers of any size are recorded cut to MaxDiffValue bytes
// of encoded JSON, on a character boundary, so that a comparison of large
// outputs fits a message, also when what it holds grows when escaped.
func TestCompareBoundsLargeValues(t *testing.T) {
	encoded := func(v any) int {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	big := strings.Repeat("é", 1<<20) // 2 MiB of JSON
	long := strings.Repeat("k", 5000)
	ds := rollout.Compare([]byte(`{"a":"`+big+`","`+long+`":1}`), []byte(`{"a":"x`+big+`","`+long+`":2}`), rollout.CompareOptions{})
	if len(ds) != 2 {
		t.Fatalf("%d diffs, want 2", len(ds))
	}
	for _, d := range ds {
		if !d.Truncated || encoded(d.Pointer) > rollout.MaxDiffValue {
			t.Errorf("diff at %.40q…: truncated %v, pointer of %d bytes encoded", d.Pointer, d.Truncated, encoded(d.Pointer))
		}
		for _, v := range []json.RawMessage{d.Stable, d.Candidate} {
			var s any
			if encoded(v) > rollout.MaxDiffValue || json.Unmarshal(v, &s) != nil {
				t.Errorf("diff at %.40q…: value of %d bytes encoded, valid JSON %v", d.Pointer, encoded(v), json.Valid(v))
			}
		}
	}
	if a := string(ds[0].Stable); ds[0].Pointer != "/a" || !strings.HasPrefix(a, `"\"éé`) || !strings.HasSuffix(a, `…"`) {
		t.Errorf("diff %.10q: stable %.60s", ds[0].Pointer, a)
	}
	small := rollout.Compare([]byte(`{"a":"x"}`), []byte(`{"a":"y"}`), rollout.CompareOptions{})
	if len(small) != 1 || small[0].Truncated || string(small[0].Stable) != `"x"` {
		t.Errorf("small diff %+v", small)
	}

	// The worst case: MaxDiffs fields whose names and values are all
	// characters that encoding/json escapes to six bytes.
	var a, b strings.Builder
	a.WriteString("{")
	b.WriteString("{")
	for i := range rollout.MaxDiffs + 10 {
		if i > 0 {
			a.WriteString(",")
			b.WriteString(",")
		}
		key := strings.Repeat("<", 3000) + strings.Repeat("&", i)
		a.WriteString(`"` + key + `":"` + strings.Repeat(">", 10000) + `"`)
		b.WriteString(`"` + key + `":"` + strings.Repeat("<", 10000) + `"`)
	}
	a.WriteString("}")
	b.WriteString("}")
	c := rollout.Comparison{Algorithm: "x", Source: rollout.SourceShadow, StableVersion: "1", CandidateVersion: "2", At: time.Now()}
	c.Decide([]byte(a.String()), []byte(b.String()), rollout.CompareOptions{})
	if len(c.Diffs) != rollout.MaxDiffs {
		t.Fatalf("%d diffs, want %d", len(c.Diffs), rollout.MaxDiffs)
	}
	t.Logf("worst case: %d diffs take %d bytes encoded", len(c.Diffs), encoded(c))
	if n := encoded(c); n > 4*rollout.MaxDiffs*rollout.MaxDiffValue {
		t.Fatalf("the comparison takes %d bytes encoded; want at most %d", n, 4*rollout.MaxDiffs*rollout.MaxDiffValue)
	}
}

// Numbers compare equal within the tolerance absolutely or relative to the
// larger magnitude of the two, whichever is looser: large values differ
// by more than the tolerance in absolute terms and still agree, small ones
// near zero agree by the absolute part alone.
func TestCompareRelativeTolerance(t *testing.T) {
	tol := func(t float64) rollout.CompareOptions { return rollout.CompareOptions{Tolerance: t} }
	for _, tc := range []struct {
		name  string
		a, b  string
		opts  rollout.CompareOptions
		equal bool
	}{
		{"1e9 and 500 more: within 1e-6 of 1e9", `1e9`, `1000000500`, rollout.CompareOptions{}, true},
		{"1e9 and 1000 more: at 1e-6 of 1e9", `1e9`, `1000001000`, rollout.CompareOptions{}, true},
		{"1e9 and 2000 more: beyond 1e-6 of 1e9", `1e9`, `1000002000`, rollout.CompareOptions{}, false},
		{"negative: relative to the magnitude", `-1e9`, `-1000000500`, rollout.CompareOptions{}, true},
		{"negative, beyond", `-1e9`, `-1000002000`, rollout.CompareOptions{}, false},
		{"near zero: the absolute part", `0`, `0.0000005`, rollout.CompareOptions{}, true},
		{"near zero, beyond", `0`, `0.000002`, rollout.CompareOptions{}, false},
		{"relative to the larger of the two", `10`, `11.05`, tol(0.1), true},
		{"relative to the larger, either order", `11.05`, `10`, tol(0.1), true},
		{"beyond the larger's share", `10`, `11.2`, tol(0.1), false},
		{"opposite signs", `-1`, `1`, tol(0.5), false},
		{"Tolerance scales the relative part", `1000`, `1009`, tol(0.01), true},
		{"Tolerance scales the relative part, beyond", `1000`, `1011`, tol(0.01), false},
		{"field tolerance is relative too", `1000`, `1009`, rollout.CompareOptions{FieldTolerance: map[string]float64{"": 0.01}}, true},
		{"exact has no relative part", `1e9`, `1000000001`, tol(-1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := rollout.Compare([]byte(tc.a), []byte(tc.b), tc.opts)
			if got := len(ds) == 0; got != tc.equal {
				t.Fatalf("%s vs %s: equal %v (diffs %+v), want %v", tc.a, tc.b, got, ds, tc.equal)
			}
		})
	}
}

func TestComparisonRecompare(t *testing.T) {
	diff := func(ptr, a, b string) rollout.Diff {
		d := rollout.Diff{Pointer: ptr}
		if a != "" {
			d.Stable = json.RawMessage(a)
		}
		if b != "" {
			d.Candidate = json.RawMessage(b)
		}
		return d
	}
	stored := rollout.Comparison{Diffs: []rollout.Diff{
		diff("/score", "0.5", "0.52"),
		diff("/labels/0", `"cat"`, `"dog"`),
		diff("/a~1b", "1", "2"),
		diff("/gone", "1", ""),
	}}
	cut := diff("/long", `"aaa"`, `"aab"`)
	cut.Truncated = true
	for _, tc := range []struct {
		name      string
		c         rollout.Comparison
		opts      rollout.CompareOptions
		wanted    []string
		wantEqual bool
	}{
		{"exact keeps every difference", stored, rollout.CompareOptions{Tolerance: -1}, []string{"/score", "/labels/0", "/a~1b", "/gone"}, false},
		{"a looser tolerance drops close numbers", stored, rollout.CompareOptions{Tolerance: 0.05}, []string{"/labels/0", "/a~1b", "/gone"}, false},
		{"a field tolerance applies at its pointer only", stored, rollout.CompareOptions{Tolerance: -1, FieldTolerance: map[string]float64{"/score": 0.05}}, []string{"/labels/0", "/a~1b", "/gone"}, false},
		{"an escaped pointer is matched whole", stored, rollout.CompareOptions{Tolerance: -1, Ignore: []string{"/a~1b"}}, []string{"/score", "/labels/0", "/gone"}, false},
		{"an ignored parent drops its children", stored, rollout.CompareOptions{Tolerance: -1, Ignore: []string{"/labels"}}, []string{"/score", "/a~1b", "/gone"}, false},
		{"an absent value still differs", stored, rollout.CompareOptions{Tolerance: 1e9}, []string{"/labels/0", "/gone"}, false},
		{"everything ignored is equal", stored, rollout.CompareOptions{Ignore: []string{"/score", "/labels", "/a~1b", "/gone"}}, nil, true},
		{"a cut value is not tolerated", rollout.Comparison{Diffs: []rollout.Diff{cut}}, rollout.CompareOptions{Tolerance: 1e9}, []string{"/long"}, false},
		{"a cut value can be ignored", rollout.Comparison{Diffs: []rollout.Diff{cut}}, rollout.CompareOptions{Ignore: []string{"/long"}}, nil, true},
		{"an error verdict is kept", rollout.Comparison{CandidateError: "500: boom", Diffs: []rollout.Diff{diff("/x", "1", "2")}}, rollout.CompareOptions{Ignore: []string{"/x"}}, []string{"/x"}, false},
		{"not compared is kept", rollout.Comparison{NotCompared: "gone", Diffs: []rollout.Diff{diff("/x", "1", "2")}}, rollout.CompareOptions{Ignore: []string{"/x"}}, []string{"/x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.c.Recompare(tc.opts)
			if !slices.Equal(pointers(got.Diffs), tc.wanted) {
				t.Errorf("diffs %v, want %v", pointers(got.Diffs), tc.wanted)
			}
			if got.Equal != tc.wantEqual {
				t.Errorf("equal %v, want %v", got.Equal, tc.wantEqual)
			}
		})
	}
}
