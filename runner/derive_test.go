package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

type point struct {
	X int `json:"x"`
	Y int `json:"y"`
}

type audited struct {
	Author string    `json:"author,omitempty"`
	At     time.Time `json:"at"`
}

// order exercises every rule of SchemaFor.
type order struct {
	audited                        // promoted: author, at
	ID       string                `json:"id" jsonschema:"pattern=^o-[0-9]+$" jsonschema_description:"Order id, e.g. o-17."`
	Qty      uint8                 `json:"qty"`
	Priority int16                 `json:"priority,omitempty"`
	Price    float64               `json:"price" jsonschema:"minimum=0"`
	Note     *string               `json:"note"`
	Ship     *point                `json:"ship,omitempty"`
	Path     []point               `json:"path"`
	Tags     []string              `json:"tags,omitempty" jsonschema:"maxItems=3"`
	Attrs    map[string]int        `json:"attrs"`
	Kind     string                `json:"kind" jsonschema:"enum=retail,enum=wholesale"`
	Raw      []byte                `json:"raw,omitempty"`
	Addr     netip.Addr            `json:"addr,omitzero"`
	Extra    json.RawMessage       `json:"extra,omitempty"`
	Box      [2]int                `json:"box"`
	Must     *int                  `json:"must" jsonschema:"required"`
	Any      any                   `json:"any,omitempty"`
	Skipped  string                `json:"-"`
	Hidden   string                `json:"hidden" jsonschema:"-"`
	internal int                   // unexported: not a member
	Scores   map[string]*point     `json:"scores,omitempty"`
	Nested   struct{ A bool }      `json:"nested"`
	Custom   customSchema          `json:"custom,omitempty"`
	Lists    map[string][]*float64 `json:"lists,omitempty"`
	Amount   json.Number           `json:"amount,omitempty"`
}

// customSchema has its own JSON encoding and says so with its own schema.
type customSchema struct{ v string }

func (c *customSchema) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &c.v) }

func (customSchema) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string", MaxLength: new(uint64(2))}
}

const orderBase = `"id":"o-1","qty":1,"price":2.5,"note":null,"path":[],"attrs":{},"kind":"retail","box":[1,2],"must":1,"at":"2026-01-02T03:04:05Z","nested":{"A":true}`

