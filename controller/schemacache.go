package controller

import (
	"bytes"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"pnpworker/discovery"
	"pnpworker/runner"
	"pnpworker/schemas"
)

// maxCachedSchemas bounds the cache; past it, the cache starts over (the
// live set of schemas is small, so this only matters if runners keep
// registering new ones).
const maxCachedSchemas = 256

// schemaCache compiles each input schema once, keyed by its content, so
// replicas of the same version share one compiled schema and a new version
// is compiled when it first appears. It is safe for concurrent use.
type schemaCache struct {
	log zerolog.Logger
	mu  sync.RWMutex
	m   map[string]*jsonschema.Schema // nil value: the schema does not compile
}

func newSchemaCache(log zerolog.Logger) *schemaCache {
	return &schemaCache{log: log, m: map[string]*jsonschema.Schema{}}
}

func (c *schemaCache) get(rec discovery.Registration) *jsonschema.Schema {
	c.mu.RLock()
	s, ok := c.m[string(rec.InputSchema)]
	c.mu.RUnlock()
	if ok {
		return s
	}
	s, err := schemas.CompileBytes(rec.Algorithm+".input.json", rec.InputSchema)
	if err != nil {
		// A runner's own schema should always compile (the runner library
		// compiles it first); if not, the runner is left to judge inputs.
		c.log.Warn().Err(err).Str("algorithm", rec.Algorithm).Str("instance", rec.Instance).
			Msg("registered input schema does not compile; inputs are not checked before dispatch")
		s = nil
	}
	c.mu.Lock()
	if len(c.m) >= maxCachedSchemas {
		c.m = map[string]*jsonschema.Schema{}
	}
	c.m[string(rec.InputSchema)] = s
	c.mu.Unlock()
	return s
}

// validate checks body against the input schemas of the live instances
// regs. Input is valid when any live version accepts it, so a rolling
// upgrade that changes the schema rejects nothing that some instance can
// still serve; the violations reported are those of the most recently
// started instance. It returns nil or a 400 *runner.Error.
func (c *schemaCache) validate(regs []discovery.Registration, body []byte) *runner.Error {
	v, err := decodeJSON(body)
	if err != nil {
		return &runner.Error{Code: runner.CodeInvalidInput, Message: "malformed JSON: " + err.Error()}
	}
	var (
		worst   *runner.Error
		worstAt time.Time
	)
	for i, rec := range regs {
		if seenSchema(regs[:i], rec.InputSchema) {
			continue
		}
		s := c.get(rec)
		if s == nil {
			return nil
		}
		verr := s.Validate(v)
		if verr == nil {
			return nil
		}
		if worst == nil || rec.StartedAt.After(worstAt) {
			worst = &runner.Error{Code: runner.CodeInvalidInput, Message: "input does not match the schema", Violations: schemas.Violations(verr)}
			worstAt = rec.StartedAt
		}
	}
	return worst
}

func seenSchema(regs []discovery.Registration, schema []byte) bool {
	for _, r := range regs {
		if bytes.Equal(r.InputSchema, schema) {
			return true
		}
	}
	return false
}
