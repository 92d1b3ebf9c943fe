package schemas

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"
)

// quickSchemas are the seed schemas of the differential test: every
// keyword Quick covers, alone and together, and some it does not.
var quickSchemas = []string{
	`{}`, `true`, `false`,
	`{"type":"object","properties":{"text":{"type":"string","minLength":1,"maxLength":10}},"required":["text"],"additionalProperties":false}`,
	`{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}`,
	`{"type":"object","properties":{"words":{"type":"integer","minimum":0}},"required":["words"],"additionalProperties":false}`,
	`{"type":"integer","minimum":-5,"maximum":1e2,"multipleOf":3}`,
	`{"type":"number","exclusiveMinimum":0.5,"exclusiveMaximum":9007199254740993}`,
	`{"type":"number","multipleOf":0.25}`,
	`{"type":["integer","null"],"minimum":0,"maximum":9223372036854775807}`,
	`{"type":"integer","maximum":18446744073709551616}`,
	`{"type":"string","pattern":"^[a-z]+$","format":"uri"}`,
	`{"type":"string","format":"date-time"}`,
	`{"format":"email"}`,
	`{"format":"unknown-format"}`,
	`{"enum":["a","b",null,true,1,2.5]}`,
	`{"const":"x"}`,
	`{"const":1.0}`,
	`{"type":"array","items":{"type":"string","maxLength":2},"minItems":1,"maxItems":3}`,
	`{"type":"array","items":false}`,
	`{"type":"object","minProperties":1,"maxProperties":2,"additionalProperties":{"type":"boolean"}}`,
	`{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"array","items":{"type":"integer"}}},"required":["b"]}},"required":["a"]}`,
	`{"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"https://example.com/s.json","title":"t","description":"d","type":"object","properties":{"x":{"type":"number","default":0,"examples":[1]}}}`,
	`{"type":"object","properties":{"é":{"type":"string","minLength":2}},"required":["é"]}`,
	// Not covered: the validator alone decides.
	`{"anyOf":[{"type":"string"},{"type":"integer"}]}`,
	`{"$defs":{"a":{"type":"string"}},"$ref":"#/$defs/a"}`,
	`{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}`,
}

// quickDocs are the seed documents, each tried against every seed schema.
var quickDocs = []string{
	`{"text":"hello"}`, `{"text":""}`, `{"text":"hello world!"}`, `{"text":5}`, `{}`, `{"text":"a","x":1}`,
	`{"text":"h\u00e9llo"}`, `{"text":"\ud800"}`, `{"text":"a","text":"b"}`, `{"text":"a","\u0074ext":1}`,
	`{"n":1}`, `{"n":1.0}`, `{"n":1.5}`, `{"n":1e2}`, `{"n":-0}`, `{"n":99999999999999999999999}`, `{"n":"1"}`,
	`{"words":0}`, `{"words":-1}`, `{"words":27}`,
	`0`, `-5`, `-6`, `3`, `99`, `100`, `102`, `0.75`, `0.5`, `9007199254740993`, `9007199254740992`,
	`9223372036854775807`, `9223372036854775808`, `18446744073709551616`, `18446744073709551617`, `1e400`,
	`null`, `true`, `false`, `"a"`, `"b"`, `"abc"`, `"http://x/"`, `"2024-01-02T03:04:05Z"`, `"a@b.c"`, `"x"`,
	`1`, `2.5`, `2.50`, `25e-1`, `1.0`,
	`[]`, `["a"]`, `["a","bcd"]`, `["a","b","c","d"]`, `[1]`, `[[[]]]`,
	`{"a":true,"b":false}`, `{"a":true,"b":false,"c":true}`, `{"a":1}`,
	`{"a":{"b":[1,2,3]}}`, `{"a":{"b":[1,"2"]}}`, `{"a":{}}`, `{"x":1}`, `{"x":"1"}`,
	`{"é":"ab"}`, `{"é":"a"}`,
	// Not JSON, or not what DecodeJSON accepts.
	``, ` `, `{`, `{"a"}`, `{"a":}`, `[1,]`, `01`, `-`, `1.`, `1e`, `tru`, `nul`, `"\x"`, "\"\x01\"", "\"\xff\"",
	`{} {}`, `{}x`, "\xef\xbb\xbf{}", ` {"text" : "a" } `, `"\u12"`,
}

// slowVerdict is the validator of record's verdict on doc, or Unsure when
// DecodeJSON refuses it.
func slowVerdict(t *testing.T, schema, doc []byte) Verdict {
	t.Helper()
	s, err := CompileBytes("quick.json", schema)
	if err != nil {
		t.Fatalf("compile %s: %v", schema, err)
	}
	v, err := DecodeJSON(doc)
	if err != nil {
		return Unsure
	}
	if err := s.Validate(v); err != nil {
		return Invalid
	}
	return Valid
}

