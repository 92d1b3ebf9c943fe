// Package runner turns a typed Go function and its JSON Schemas into an
// algorithm served over NATS: registered in discovery, answering on
// run.<algorithm> in a queue group, validating every input, replying with the
// output or a clear error, heartbeating, and draining on shutdown.
//
// An algorithm author writes one function over two Go types:
//
//	alg, err := runner.NewAlgorithm(runner.Spec{
//		Name:    "word_count",
//		Version: "1.0.0",
//	}, func(ctx context.Context, in Input) (Output, error) {
//		return Output{Words: len(strings.Fields(in.Text))}, nil
//	})
//
// The input and output JSON Schemas are derived from the types (see
// SchemaFor; struct tags add bounds, patterns, enums and descriptions), or
// given in the Spec when the types cannot say enough.
//
// and a runner's main serves a list of them: runner.New(nc, algorithms).Run(ctx).
//
// The runner is the server side of the wire protocol, whose subjects,
// headers, codes and error type are package protocol's: a caller of
// algorithms imports that package, not this one. The names an author
// returns (Error, Reject, InvalidInput, Errorf, the codes and sentinels)
// are the protocol's, under the same names here.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"runtime"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// Spec describes an algorithm. Name and Version are required, and both
// schemas, which NewAlgorithm and NewBatchAlgorithm derive from the
// function's types when they are empty.
type Spec struct {
	// Name identifies the algorithm: lower case letters, digits and '_',
	// starting with a letter. It is served on "run.<Name>".
	Name string
	// Version is a semantic version, e.g. "1.2.0".
	Version string
	// Description is shown by `pnp algorithms` and `nats micro info`.
	Description string
	// InputSchema and OutputSchema are JSON Schema documents (draft 2020-12
	// unless they say otherwise), self-contained. Left empty, NewAlgorithm
	// and NewBatchAlgorithm derive them from In and Out (SchemaFor), titled
	// "<Name> input" and "<Name> output"; a schema given here wins.
	InputSchema  []byte
	OutputSchema []byte
	// Timeout is the default time budget of one request; a caller's deadline
	// header may shorten it. Default 30s.
	Timeout time.Duration
	// MaxConcurrency is how many requests one instance runs at once.
	// Default max(4, 2×GOMAXPROCS).
	MaxConcurrency int
	// MaxPending is how many more requests may wait for a free slot; past
	// that the instance answers 503 so the caller can go elsewhere.
	// Default 256.
	MaxPending int
	// MaxBatch is, for algorithms built by NewBatchAlgorithm, the most
	// requests handed to one call. Default DefaultMaxBatch; ignored by
	// other algorithms.
	MaxBatch int
	// MaxWait is, for batch algorithms, the longest the first request of a
	// batch waits for others to join it while a batch slot is free.
	// Default DefaultMaxWait; ignored by other algorithms.
	MaxWait time.Duration
}

// DefaultTimeout is the request time budget when Spec.Timeout is zero, the
// protocol's (protocol.DefaultTimeout).
const DefaultTimeout = protocol.DefaultTimeout

// MaxTimeout is the longest Spec.Timeout: registration records cap
// timeout_ms at one day, so a record cannot make callers wait forever.
const MaxTimeout = 24 * time.Hour

// DefaultMaxPending is Spec.MaxPending's default.
const DefaultMaxPending = 256

var semver = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

