package replycheck

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
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

// Cache compiles registered schemas (input and output) once, keyed
// by their content, so replicas of one version share a compiled schema
// and a new version is compiled when it first appears. It is safe for
// concurrent use.
//
// It is bounded in bytes, not entries: each entry is charged the
// estimated heap of its compiled schema (schemas.Cost.Memory) plus its
// key, and the least recently used entries are dropped to stay within
// the budget. A compile runs in its own goroutine; callers wait for it at
// most the compile timeout, and at most maxCompiles run at once.
type Cache struct {
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
	schema *schemas.Limited
	err    error
}

// NewCache returns an empty cache whose compiled schemas take at most
// budget bytes (estimated heap) and whose callers wait at most timeout for
// a schema to compile. log receives why a registered schema cannot be
// used, once per schema.
func NewCache(log zerolog.Logger, budget int64, timeout time.Duration) *Cache {
	return &Cache{
		log:     log,
		budget:  budget,
		timeout: timeout,
		sem:     make(chan struct{}, maxCompiles),
		m:       map[string]*list.Element{},
		lru:     list.New(),
	}
}

// size reports the bytes charged and the number of entries.
func (c *Cache) size() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, c.lru.Len()
}

// get returns the compiled form of doc, compiling it if needed, or an
// error saying why it cannot be had now (does not compile, too costly,
// compile still running or too many running).
func (c *Cache) get(name string, doc []byte) (*schemas.Limited, error) {
	if e := c.cached(doc); e != nil {
		return c.wait(e)
	}

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
		s, err := schemas.CompileLimited(name, doc)
		e.schema, e.err = s, err
		if err == nil && s.CompiledTwice() {
			c.charge(e, cost)
		}
		close(e.done)
	}()
	return c.waitTimer(e, t)
}

// cached returns the entry of doc, most recently used now, or nil.
func (c *Cache) cached(doc []byte) *schemaEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[string(doc)]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(el)
	return el.Value.(*schemaEntry)
}

// getFor is get for the schema of kind ("input" or "output") of
// algorithm, naming it (which allocates) only to compile it.
func (c *Cache) getFor(algorithm, kind string, doc []byte) (*schemas.Limited, error) {
	if e := c.cached(doc); e != nil {
		return c.wait(e)
	}
	return c.get(algorithm+"."+kind+".json", doc)
}

