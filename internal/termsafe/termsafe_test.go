package termsafe

import (
	"encoding/json"
	"testing"
)

func TestString(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "meme classifier 1.2.0", "meme classifier 1.2.0"},
		{"letters", "Größe café 日本語", "Größe café 日本語"},
		{"replacement char kept", "a\uFFFDb", "a\uFFFDb"},
		{"csi", "\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"osc title", "\x1b]0;owned\x07", `\x1b]0;owned\x07`},
		{"tab and newline", "a\tb\nc\rd", `a\x09b\x0ac\x0dd`},
		{"del", "a\x7fb", `a\x7fb`},
		{"c1 csi", "a\u009b31mb", `a\u009b31mb`},
		{"bidi override", "abc\u202edcb", `abc\u202edcb`},
		{"bidi isolate", "\u2066x\u2069", `\u2066x\u2069`},
		{"invalid utf8", "a\xffb", `a\xffb`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in); got != tc.want {
				t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := Lines("one\ntwo\x1b"); got != "one\n"+`two\x1b` {
		t.Errorf("Lines kept or escaped the wrong characters: %q", got)
	}
}

func TestJSON(t *testing.T) {
	in := map[string]string{"d": "x\x1b[31m\u009b\u202e\x7fy"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := JSON(b)
	for _, r := range string(out) {
		if unsafeRune(r) {
			t.Fatalf("JSON left %U in %s", r, out)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("not JSON any more: %v: %s", err, out)
	}
	if back["d"] != in["d"] {
		t.Fatalf("round trip changed the value: %q", back["d"])
	}
}

func TestJSONCleanIsUnchanged(t *testing.T) {
	b := []byte(`{"level":"info","message":"Größe 日本語 \u001b ok"}`)
	if got := JSON(b); &got[0] != &b[0] {
		t.Fatal("JSON copied a line that needed no escaping")
	}
}

func BenchmarkJSONCleanLine(b *testing.B) {
	line := []byte(`{"level":"info","algorithm":"meme_classifier","job_id":"0Xj4kY2Tt1EoWb3Q9cHq8l","duration_ms":12.5,"time":"2026-11-29T17:00:00Z","message":"job succeeded"}` + "\n")
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		_ = JSON(line)
	}
}