func TestSchemaFor(t *testing.T) {
	doc, err := runner.SchemaFor[order]()
	if err != nil {
		t.Fatal(err)
	}
	s, err := schemas.CompileBytes("order.json", doc)
	if err != nil {
		t.Fatalf("derived schema does not compile: %v\n%s", err, doc)
	}
	for _, c := range []struct {
		name, members string
		valid         bool
	}{
		{"required members only", ``, true},
		{"every member", `,"author":"ann","priority":-3,"ship":{"x":1,"y":2},"tags":["a"],"raw":"AAE=","addr":"10.0.0.1","extra":{"anything":[1]},"any":7,"scores":{"a":{"x":1,"y":1},"b":null},"custom":"ab","lists":{"a":[1.5,null]},"amount":12.5`, true},
		{"note may be null (nil pointer)", `,"note":null`, true},
		{"path may be null (nil slice)", `,"path":null`, true},
		{"attrs may be null (nil map)", `,"attrs":null`, true},
		{"ship may not be null (omitempty)", `,"ship":null`, false},
		{"tags may not be null (omitempty)", `,"tags":null`, false},
		{"unknown member", `,"colour":"red"`, false},
		{"unknown member inside a struct", `,"ship":{"x":1,"y":2,"z":3}`, false},
		{"json:\"-\" is no member", `,"Skipped":"x"`, false},
		{"jsonschema:\"-\" is no member", `,"hidden":"x"`, false},
		{"unexported is no member", `,"internal":1`, false},
		{"pattern", `,"id":"x-1"`, false},
		{"uint8 above 255", `,"qty":256`, false},
		{"uint8 negative", `,"qty":-1`, false},
		{"int16 below its range", `,"priority":-32769`, false},
		{"integer as fraction", `,"qty":1.5`, false},
		{"minimum from tag", `,"price":-1`, false},
		{"enum", `,"kind":"other"`, false},
		{"maxItems from tag", `,"tags":["a","b","c","d"]`, false},
		{"array of fixed length", `,"box":[1,2,3]`, false},
		{"date-time", `,"at":"yesterday"`, false},
		{"text type is a string", `,"addr":{"ip":"10.0.0.1"}`, false},
		{"map members", `,"attrs":{"a":"b"}`, false},
		{"nested struct members", `,"ship":{"x":1}`, false},
		{"custom schema", `,"custom":"abc"`, false},
		{"json.Number is a number", `,"amount":"12"`, false},
		{"base64", `,"raw":"not base64!"`, true}, // contentEncoding is an annotation in 2020-12
	} {
		t.Run(c.name, func(t *testing.T) {
			body := `{` + orderBase + c.members + `}`
			// Later members win in both encoding/json and the validator's decoding.
			v, err := schemas.DecodeJSON([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(v); (err == nil) != c.valid {
				t.Fatalf("valid = %v, want %v (%v)\n%s", err == nil, c.valid, err, doc)
			}
			if c.valid && c.name != "base64" {
				var o order
				if err := json.Unmarshal([]byte(body), &o); err != nil {
					t.Fatalf("schema accepts what the type cannot decode: %v", err)
				}
			}
		})
	}
	for _, missing := range []string{"id", "qty", "price", "path", "attrs", "kind", "box", "must", "at", "nested"} {
		t.Run("requires "+missing, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal([]byte(`{`+orderBase+`}`), &m); err != nil {
				t.Fatal(err)
			}
			delete(m, missing)
			if err := s.Validate(m); err == nil {
				t.Fatalf("accepted without %s", missing)
			}
		})
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v", m["$schema"])
	}
	for _, key := range []string{"$id", "$defs", "$ref"} {
		if strings.Contains(string(doc), `"`+key+`"`) {
			t.Errorf("derived schema holds %s; want one self-contained tree:\n%s", key, doc)
		}
	}
	if p := m["properties"].(map[string]any)["id"].(map[string]any); p["description"] != "Order id, e.g. o-17." {
		t.Errorf("id description = %v", p["description"])
	}
}

// Whatever a type encodes, its derived schema accepts: the zero value (nil
// pointers, slices and maps written as null) and a filled one.
func TestSchemaForAcceptsWhatTheTypeEncodes(t *testing.T) {
	type untagged struct {
		audited
		Name  string             `json:"name"`
		Opt   *point             `json:"opt"`
		List  []point            `json:"list"`
		Set   map[string]bool    `json:"set"`
		Bytes []byte             `json:"bytes"`
		Small int8               `json:"small"`
		Big   uint64             `json:"big"`
		Deep  map[string][]point `json:"deep,omitempty"`
		When  *time.Time         `json:"when,omitempty"`
	}
	doc, err := runner.SchemaFor[untagged]()
	if err != nil {
		t.Fatal(err)
	}
	s, err := schemas.CompileBytes("untagged.json", doc)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, v := range []untagged{
		{},
		{audited: audited{Author: "a", At: now}, Name: "n", Opt: &point{1, 2}, List: []point{{3, 4}}, Set: map[string]bool{"k": true},
			Bytes: []byte{0, 255}, Small: -128, Big: 1 << 63, Deep: map[string][]point{"d": nil}, When: &now},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := schemas.DecodeJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(inst); err != nil {
			t.Errorf("schema refuses the type's own encoding %s: %v\n%s", b, err, doc)
		}
	}
}

type recursive struct {
	Children []recursive `json:"children"`
}

type selfEncoded struct{ n int }

func (s selfEncoded) MarshalJSON() ([]byte, error) { return json.Marshal(s.n) }

func TestSchemaForRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		fn   func() ([]byte, error)
		want string
	}{
		{"recursive", runner.SchemaFor[recursive], "runner_test.recursive.children[]: type runner_test.recursive contains itself"},
		{"channel", runner.SchemaFor[struct {
			C chan int `json:"c"`
		}], ".c: type chan int has no JSON form"},
		{"function", runner.SchemaFor[struct{ F func() }], ".F: type func() has no JSON form"},
		{"complex", runner.SchemaFor[[]complex128], "[]: type complex128 has no JSON form"},
		{"own JSON encoding", runner.SchemaFor[struct {
			S selfEncoded `json:"s"`
		}], ".s: type runner_test.selfEncoded has its own JSON encoding"},
		{"map key", runner.SchemaFor[map[bool]int], "map key type bool"},
		{"JSON and text encodings", runner.SchemaFor[struct {
			N *big.Int `json:"n"`
		}], ".n: type big.Int has its own JSON encoding"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := c.fn()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q (schema %s)", err, c.want, b)
			}
		})
	}
}