// wait waits up to the compile timeout for e's compile.
func (c *Cache) wait(e *schemaEntry) (*schemas.Limited, error) {
	select {
	case <-e.done:
		return e.schema, e.err
	default:
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	return c.waitTimer(e, t)
}

func (c *Cache) waitTimer(e *schemaEntry, t *time.Timer) (*schemas.Limited, error) {
	select {
	case <-e.done:
		return e.schema, e.err
	case <-t.C:
		return nil, errCompilePending
	}
}

// insert adds e unless an entry for its key exists, then drops least
// recently used entries until the cache is within its budget.
func (c *Cache) insert(e *schemaEntry) bool {
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

// charge adds extra bytes to e's cost, while it is in the cache, and
// drops least recently used entries to stay within the budget.
func (c *Cache) charge(e *schemaEntry, extra int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[e.key]
	if !ok || el.Value.(*schemaEntry) != e {
		return
	}
	e.cost += extra
	c.used += extra
	for c.used > c.budget && c.lru.Len() > 1 {
		old := c.lru.Back().Value.(*schemaEntry)
		if old == e {
			break
		}
		c.removeLocked(old)
	}
}

func (c *Cache) remove(e *schemaEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(e)
}

func (c *Cache) removeLocked(e *schemaEntry) {
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
func (c *Cache) warn(rec discovery.Registration, kind string, doc []byte, err error) {
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

// validationBudget is what checking one body may cost (the units of
// schemas.Limited.Validate: about one per schema evaluated): a base for
// small bodies, plus some per byte, since a legitimate check grows with
// the body. 16384 units of the costliest kind (deeply nested failing
// branches) take about 40 ms and 45 MB; a 1 MiB body may take up to 4M.
func validationBudget(body []byte) int64 { return 16_384 + 4*int64(len(body)) }

// Validate checks body against the input schemas of the live instances
// regs. Input is valid when any live version accepts it, so a rolling
// upgrade that changes the schema rejects nothing that some instance can
// still serve. Each distinct schema is checked once, those of the most
// instances first, and all of them together within one budget
// (validationBudget), so the schemas of some instances never cost a job
// more than that, however many or costly they are. When no schema
// accepts the input, it fails only if every schema was checked: a schema
// that cannot be had (see get) or the budget running out lets the input
// go on unchecked, as the runner checks it. An input nested deeper than
// schemas.MaxNesting fails whatever the schemas. It returns nil or a 400
// *protocol.Error with the violations of the first schema tried.
func (c *Cache) Validate(regs []discovery.Registration, body []byte) *protocol.Error {
	// Decoded only when a schema's quick check (schemas.Limited.Quick)
	// cannot decide alone.
	var v any
	decoded := false
	decode := func() *protocol.Error {
		if decoded {
			return nil
		}
		var err error
		if v, err = decodeJSON(body); err != nil {
			return &protocol.Error{Code: protocol.CodeInvalidInput, Message: "malformed JSON: " + err.Error()}
		}
		decoded = true
		return nil
	}
	var first *protocol.Error
	budget := validationBudget(body)
	for _, rec := range bySchema(regs, inputSchema) {
		s, err := c.getFor(rec.Algorithm, "input", rec.InputSchema)
		if err != nil {
			c.warn(rec, "input", rec.InputSchema, err)
			return decode()
		}
		if s.Quick(body) == schemas.Valid {
			return nil
		}
		if perr := decode(); perr != nil {
			return perr
		}
		used, verr := s.Validate(v, budget)
		budget -= used
		if verr == nil {
			return nil
		}
		if vs := schemas.Violations(verr); vs != nil {
			if first == nil {
				first = &protocol.Error{Code: protocol.CodeInvalidInput, Message: "input does not match the schema", Violations: vs}
			}
			continue
		}
		if errors.Is(verr, schemas.ErrTooDeep) {
			// Whatever the schema: no check (the runner's neither) can
			// afford it, and no JSON input needs that depth.
			return &protocol.Error{Code: protocol.CodeInvalidInput, Message: fmt.Sprintf(
				"input nested more than %d levels deep: too deep to check against the schema", schemas.MaxNesting)}
		}
		// Too costly within what is left of the budget, or a schema
		// the validator cannot finish: not a verdict.
		c.log.Debug().Err(verr).Str("algorithm", rec.Algorithm).Str("instance", rec.Instance).
			Msg("input not checked against a registered schema")
		return nil
	}
	if first != nil {
		return first
	}
	return decode()
}

// ValidateOutput checks a successful reply's body against the output
// schema registered by the instance that answered, among all live
// instances all (not only those of the version the job was sent to), or,
// when no live instance has that name (it deregistered while finishing
// the request, or the reply names none), against those of every instance
// in regs, accepting the output when any accepts it. It returns nil or a
// 502 *protocol.Error with the violations. An output schema that cannot be
// had (see get) accepts any JSON; an output too costly to check within
// validationBudget fails like one that does not match, since nothing else
// checks it. What a runner could forge is checked every time: the quick
// check (schemas.Limited.Quick) only spares decoding a body it proves
// valid, and a permissive schema ({} or true) still requires JSON.
func (c *Cache) ValidateOutput(all, regs []discovery.Registration, instance string, body []byte) *protocol.Error {
	var v any
	decoded := false
	decode := func() *protocol.Error {
		if decoded {
			return nil
		}
		var err error
		if v, err = decodeJSON(body); err != nil {
			return &protocol.Error{Code: protocol.CodeBadGateway, Message: "runner replied with a body that is not JSON: " + err.Error()}
		}
		decoded = true
		return nil
	}
	check := regs
	for i := range all {
		if all[i].Instance == instance {
			check = all[i : i+1]
			break
		}
	}
	var first *protocol.Error
	budget := validationBudget(body)
	for _, rec := range bySchema(check, outputSchema) {
		s, err := c.getFor(rec.Algorithm, "output", rec.OutputSchema)
		if err != nil {
			c.warn(rec, "output", rec.OutputSchema, err)
			return decode()
		}
		if s.Quick(body) == schemas.Valid {
			return nil
		}
		if perr := decode(); perr != nil {
			return perr
		}
		used, verr := s.Validate(v, budget)
		budget -= used
		if verr == nil {
			return nil
		}
		if first == nil {
			vs := schemas.Violations(verr)
			if vs == nil {
				vs = []schemas.Violation{{Message: verr.Error()}}
			}
			first = &protocol.Error{Code: protocol.CodeBadGateway, Message: "runner output does not match the registered output schema", Violations: vs}
		}
		if budget <= 0 {
			break
		}
	}
	if first != nil {
		return first
	}
	return decode()
}

func inputSchema(r discovery.Registration) []byte  { return r.InputSchema }
func outputSchema(r discovery.Registration) []byte { return r.OutputSchema }

// bySchema returns one registration per distinct schema of regs (as of
// gives it), those shared by the most instances first, then by key: the
// order does not depend on anything an instance says about itself.
func bySchema(regs []discovery.Registration, of func(discovery.Registration) []byte) []discovery.Registration {
	if len(regs) == 1 {
		return regs
	}
	type group struct {
		rec discovery.Registration
		n   int
	}
	var groups []group
next:
	for _, r := range regs {
		for i := range groups {
			if bytes.Equal(of(groups[i].rec), of(r)) {
				groups[i].n++
				continue next
			}
		}
		groups = append(groups, group{r, 1})
	}
	// Lookup sorts by key, so a stable sort by count keeps the key order
	// between groups of equal size.
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].n > groups[j].n })
	out := make([]discovery.Registration, len(groups))
	for i, g := range groups {
		out[i] = g.rec
	}
	return out
}
