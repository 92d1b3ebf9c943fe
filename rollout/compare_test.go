package rollout_test

import (
	"slices"
	"testing"

	"pnpworker/rollout"
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
