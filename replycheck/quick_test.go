package replycheck

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
)

// TestChecksWithTheQuickPath checks the verdicts of Validate and
// ValidateOutput now that a body a schema's quick check proves valid is
// never decoded: a forged or broken runner reply is still refused (not
// JSON even under a permissive schema, the wrong type, extra data after
// the document, a key repeated to hide a bad value), and jobs get the same
// 400s as before.
func TestChecksWithTheQuickPath(t *testing.T) {
	c := NewCache(zerolog.Nop(), DefaultCacheBytes, 10*time.Second)
	strict := `{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":0}},"additionalProperties":false}`
	outside := `{"type":"object","required":["n"],"properties":{"n":{"anyOf":[{"type":"integer","minimum":0}]}},"additionalProperties":false}`
	reg := func(schema string) []discovery.Registration {
		return []discovery.Registration{{Algorithm: "bench", Instance: "a", InputSchema: json.RawMessage(schema), OutputSchema: json.RawMessage(schema)}}
	}
	cases := []struct {
		name, schema, body string
		ok                 bool
	}{
		{"valid", strict, `{"n":5}`, true},
		{"valid, 1.0 is an integer", strict, `{"n":1.0}`, true},
		{"valid, outside the quick subset", outside, `{"n":5}`, true},
		{"wrong type", strict, `{"n":"5"}`, false},
		{"wrong type, outside the quick subset", outside, `{"n":"5"}`, false},
		{"below the minimum", strict, `{"n":-1}`, false},
		{"extra member", strict, `{"n":1,"x":2}`, false},
		{"a repeated key, the last one bad", strict, `{"n":1,"n":-1}`, false},
		{"a repeated key, the last one good", strict, `{"n":-1,"n":1}`, true},
		{"not JSON", strict, `{"n":1`, false},
		{"not JSON, permissive schema", `{}`, `{"n":`, false},
		{"not JSON, schema true", `true`, `nope`, false},
		{"trailing data, permissive schema", `{}`, `{"n":1} {}`, false},
		{"invalid UTF-8, permissive schema", `{}`, "\"\xff\"", false},
		{"anything JSON, permissive schema", `{}`, `[1,{"a":null}]`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			regs := reg(tc.schema)
			in := c.Validate(regs, []byte(tc.body))
			if (in == nil) != tc.ok {
				t.Errorf("Validate(%s) = %v, want ok=%t", tc.body, in, tc.ok)
			}
			if in != nil && in.Code != protocol.CodeInvalidInput {
				t.Errorf("Validate: code %d, want 400", in.Code)
			}
			out := c.ValidateOutput(regs, regs, "a", []byte(tc.body))
			if (out == nil) != tc.ok {
				t.Errorf("ValidateOutput(%s) = %v, want ok=%t", tc.body, out, tc.ok)
			}
			if out != nil && out.Code != protocol.CodeBadGateway {
				t.Errorf("ValidateOutput: code %d, want 502", out.Code)
			}
			if out != nil && out.Message == "" {
				t.Error("502 without a message")
			}
		})
	}
}

// TestCheckDoesNotDecodeWhatQuickProves checks that a body the quick check
// proves valid costs no allocation in the cache's check: the saving the
// quick path is for.
func TestCheckDoesNotDecodeWhatQuickProves(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c := NewCache(zerolog.Nop(), DefaultCacheBytes, 10*time.Second)
	regs := []discovery.Registration{{Algorithm: "bench", Instance: "a", InputSchema: json.RawMessage(wordCountInput), OutputSchema: json.RawMessage(`{}`)}}
	body := []byte(`{"text":"the quick brown fox"}`)
	if err := c.Validate(regs, body); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.Validate(regs, body) }); n != 0 {
		t.Errorf("Validate allocates %.0f times per valid body, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.ValidateOutput(regs, regs, "a", body) }); n != 0 {
		t.Errorf("ValidateOutput allocates %.0f times per valid body, want 0", n)
	}
}