// quickOf returns the Quick of schema, or nil when it does not compile or
// Quick does not cover it.
func quickOf(schema []byte) *Quick {
	compiled, err := CompileBytes("quick.json", schema)
	if err != nil {
		return nil
	}
	doc, err := DecodeJSON(schema)
	if err != nil {
		return nil
	}
	return NewQuick(doc, compiled)
}

// FuzzQuickMatchesValidator checks that every verdict Quick gives is the
// validator's: Valid when DecodeJSON accepts the document and the schema
// accepts its value, Invalid when DecodeJSON accepts it and the schema does
// not. Its seed corpus (every seed schema against every seed document) runs
// as an ordinary test.
func FuzzQuickMatchesValidator(f *testing.F) {
	for _, s := range quickSchemas {
		for _, d := range quickDocs {
			f.Add([]byte(s), []byte(d))
		}
	}
	f.Fuzz(func(t *testing.T, schema, doc []byte) {
		q := quickOf(schema)
		if q == nil {
			return
		}
		got := q.Check(doc)
		if got == Unsure {
			return
		}
		if want := slowVerdict(t, schema, doc); got != want {
			t.Fatalf("schema %s, document %q: quick says %s, the validator %s", schema, doc, got, want)
		}
	})
}

// TestQuickCovers checks that the schemas the quick path is for have one,
// that those outside its subset have none, and that it decides the
// documents it is for: so that a change cannot silently send every request
// back to the slow path.
func TestQuickCovers(t *testing.T) {
	covered := 0
	for _, s := range quickSchemas {
		if quickOf([]byte(s)) != nil {
			covered++
		}
	}
	if want := len(quickSchemas) - 3; covered != want {
		t.Errorf("%d of the seed schemas have a quick check, want %d", covered, want)
	}
	names, err := fs.Glob(FS, "*.input.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if quickOf(Bytes(name)) == nil {
			t.Errorf("%s has no quick check", name)
		}
	}
	cases := []struct {
		schema, doc string
		want        Verdict
	}{
		{quickSchemas[3], `{"text":"hello"}`, Valid},
		{quickSchemas[3], `{"text":"h\u00e9llo"}`, Valid},
		{quickSchemas[3], `{"text":""}`, Invalid},
		{quickSchemas[3], `{"text":"a","x":1}`, Invalid},
		{quickSchemas[4], `{"n":12345}`, Valid},
		{quickSchemas[4], `{"n":1.5}`, Invalid},
		{quickSchemas[4], `{"n":1.0}`, Valid}, // an integer to the validator
		{quickSchemas[4], `{"n":1e2}`, Unsure},
		{quickSchemas[3], `{"text":"a","text":"b"}`, Unsure},
		{quickSchemas[3], `{"text":"a"`, Unsure},
		{quickSchemas[6], `99`, Valid},
		{quickSchemas[6], `100`, Invalid},
		{`{}`, `{"any":[1,{"thing":null}]}`, Valid},
		{`{}`, `[1,]`, Unsure},
	}
	for _, c := range cases {
		q := quickOf([]byte(c.schema))
		if q == nil {
			t.Fatalf("%s has no quick check", c.schema)
		}
		if got := q.Check([]byte(c.doc)); got != c.want {
			t.Errorf("schema %s, document %s: %s, want %s", c.schema, c.doc, got, c.want)
		}
	}
}

// TestQuickDeepDocument checks that a document nested past quickMaxDepth
// is left to the validator rather than walked.
func TestQuickDeepDocument(t *testing.T) {
	q := quickOf([]byte(`{}`))
	doc := strings.Repeat("[", quickMaxDepth+2) + strings.Repeat("]", quickMaxDepth+2)
	if got := q.Check([]byte(doc)); got != Unsure {
		t.Errorf("%d levels: %s, want unsure", quickMaxDepth+2, got)
	}
	if !json.Valid([]byte(doc)) {
		t.Fatal("test document is not JSON")
	}
}

// TestQuickCheckAllocates checks that deciding a typical valid request
// allocates nothing.
func TestQuickCheckAllocates(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	q := quickOf([]byte(quickSchemas[3]))
	doc := []byte(`{"text":"hello"}`)
	if n := testing.AllocsPerRun(100, func() { q.Check(doc) }); n != 0 {
		t.Errorf("Check allocates %.0f times per call, want 0", n)
	}
}
