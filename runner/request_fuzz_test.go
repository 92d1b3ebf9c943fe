package runner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// fuzzInputSchema exercises the validator's paths: required fields, types,
// formats, bounds, nested arrays and objects, pattern and enum.
const fuzzInputSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["text", "n"],
  "additionalProperties": false,
  "properties": {
    "text":  {"type": "string", "minLength": 1, "maxLength": 100},
    "n":     {"type": "integer", "minimum": 0, "maximum": 1000000},
    "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "lang":  {"enum": ["en", "fr", "de"]},
    "id":    {"type": "string", "pattern": "^[a-z0-9-]{1,16}$"},
    "url":   {"type": "string", "format": "uri"},
    "tags":  {"type": "array", "maxItems": 8, "items": {"type": "string"}},
    "meta":  {"type": "object", "maxProperties": 4, "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}
  }
}`

type fuzzIn struct {
	Text  string            `json:"text"`
	N     int               `json:"n"`
	Ratio float64           `json:"ratio"`
	Lang  string            `json:"lang"`
	ID    string            `json:"id"`
	URL   string            `json:"url"`
	Tags  []string          `json:"tags"`
	Meta  map[string]any    `json:"meta"`
	Extra map[string]string `json:"-"`
}

func fuzzAlgorithm(f *testing.F) *Algorithm {
	f.Helper()
	a, err := NewAlgorithm(Spec{
		Name:         "fuzz_target",
		Version:      "1.0.0",
		InputSchema:  []byte(fuzzInputSchema),
		OutputSchema: []byte(`{"type":"object"}`),
	}, func(_ context.Context, in fuzzIn) (map[string]int, error) {
		return map[string]int{"n": in.N}, nil
	})
	if err != nil {
		f.Fatal(err)
	}
	return a
}

// FuzzValidateInput feeds arbitrary request bodies to the runner's input
// check and to the typed decoding behind it. Whatever the bytes, the check
// must not panic, must answer nil or a 400 *Error whose reply stays
// bounded, and a body it accepts must decode into the algorithm's Go type.
func FuzzValidateInput(f *testing.F) {
	a := fuzzAlgorithm(f)
	for _, s := range []string{
		`{"text":"hello","n":1}`,
		`{"text":"hello","n":1,"ratio":0.5,"lang":"en","id":"a-1","url":"https://x.test/a","tags":["a"],"meta":{"k":1}}`,
		`{"text":"","n":-1}`,
		`{"text":42,"n":"1"}`,
		`{"text":"x","n":1e400}`,
		`{"text":"x","n":1234567890123456789012345678901234567890123456789012345678901234}`,
		`{"text":"x","n":1.0}`,
		`{"text":"x","n":1,"n":2}`,
		`{"text":"\xff\xfe","n":1}`,
		`{"text":"\ud800","n":1}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"text":"x","n":1} trailing`,
		`{"text":"x","n":1}{}`,
		`null`, `""`, `0`, ``, `{`, `{"text":"x","n":1,"zzz":{}}`,
		`{"text":"x","n":1,"url":"::not a uri"}`,
		`{"text":"x","n":1,"tags":[1,2,3,4,5,6,7,8,9]}`,
	} {
		f.Add([]byte(s))
	}
	if a.input.quick == nil {
		f.Fatal("the fuzz schema has no quick check: the fuzz test would not exercise it")
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := a.ValidateInput(body)
		// The verdict is the validator of record's, whichever path gave it.
		v, derr := schemas.DecodeJSON(body)
		if want := derr == nil && a.input.schema.Validate(v) == nil; (err == nil) != want {
			t.Fatalf("ValidateInput(%q) = %v; the validator accepts it: %t", body, err, want)
		}
		if err == nil {
			if _, derr := schemas.DecodeJSON(body); derr != nil {
				t.Fatalf("accepted a body DecodeJSON refuses: %v", derr)
			}
			// JSON Schema calls 1.0 an integer, encoding/json does not
			// put it in an int: such a body is refused by the typed
			// decoding, but still as a 400, never a 500 or a panic.
			out, cerr := a.call(context.Background(), body)
			if cerr != nil {
				var e *Error
				if !errors.As(cerr, &e) || e.Code != CodeInvalidInput {
					t.Fatalf("typed decoding of an accepted body: %v, want a 400", cerr)
				}
				return
			}
			if out == nil {
				t.Fatal("nil output for an accepted body")
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error is %T, want *Error: %v", err, err)
		}
		if e.Code != CodeInvalidInput {
			t.Fatalf("code %d, want 400: %v", e.Code, e)
		}
		if e.Message == "" {
			t.Fatal("400 without a message")
		}
		for _, v := range e.Violations {
			if v.Message == "" {
				t.Fatalf("violation without a message at %q", v.Pointer)
			}
			if v.Pointer != "" && !strings.HasPrefix(v.Pointer, "/") {
				t.Fatalf("violation pointer %q is not a JSON pointer", v.Pointer)
			}
		}
	})
}

// FuzzCallerDeadline feeds arbitrary Pnp-Deadline and Pnp-Timeout headers:
// they are parsed, never trusted. A header that is not understood is an
// error (answered 400), and a deadline that is accepted comes from one of
// them.
func FuzzCallerDeadline(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""},
		{"2026-01-01T00:00:00Z", ""},
		{"", "500ms"},
		{"2026-01-01T00:00:00.123456789+02:00", "1h"},
		{"yesterday", ""},
		{"", "-1s"},
		{"", "0"},
		{"", "9223372036854775807ns"},
		{"", "99999999999999999999h"},
		{"9999-12-31T23:59:59Z", "1ns"},
		{"\x00", "\xff"},
	} {
		f.Add(s[0], s[1])
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, deadline, timeout string) {
		h := nats.Header{}
		if deadline != "" {
			h.Set(protocol.HeaderDeadline, deadline)
		}
		if timeout != "" {
			h.Set(protocol.HeaderTimeout, timeout)
		}
		d, ok, err := callerDeadline(h, now)
		if err != nil {
			if ok || !d.IsZero() {
				t.Fatalf("error %v with a deadline %v", err, d)
			}
			if !strings.HasPrefix(err.Error(), "header Pnp-") {
				t.Fatalf("error does not name the header: %v", err)
			}
			return
		}
		if ok != (deadline != "" || timeout != "") {
			t.Fatalf("ok=%v for deadline %q timeout %q", ok, deadline, timeout)
		}
		if timeout != "" && !d.After(now) && deadline == "" {
			t.Fatalf("positive timeout %q gave deadline %v, not after now", timeout, d)
		}
	})
}