func (s *Spec) setDefaults() {
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MaxConcurrency == 0 {
		s.MaxConcurrency = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if s.MaxPending == 0 {
		s.MaxPending = DefaultMaxPending
	}
}

// Validate reports every problem with s (before defaults, and before
// NewAlgorithm derives missing schemas).
func (s Spec) Validate() error {
	var errs []error
	if !discovery.ValidAlgorithmName(s.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lower case letters, digits and '_', starting with a letter, at most 64 characters", s.Name))
	}
	if !semver.MatchString(s.Version) {
		errs = append(errs, fmt.Errorf("version %q: want a semantic version such as 1.0.0", s.Version))
	}
	if len(s.InputSchema) == 0 {
		errs = append(errs, errors.New("input schema is required"))
	}
	if len(s.OutputSchema) == 0 {
		errs = append(errs, errors.New("output schema is required"))
	}
	if s.Timeout < 0 || (s.Timeout > 0 && s.Timeout < time.Millisecond) || s.Timeout > MaxTimeout {
		errs = append(errs, fmt.Errorf("timeout %s: want 1ms to %s (zero means the default)", s.Timeout, MaxTimeout))
	}
	if s.MaxConcurrency < 0 {
		errs = append(errs, fmt.Errorf("max concurrency %d is negative", s.MaxConcurrency))
	}
	if s.MaxPending < 0 {
		errs = append(errs, fmt.Errorf("max pending %d is negative", s.MaxPending))
	}
	if s.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("max batch %d is negative", s.MaxBatch))
	}
	if s.MaxWait < 0 || s.MaxWait > time.Minute {
		errs = append(errs, fmt.Errorf("max wait %s: want 0 to 1m (zero means the default)", s.MaxWait))
	}
	return errors.Join(errs...)
}

// Func is the typed function behind an algorithm. In is decoded from the
// request body with encoding/json after the body satisfied the input schema;
// Out is encoded as the reply body. ctx carries the request deadline and a
// logger (zerolog.Ctx) with the request's fields. Return Reject for input the
// algorithm cannot use, or any *Error to choose the reply code.
type Func[In, Out any] func(ctx context.Context, in In) (Out, error)

// Algorithm is a validated algorithm definition, ready to be served by a
// Runner. It is immutable and safe for concurrent use.
type Algorithm struct {
	spec   Spec
	input  checker
	output checker
	call   func(ctx context.Context, body []byte) (any, error)
	batch  *batcher // nil unless built by NewBatchAlgorithm
}

// NewAlgorithm validates spec, derives the schemas it leaves empty from In
// and Out (SchemaFor), compiles them and binds fn. Every problem is
// reported at once, before anything is served.
func NewAlgorithm[In, Out any](spec Spec, fn Func[In, Out]) (*Algorithm, error) {
	a, err := compile(spec, fn == nil, reflect.TypeFor[In](), reflect.TypeFor[Out]())
	if err != nil {
		return nil, err
	}
	a.call = func(ctx context.Context, body []byte) (any, error) {
		var v In
		if err := json.Unmarshal(body, &v); err != nil {
			// The schema accepted the body, so this is a mismatch
			// between schema and Go type: the author's bug.
			return nil, &Error{Code: CodeInvalidInput, Message: "input does not fit the algorithm's type: " + err.Error()}
		}
		return fn(ctx, v)
	}
	return a, nil
}

// RawFunc is an algorithm function over JSON documents, for algorithms whose
// types are only known at run time (a bridge to another process, a
// generic proxy). in has satisfied the input schema; the returned document
// must be valid JSON (it is checked, and compacted, before it is sent).
type RawFunc func(ctx context.Context, in json.RawMessage) (json.RawMessage, error)

// NewRawAlgorithm is NewAlgorithm for a function over raw JSON: spec's
// schemas are all the runner knows of the algorithm's types. It is how a
// process in another language becomes an ordinary Algorithm (see package
// worker).
func NewRawAlgorithm(spec Spec, fn RawFunc) (*Algorithm, error) {
	a, err := compile(spec, fn == nil, nil, nil)
	if err != nil {
		return nil, err
	}
	a.call = func(ctx context.Context, body []byte) (any, error) {
		out, err := fn(ctx, body)
		if err != nil {
			return nil, err
		}
		if out == nil {
			return nil, &Error{Code: CodeInternal, Message: ErrInternal.Message, Err: errors.New("algorithm returned no output")}
		}
		return out, nil
	}
	return a, nil
}

