package controller

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"pnpworker/discovery"
	"pnpworker/runner"
	"pnpworker/schemas"
)

// maxCompiles bounds the schema compiles running at once, those whose
// callers gave up waiting included: a compile cannot be interrupted, so
// an abandoned one keeps its memory until it ends, and without a bound
// slow compiles would pile up.
const maxCompiles = 2

// entryOverhead is charged per cache entry besides its schema's estimated
// cost: the entry, its list element and map slot.
const entryOverhead = 256

// Reasons a schema is not available to check with. Callers treat all of
// them as "cannot check here": the runner checks its own input, and an
// output is accepted unchecked.
var (
	errCompilePending = errors.New("schema compile still running")
	errCompileBusy    = errors.New("too many schema compiles in progress")
	errTooCostly      = errors.New("schema too costly to compile within the cache budget")
)

// schemaCache compiles registered schemas (input and output) once, keyed
// by their content, so replicas of one version share a compiled schema
// and a new version is compiled when it first appears. It is safe for
// concurrent use.
//
// It is bounded in bytes, not entries: each entry is charged the
// estimated heap of its compiled schema (schemas.Cost.Memory) plus its
// key, and the least recently used entries are dropped to stay within
// the budget. A compile runs in its own goroutine; callers wait for it at
// most the compile timeout, and at most maxCompiles run at once.
type schemaCache struct {
	log     zerolog.Logger
	budget  int64
	timeout time.Duration
	sem     chan struct{}

	mu   sync.Mutex
	m    map[string]*list.Element // of *schemaEntry
	lru  *list.List               // front: most recently used
	used int64

	// compiling counts compiles in progress, abandoned ones included.
	compiling atomic.Int64
}

type schemaEntry struct {
	key  string
	cost int64
	done chan struct{} // closed when schema and err are set
	// warned makes a failure logged once per entry, not once per job.
	warned atomic.Bool
	schema *jsonschema.Schema
	err    error
}

func newSchemaCache(log zerolog.Logger, budget int64, timeout time.Duration) *schemaCache {
	return &schemaCache{
		log:     log,
		budget:  budget,
		timeout: timeout,
		sem:     make(chan struct{}, maxCompiles),
		m:       map[string]*list.Element{},
		lru:     list.New(),
	}
}

// size reports the bytes charged and the number of entries.
func (c *schemaCache) size() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, c.lru.Len()
}

// get returns the compiled form of doc, compiling it if needed, or an
// error saying why it cannot be had now (does not compile, too costly,
// compile still running or too many running).
func (c *schemaCache) get(name string, doc []byte) (*jsonschema.Schema, error) {
	c.mu.Lock()
	if el, ok := c.m[string(doc)]; ok {
		c.lru.MoveToFront(el)
		e := el.Value.(*schemaEntry)
		c.mu.Unlock()
		return c.wait(e)
	}
	c.mu.Unlock()

	e := &schemaEntry{key: string(doc), done: make(chan struct{})}
	cost, costErr := estimate(doc)
	e.cost = cost + int64(len(doc)) + entryOverhead
	if costErr == nil && e.cost > c.budget {
		costErr = fmt.Errorf("%w: about %d bytes, budget %d", errTooCostly, e.cost, c.budget)
	}
	if costErr != nil {
		// Remembered, so the verdict costs nothing the next time; charged
		// for its key only.
		e.cost = int64(len(doc)) + entryOverhead
		e.err = costErr
		close(e.done)
		c.insert(e)
		return nil, e.err
	}
	if !c.insert(e) {
		// Another caller inserted the same schema meanwhile.
		return c.get(name, doc)
	}
	// Take a compile slot, waiting at most the timeout: when none frees
	// up, forget the entry so that a later job tries again.
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case c.sem <- struct{}{}:
	case <-t.C:
		c.remove(e)
		e.err = errCompileBusy
		close(e.done)
		return nil, e.err
	}
	c.compiling.Add(1)
	go func() {
		defer func() {
			<-c.sem
			c.compiling.Add(-1)
		}()
		s, err := schemas.CompileBytes(name, doc)
		e.schema, e.err = s, err
		close(e.done)
	}()
	return c.waitTimer(e, t)
}

