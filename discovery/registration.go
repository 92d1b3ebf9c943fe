// Package discovery is the registry of live runner instances, kept in the
// JetStream KV bucket "discovery": one record per instance under the key
// "<algorithm>.<instance>", renewed by a heartbeat and expired by the
// bucket's max age when a runner dies without saying goodbye.
//
// Runners use Registry.Keepalive; readers use Registry.List and Lookup for a
// one-off answer, or a Cache for a live, lock-free view.
package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// Registration is the record a runner instance publishes for one algorithm it
// serves. Its JSON form is defined by schemas/registration.json.
type Registration struct {
	Algorithm      string            `json:"algorithm"`
	Version        string            `json:"version"`
	Instance       string            `json:"instance"`
	Subject        string            `json:"subject"`
	QueueGroup     string            `json:"queue_group"`
	Description    string            `json:"description,omitempty"`
	InputSchema    json.RawMessage   `json:"input_schema"`
	OutputSchema   json.RawMessage   `json:"output_schema"`
	TimeoutMS      int64             `json:"timeout_ms"`
	MaxConcurrency int               `json:"max_concurrency"`
	Host           string            `json:"host,omitempty"`
	SDK            string            `json:"sdk,omitempty"`
	StartedAt      time.Time         `json:"started_at"`
	HeartbeatAt    time.Time         `json:"heartbeat_at"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

// Key is the record's key in the bucket: "<algorithm>.<instance>".
func (r Registration) Key() string { return r.Algorithm + "." + r.Instance }

// Timeout is the algorithm's default per-request time budget.
func (r Registration) Timeout() time.Duration { return time.Duration(r.TimeoutMS) * time.Millisecond }

// ValidAlgorithmName reports whether name can be an algorithm name
// (protocol.ValidAlgorithmName): lower case letters, digits and
// underscores, starting with a letter, at most 64 characters.
func ValidAlgorithmName(name string) bool { return protocol.ValidAlgorithmName(name) }

// ValidInstanceID reports whether id can be an instance id
// (protocol.ValidInstanceID).
func ValidInstanceID(id string) bool { return protocol.ValidInstanceID(id) }

// SubjectPrefix starts every request subject (protocol.SubjectPrefix).
const SubjectPrefix = protocol.SubjectPrefix

// RequestSubject is the shared request subject of algorithm,
// "run.<algorithm>" (protocol.RequestSubject).
func RequestSubject(algorithm string) string { return protocol.RequestSubject(algorithm) }

// PinnedSubject is the subject only instances of one version of algorithm
// serve, "run.<algorithm>.v<version>" (protocol.PinnedSubject).
func PinnedSubject(algorithm, version string) string {
	return protocol.PinnedSubject(algorithm, version)
}

// EncodeVersion turns a semantic version into one subject token
// (protocol.EncodeVersion).
func EncodeVersion(version string) string { return protocol.EncodeVersion(version) }

// validSubject reports whether r's subject is one its algorithm may be
// served on: run.<algorithm>, or the pinned subject of the record's own
// version, never another version's.
func validSubject(r Registration) bool {
	return r.Subject == RequestSubject(r.Algorithm) || r.Subject == PinnedSubject(r.Algorithm, r.Version)
}

// Limits on a record, applied by every writer and reader (Codec). They
// bound what one record can make a reader spend: its bytes, and the
// compile cost of its schemas, which readers such as the controller
// compile (a schema of a few hundred kilobytes with thousands of patterns
// takes seconds and gigabytes to compile).
const (
	// MaxRecordSize is the largest record, in bytes of JSON.
	MaxRecordSize = 256 << 10
	// MaxSchemaPatterns is the most regular expressions ("pattern",
	// "patternProperties") the input and output schemas may hold
	// together.
	MaxSchemaPatterns = 256
	// MaxSchemaMemory bounds the estimated heap of the compiled input and
	// output schemas together (schemas.Cost.Memory).
	MaxSchemaMemory = 16 << 20
	// MaxSchemaExpansion bounds what checking one value against either
	// schema may take: the schemas evaluated on it, every branch of
	// allOf, anyOf and oneOf (and not, if, then, else) counted and
	// multiplied through $ref (schemas.Expansion). A 1 KB schema of 17
	// nested anyOf pairs is 2^19 evaluations, 3 s and 2.5 GB on every
	// value; 4096 leaves room for unions of hundreds of variants.
	MaxSchemaExpansion = 4096
)

// ErrInvalidRecord is wrapped by every error about a record that does not
// satisfy schemas/registration.json or does not match its key.
var ErrInvalidRecord = errors.New("invalid registration record")

// Codec encodes and decodes registration records, validating them against
// schemas/registration.json. It is safe for concurrent use.
type Codec struct {
	schema *jsonschema.Schema
}

// NewCodec returns a codec over the registration schema, compiled once per
// process at the first call: every registry, cache and view of a process
// (pnp up has several) shares it.
func NewCodec() (*Codec, error) {
	s, err := registrationSchema()
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return &Codec{schema: s}, nil
}

// registrationSchema compiles schemas/registration.json once. A compiled
// schema is immutable and safe for concurrent use, like a package-level
// regexp.
var registrationSchema = sync.OnceValues(func() (*jsonschema.Schema, error) { return schemas.Compile("registration.json") })

// Encode validates r and returns its JSON form.
func (c *Codec) Encode(r Registration) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("discovery: encode %s: %w", r.Key(), err)
	}
	if _, err := c.decode(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Decode parses and validates a record stored under key. A record whose
// algorithm and instance do not match the key is rejected: one runner must
// not be able to shadow another's entry.
func (c *Codec) Decode(key string, data []byte) (Registration, error) {
	r, err := c.decode(data)
	if err != nil {
		return Registration{}, err
	}
	if r.Key() != key {
		return Registration{}, fmt.Errorf("%w: key %q holds a record for %q", ErrInvalidRecord, key, r.Key())
	}
	return r, nil
}

func (c *Codec) decode(data []byte) (Registration, error) {
	if len(data) > MaxRecordSize {
		return Registration{}, fmt.Errorf("%w: %d bytes, more than the limit of %d", ErrInvalidRecord, len(data), MaxRecordSize)
	}
	v, err := schemas.DecodeJSON(data)
	if err != nil {
		return Registration{}, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	if err := c.schema.Validate(v); err != nil {
		return Registration{}, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	var r Registration
	if err := json.Unmarshal(data, &r); err != nil {
		return Registration{}, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	if !validSubject(r) {
		return Registration{}, fmt.Errorf("%w: subject %q: want %q or %q", ErrInvalidRecord, r.Subject, RequestSubject(r.Algorithm), PinnedSubject(r.Algorithm, r.Version))
	}
	m := v.(map[string]any) // the schema requires an object
	in := schemas.EstimateCost(m["input_schema"], len(r.InputSchema))
	out := schemas.EstimateCost(m["output_schema"], len(r.OutputSchema))
	if n := in.Patterns + out.Patterns; n > MaxSchemaPatterns {
		return Registration{}, fmt.Errorf("%w: schemas hold %d patterns, more than the limit of %d", ErrInvalidRecord, n, MaxSchemaPatterns)
	}
	if n := in.Memory() + out.Memory(); n > MaxSchemaMemory {
		return Registration{}, fmt.Errorf("%w: schemas would take about %d bytes compiled, more than the limit of %d", ErrInvalidRecord, n, MaxSchemaMemory)
	}
	for _, s := range []struct {
		field string
		cost  schemas.Cost
	}{{"input_schema", in}, {"output_schema", out}} {
		if n := s.cost.Expansion; n > MaxSchemaExpansion {
			return Registration{}, fmt.Errorf("%w: %s: checking one value may evaluate %s schemas (allOf, anyOf, oneOf branches multiplied through $ref), more than the limit of %d",
				ErrInvalidRecord, s.field, expansionText(n), MaxSchemaExpansion)
		}
	}
	return r, nil
}

func expansionText(n int64) string {
	if n >= schemas.MaxExpansion {
		return "unboundedly many"
	}
	return strconv.FormatInt(n, 10)
}
