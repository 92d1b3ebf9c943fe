package schemas_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/schemas"
)

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// The cost estimate is what bounds the controller's schema cache and what
// registrations are refused by; it must not be below what a compile
// really holds, least of all for the patterns that cost far more than
// their text.
func TestEstimateCostIsAboveMeasuredHeap(t *testing.T) {
	for _, tc := range []struct {
		n       int
		pattern string
	}{
		{2000, ""},
		{200, `^[a-z0-9]{1,40}(-[a-z0-9]{1,40})*$`},
		{200, `^[\pL\pN]{1,30}$`},
		{200, `(?:a|b){0,1000}`},
		{200, `\pL{1000}`},
		{200, `[^x]*`},
	} {
		t.Run(fmt.Sprintf("%d×%s", tc.n, tc.pattern), func(t *testing.T) {
			var b strings.Builder
			b.WriteString(`{"type":"object","properties":{`)
			for i := range tc.n {
				if i > 0 {
					b.WriteByte(',')
				}
				if tc.pattern == "" {
					fmt.Fprintf(&b, `"p%d":{"type":"string","minLength":1,"maxLength":%d}`, i, i)
				} else {
					fmt.Fprintf(&b, `"p%d":{"type":"string","pattern":%q}`, i, tc.pattern)
				}
			}
			b.WriteString(`}}`)
			doc := []byte(b.String())
			v, err := schemas.DecodeJSON(doc)
			if err != nil {
				t.Fatal(err)
			}
			est := schemas.EstimateCost(v, len(doc))
			if tc.pattern != "" && est.Patterns != tc.n {
				t.Errorf("counted %d patterns, want %d", est.Patterns, tc.n)
			}
			before := heapInUse()
			s, err := schemas.CompileBytes("cost.json", doc)
			if err != nil {
				t.Fatal(err)
			}
			held := heapInUse() - before
			runtime.KeepAlive(s)
			t.Logf("%d bytes: compiled heap %d KiB, estimate %d KiB", len(doc), held>>10, est.Memory()>>10)
			if est.Memory() < held {
				t.Errorf("estimate %d below the measured %d", est.Memory(), held)
			}
		})
	}
}

// FuzzEstimateCost feeds arbitrary documents, as a registration may carry
// them, to the estimate every registration reader runs: it must not panic
// and never estimates less than the document's own size.
func FuzzEstimateCost(f *testing.F) {
	f.Add([]byte(`{"type":"string","pattern":"^[a-z]+$"}`))
	f.Add([]byte(`{"patternProperties":{"^x(":{},"\\pL{1000}":{}}}`))
	f.Add([]byte(`[{"pattern":1},{"pattern":"(?i)[\\x{0}-\\x{10FFFF}]*"}]`))
	f.Add([]byte(`{"$id":"http://x/a#","anyOf":[{"$ref":"b#/$defs/c"},{"$dynamicRef":"#n"}],"$defs":{"b":{"$id":"b","$dynamicAnchor":"n","$defs":{"c":{"$ref":"#"}}}}}`))
	f.Add([]byte(`{"$recursiveAnchor":true,"items":{"$recursiveRef":"#"},"allOf":[{"$ref":"#/allOf/0"}]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		v, err := schemas.DecodeJSON(doc)
		if err != nil {
			return
		}
		c := schemas.EstimateCost(v, len(doc))
		if c.Memory() < int64(len(doc)) || c.Patterns < 0 || c.RegexpBytes < 0 || c.Expansion < 0 || c.Expansion > schemas.MaxExpansion {
			t.Fatalf("estimate %+v for %d bytes", c, len(doc))
		}
	})
}