// wait waits up to the compile timeout for e's compile.
func (c *schemaCache) wait(e *schemaEntry) (*jsonschema.Schema, error) {
	select {
	case <-e.done:
		return e.schema, e.err
	default:
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	return c.waitTimer(e, t)
}

func (c *schemaCache) waitTimer(e *schemaEntry, t *time.Timer) (*jsonschema.Schema, error) {
	select {
	case <-e.done:
		return e.schema, e.err
	case <-t.C:
		return nil, errCompilePending
	}
}

// insert adds e unless an entry for its key exists, then drops least
// recently used entries until the cache is within its budget.
func (c *schemaCache) insert(e *schemaEntry) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[e.key]; ok {
		return false
	}
	c.m[e.key] = c.lru.PushFront(e)
	c.used += e.cost
	for c.used > c.budget && c.lru.Len() > 1 {
		old := c.lru.Back().Value.(*schemaEntry)
		c.removeLocked(old)
	}
	return true
}

func (c *schemaCache) remove(e *schemaEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(e)
}

func (c *schemaCache) removeLocked(e *schemaEntry) {
	el, ok := c.m[e.key]
	if !ok || el.Value.(*schemaEntry) != e {
		return
	}
	c.lru.Remove(el)
	delete(c.m, e.key)
	c.used -= e.cost
}

// estimate is the estimated heap of doc compiled.
func estimate(doc []byte) (int64, error) {
	v, err := schemas.DecodeJSON(doc)
	if err != nil {
		return 0, fmt.Errorf("schema is not JSON: %w", err)
	}
	return schemas.EstimateCost(v, len(doc)).Memory(), nil
}

// warn logs why a registered schema cannot be used, once per entry.
func (c *schemaCache) warn(rec discovery.Registration, kind string, doc []byte, err error) {
	if errors.Is(err, errCompilePending) || errors.Is(err, errCompileBusy) {
		c.log.Debug().Err(err).Str("algorithm", rec.Algorithm).Str("instance", rec.Instance).
			Msgf("%s schema not compiled yet; not checked this time", kind)
		return
	}
	c.mu.Lock()
	el, ok := c.m[string(doc)]
	c.mu.Unlock()
	if ok && !el.Value.(*schemaEntry).warned.CompareAndSwap(false, true) {
		return
	}
	c.log.Warn().Err(err).Str("algorithm", rec.Algorithm).Str("instance", rec.Instance).
		Msgf("registered %s schema cannot be used; %ss are not checked against it", kind, kind)
}

// validate checks body against the input schemas of the live instances
// regs. Input is valid when any live version accepts it, so a rolling
// upgrade that changes the schema rejects nothing that some instance can
// still serve; the violations reported are those of the most recently
// started instance. A schema that cannot be had (see get) makes the input
// pass: the runner checks it. It returns nil or a 400 *runner.Error.
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
		if seenSchema(regs[:i], rec.InputSchema, inputSchema) {
			continue
		}
		s, err := c.get(rec.Algorithm+".input.json", rec.InputSchema)
		if err != nil {
			c.warn(rec, "input", rec.InputSchema, err)
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

// validateOutput checks a successful reply's body against the output
// schema registered by the instance that answered, or, when that instance
// is not among regs (it deregistered while finishing the request, or the
// reply names no instance), against those of every instance in regs,
// accepting the output when any accepts it. It returns nil or a 502
// *runner.Error with the violations. An output schema that cannot be had
// (see get) accepts any JSON.
func (c *schemaCache) validateOutput(regs []discovery.Registration, instance string, body []byte) *runner.Error {
	v, err := decodeJSON(body)
	if err != nil {
		return &runner.Error{Code: runner.CodeBadGateway, Message: "runner replied with a body that is not JSON: " + err.Error()}
	}
	check := regs
	for i := range regs {
		if regs[i].Instance == instance {
			check = regs[i : i+1]
			break
		}
	}
	var first *runner.Error
	for i, rec := range check {
		if seenSchema(check[:i], rec.OutputSchema, outputSchema) {
			continue
		}
		s, err := c.get(rec.Algorithm+".output.json", rec.OutputSchema)
		if err != nil {
			c.warn(rec, "output", rec.OutputSchema, err)
			return nil
		}
		verr := s.Validate(v)
		if verr == nil {
			return nil
		}
		if first == nil {
			first = &runner.Error{Code: runner.CodeBadGateway, Message: "runner output does not match the registered output schema", Violations: schemas.Violations(verr)}
		}
	}
	return first
}

func inputSchema(r discovery.Registration) []byte  { return r.InputSchema }
func outputSchema(r discovery.Registration) []byte { return r.OutputSchema }

func seenSchema(regs []discovery.Registration, schema []byte, of func(discovery.Registration) []byte) bool {
	for _, r := range regs {
		if bytes.Equal(of(r), schema) {
			return true
		}
	}
	return false
}
