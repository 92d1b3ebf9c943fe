package worker

import (
	"reflect"
	"strings"
	"testing"
)

func TestStderrGroups(t *testing.T) {
	in := []string{
		"loading model",
		"Traceback (most recent call last):",
		`  File "a.py", line 3, in <module>`,
		"    import x",
		"",
		"ModuleNotFoundError: No module named 'x'",
		"",
		"after",
		"Traceback (most recent call last):",
		`  File "b.py", line 1`,
	}
	g := stderrGroups{max: 4096}
	var got []string
	for _, l := range in {
		if e, ok := g.add(l); ok {
			got = append(got, e)
		}
	}
	if e, ok := g.flush(); ok {
		got = append(got, e)
	}
	want := []string{
		"loading model",
		strings.Join(in[1:6], "\n"),
		"after",
		strings.Join(in[8:], "\n"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries:\n%q\nwant:\n%q", got, want)
	}
}

// A traceback longer than the longest entry is logged in parts, each
// bounded.
func TestStderrGroupsBounded(t *testing.T) {
	g := stderrGroups{max: 100}
	entries := 0
	if _, ok := g.add(tracebackStart); ok {
		t.Fatal("the first line of a traceback completed an entry")
	}
	for range 50 {
		if e, ok := g.add("  File \"x.py\", line 1, in f"); ok {
			entries++
			if len(e) > 100+40 {
				t.Fatalf("entry of %d bytes, want about 100 at most", len(e))
			}
		}
	}
	if entries < 10 {
		t.Fatalf("%d entries for 50 lines of 30 bytes with a 100-byte bound, want >= 10", entries)
	}
}
