package replycheck

import (
	"reflect"
	"testing"

	"github.com/pnpworker/pnpworker/schemas"
)

var decodeSeeds = []string{
	`{"n":1}`,
	` { "a" : [1, -2.5e+3, 0.000001, 123456789012345678901234567890, true, false, null, "x"] , "b":{}, "c":[] } `,
	`"plain"`, `"esc\"aped\\ \u00e9 \ud83d\ude00 \n"`, "\"raw \xff bytes\"", `"héllo wörld"`,
	`42`, `-0`, `1E9`, `null`, `[]`, `{}`, `[[[[]]]]`, `{"dup":1,"dup":2}`,
	``, `{`, `{"a":}`, `{} {}`, `[1,]`, `tru`, `"unterminated`, `{"a" 1}`, `01`,
}

func checkDecode(t *testing.T, in string) {
	t.Helper()
	want, werr := schemas.DecodeJSON([]byte(in))
	got, gerr := decodeJSON([]byte(in))
	if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
		t.Fatalf("decodeJSON(%q) error %v, schemas.DecodeJSON error %v", in, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeJSON(%q) = %#v, schemas.DecodeJSON = %#v", in, got, want)
	}
}

// decodeJSON must be indistinguishable from schemas.DecodeJSON.
func TestDecodeJSON(t *testing.T) {
	for _, in := range decodeSeeds {
		t.Run(in, func(t *testing.T) { checkDecode(t, in) })
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, in := range decodeSeeds {
		f.Add(in)
	}
	f.Fuzz(checkDecode)
}