// compile derives the schemas spec lacks from inType and outType (nil
// for none), validates spec and compiles its schemas; the caller sets call.
func compile(spec Spec, nilFunc bool, inType, outType reflect.Type) (*Algorithm, error) {
	var errs []error
	for _, d := range []struct {
		what   string
		t      reflect.Type
		schema *[]byte
	}{{"input", inType, &spec.InputSchema}, {"output", outType, &spec.OutputSchema}} {
		if d.t == nil || len(*d.schema) > 0 {
			continue
		}
		b, err := schemaOf(d.t, spec.Name+" "+d.what)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s schema from %s: %w", d.what, d.t, err))
			continue
		}
		*d.schema = b
	}
	errs = append(errs, spec.Validate())
	if nilFunc {
		errs = append(errs, errors.New("function is nil"))
	}
	var in, out *jsonschema.Schema
	var err error
	if len(spec.InputSchema) > 0 {
		if in, err = schemas.CompileBytes(spec.Name+".input.json", spec.InputSchema); err != nil {
			errs = append(errs, fmt.Errorf("input schema: %w", err))
		}
	}
	if len(spec.OutputSchema) > 0 {
		if out, err = schemas.CompileBytes(spec.Name+".output.json", spec.OutputSchema); err != nil {
			errs = append(errs, fmt.Errorf("output schema: %w", err))
		}
	}
	for _, sch := range [][]byte{spec.InputSchema, spec.OutputSchema} {
		var obj map[string]any
		if len(sch) > 0 && json.Unmarshal(sch, &obj) != nil {
			errs = append(errs, errors.New("schemas must be JSON objects"))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("runner: algorithm %q: %w", spec.Name, err)
	}
	spec.setDefaults()
	return &Algorithm{spec: spec, input: newChecker(in, spec.InputSchema), output: newChecker(out, spec.OutputSchema)}, nil
}

// Must panics if err is not nil. It is meant for algorithms whose definition
// is fixed at compile time, in tests and examples.
func Must(a *Algorithm, err error) *Algorithm {
	if err != nil {
		panic(err)
	}
	return a
}

// Spec returns the algorithm's definition with defaults applied.
func (a *Algorithm) Spec() Spec { return a.spec }

// Name returns the algorithm's name.
func (a *Algorithm) Name() string { return a.spec.Name }

// Subject returns the subject the algorithm is served on.
func (a *Algorithm) Subject() string { return discovery.RequestSubject(a.spec.Name) }

// SubjectPrefix starts every algorithm's request subject, the protocol's
// (protocol.SubjectPrefix): Subject is SubjectPrefix+Name.
const SubjectPrefix = protocol.SubjectPrefix

// ValidateInput checks body against the input schema and returns nil or a
// 400 *Error listing the violations. Controllers can use the same check
// before dispatching.
func (a *Algorithm) ValidateInput(body []byte) error {
	return validate(a.input, body)
}

// checker is a compiled schema and its quick check (nil when the schema
// is outside schemas.Quick's subset).
type checker struct {
	schema *jsonschema.Schema
	quick  *schemas.Quick
}

func newChecker(s *jsonschema.Schema, doc []byte) checker {
	c := checker{schema: s}
	if v, err := schemas.DecodeJSON(doc); err == nil {
		c.quick = schemas.NewQuick(v, s)
	}
	return c
}

// validate checks body against c: in one pass over the bytes when the
// quick check decides, with the validator of record otherwise, and always
// with it to say why a body fails.
func validate(c checker, body []byte) error {
	if c.quick != nil && c.quick.Check(body) == schemas.Valid {
		return nil
	}
	v, err := schemas.DecodeJSON(body)
	if err != nil {
		return &Error{Code: CodeInvalidInput, Message: "malformed JSON: " + err.Error()}
	}
	if err := c.schema.Validate(v); err != nil {
		return &Error{Code: CodeInvalidInput, Message: "input does not match the schema", Violations: schemas.Violations(err), Err: err}
	}
	return nil
}