func TestNewAlgorithmDerivesSchemas(t *testing.T) {
	type in struct {
		Text string `json:"text" jsonschema:"minLength=1"`
		Max  *int   `json:"max,omitempty" jsonschema:"minimum=1"`
	}
	type out struct {
		Words int `json:"words"`
	}
	fn := func(ctx context.Context, v in) (out, error) { return out{Words: len(strings.Fields(v.Text))}, nil }

	a, err := runner.NewAlgorithm(runner.Spec{Name: "word_count", Version: "1.0.0"}, fn)
	if err != nil {
		t.Fatal(err)
	}
	var input, output map[string]any
	if err := json.Unmarshal(a.Spec().InputSchema, &input); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(a.Spec().OutputSchema, &output); err != nil {
		t.Fatal(err)
	}
	if input["title"] != "word_count input" || output["title"] != "word_count output" {
		t.Errorf("titles %v, %v", input["title"], output["title"])
	}
	for _, c := range []struct {
		body    string
		pointer string // of the violation; "-" for none
	}{
		{`{"text":"plug and play"}`, "-"},
		{`{"text":"plug","max":2}`, "-"},
		{`{"text":""}`, "/text"},
		{`{"text":"plug","max":0}`, "/max"},
		{`{"text":"plug","txet":"x"}`, ""},
		{`{}`, ""},
	} {
		err := a.ValidateInput([]byte(c.body))
		var e *runner.Error
		switch {
		case c.pointer == "-" && err != nil:
			t.Errorf("%s: %v", c.body, err)
		case c.pointer == "-":
		case !errors.As(err, &e) || e.Code != runner.CodeInvalidInput || len(e.Violations) != 1 || e.Violations[0].Pointer != c.pointer:
			t.Errorf("%s: err = %#v, want a 400 with one violation at %q", c.body, err, c.pointer)
		}
	}

	// A schema given in the Spec wins over the derived one.
	given := []byte(`{"type":"object"}`)
	a, err = runner.NewAlgorithm(runner.Spec{Name: "word_count", Version: "1.0.0", InputSchema: given}, fn)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Spec().InputSchema) != string(given) {
		t.Errorf("input schema %s, want the given one", a.Spec().InputSchema)
	}
	if err := a.ValidateInput([]byte(`{"anything":1}`)); err != nil {
		t.Errorf("given schema not used: %v", err)
	}

	// Batch algorithms derive from the item types.
	b, err := runner.NewBatchAlgorithm(runner.Spec{Name: "word_count", Version: "1.0.0"},
		func(ctx context.Context, ins []in) ([]out, error) { return make([]out, len(ins)), nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateInput([]byte(`{"text":""}`)); err == nil {
		t.Error("batch algorithm accepts an empty text")
	}

	// A type that cannot be derived is reported with the other problems.
	_, err = runner.NewAlgorithm(runner.Spec{Name: "Bad", Version: "1.0.0"},
		func(ctx context.Context, v recursive) (out, error) { return out{}, nil })
	for _, want := range []string{`name "Bad"`, "input schema from runner_test.recursive:", "contains itself"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}
