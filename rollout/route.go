// Package rollout runs versions of one algorithm side by side. A route,
// one record per algorithm in the JetStream KV bucket "routes", names the
// stable version and optionally a canary (a share of jobs) and a shadow
// (every job's input, run off the critical path and compared).
//
// Runners read their algorithms' routes with direct gets (they may create
// no consumer, so no Table) and decide with PlainMember whether they
// belong to the shared queue group on run.<algorithm>; the controller and
// the gateway keep a Table, a watch of the bucket, and the controller uses
// it to pick the version of each job (Pick). Every instance always serves
// the pinned subject of its own version (discovery.PinnedSubject), so a
// route never makes a version unreachable.
package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/schemas"
)

// Route is the record of one algorithm in the routes bucket. Its JSON form
// is defined by schemas/route.json.
type Route struct {
	Algorithm string `json:"algorithm"`
	// Stable is the only version in the shared queue group on
	// run.<algorithm> while it has a live instance.
	Stable string `json:"stable"`
	// Canary receives Percent % of jobs on its pinned subject.
	Canary  string  `json:"canary,omitempty"`
	Percent float64 `json:"percent,omitempty"`
	// Shadow also runs every job's input; its output is only compared.
	Shadow    string    `json:"shadow,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by,omitempty"`
}

// MaxRecordSize bounds a route record in bytes.
const MaxRecordSize = 4 << 10

// ErrInvalidRoute is wrapped by every error about a route that does not
// satisfy schemas/route.json or the rules between its fields.
var ErrInvalidRoute = errors.New("invalid route")

// ErrNoRoute is returned by Store.Get and Store.Promote for an algorithm
// without a route.
var ErrNoRoute = errors.New("no route")

// Codec encodes and decodes route records. It is safe for concurrent use.
type Codec struct{ schema *jsonschema.Schema }

// NewCodec returns a codec over the route schema, compiled once per
// process at the first call: every registry, cache and view of a process
// (pnp up has several) shares it.
func NewCodec() (*Codec, error) {
	s, err := routeSchema()
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return &Codec{schema: s}, nil
}

// routeSchema compiles schemas/route.json once. A compiled
// schema is immutable and safe for concurrent use, like a package-level
// regexp.
var routeSchema = sync.OnceValues(func() (*jsonschema.Schema, error) { return schemas.Compile("route.json") })

// Encode validates r and returns its JSON form.
func (c *Codec) Encode(r Route) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("rollout: encode route %s: %w", r.Algorithm, err)
	}
	if _, err := c.Decode(r.Algorithm, b); err != nil {
		return nil, err
	}
	return b, nil
}

// Decode parses and validates the record stored under key (the algorithm).
func (c *Codec) Decode(key string, data []byte) (Route, error) {
	if len(data) > MaxRecordSize {
		return Route{}, fmt.Errorf("%w: %d bytes, more than the limit of %d", ErrInvalidRoute, len(data), MaxRecordSize)
	}
	v, err := schemas.DecodeJSON(data)
	if err != nil {
		return Route{}, fmt.Errorf("%w: %v", ErrInvalidRoute, err)
	}
	if err := c.schema.Validate(v); err != nil {
		return Route{}, fmt.Errorf("%w: %v", ErrInvalidRoute, err)
	}
	var r Route
	if err := json.Unmarshal(data, &r); err != nil {
		return Route{}, fmt.Errorf("%w: %v", ErrInvalidRoute, err)
	}
	if r.Algorithm != key {
		return Route{}, fmt.Errorf("%w: key %q holds the route of %q", ErrInvalidRoute, key, r.Algorithm)
	}
	if err := r.check(); err != nil {
		return Route{}, err
	}
	return r, nil
}

func (r Route) check() error {
	var errs []error
	if !discovery.ValidAlgorithmName(r.Algorithm) {
		errs = append(errs, fmt.Errorf("algorithm %q is not a valid name", r.Algorithm))
	}
	if r.Canary != "" && r.Canary == r.Stable {
		errs = append(errs, fmt.Errorf("canary %s is the stable version", r.Canary))
	}
	if r.Shadow != "" && r.Shadow == r.Stable {
		errs = append(errs, fmt.Errorf("shadow %s is the stable version", r.Shadow))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoute, err)
	}
	return nil
}

// Candidate is the version promote makes stable: the canary, else the
// shadow; "" when the route names neither.
func (r Route) Candidate() string {
	if r.Canary != "" {
		return r.Canary
	}
	return r.Shadow
}

// NotLive returns the versions r names (stable, canary, shadow, in that
// order) without an instance among regs, the algorithm's registrations:
// until one starts, the share of such a version goes to any live version.
func (r Route) NotLive(regs []discovery.Registration) []string {
	live := map[string]bool{}
	for _, x := range regs {
		live[x.Version] = true
	}
	var out []string
	for _, v := range []string{r.Stable, r.Canary, r.Shadow} {
		if v != "" && !live[v] {
			out = append(out, v)
		}
	}
	return out
}

// PlainMember reports whether an instance of version belongs to the shared
// queue group on run.<algorithm>, given the algorithm's route (ok false:
// none) and whether the route's stable version has a live instance. With
// no route every version belongs (today's behaviour); with one, only the
// stable version, unless it has no live instance: then every version
// falls back in, so that plain traffic is served rather than lost.
func PlainMember(r Route, ok bool, version string, stableLive bool) bool {
	return !ok || r.Stable == version || !stableLive
}

// Role names the part version plays for plain traffic of an algorithm,
// given its route (ok false: none) and whether the route's stable version
// has a live instance: "stable"; "canary:<percent>%"; "shadow";
// "fallback" (the stable version has no live instance, so every version
// serves run.<algorithm>, as PlainMember says); "unrouted" (the route
// names other versions); or "any" (no route). pnp algorithms shows it.
func Role(r Route, ok bool, version string, stableLive bool) string {
	switch {
	case !ok:
		return "any"
	case version == r.Stable:
		return "stable"
	case !stableLive:
		return "fallback"
	case version == r.Canary:
		return fmt.Sprintf("canary:%g%%", r.Percent)
	case version == r.Shadow:
		return "shadow"
	}
	return "unrouted"
}

// Choice is the version a job goes to.
type Choice struct {
	// Version is "" when the job goes to run.<algorithm>, any version.
	Version string
	// Canary is set when the job was picked for the canary.
	Canary bool
	// Fallback is set when the route names a version with no live
	// instance and the job goes to any live version instead.
	Fallback bool
}

// Subject is where the job is sent: the pinned subject of the chosen
// version, or run.<algorithm>.
func (c Choice) Subject(algorithm string) string {
	if c.Version == "" {
		return discovery.RequestSubject(algorithm)
	}
	return discovery.PinnedSubject(algorithm, c.Version)
}

// Pick chooses the version of one job. u is a uniform random number in
// [0, 1): the job goes to the canary when u < Percent/100 and the canary
// is live. live reports whether a version has a live instance.
func Pick(r Route, ok bool, u float64, live func(version string) bool) Choice {
	if !ok {
		return Choice{}
	}
	if r.Canary != "" && u < r.Percent/100 && live(r.Canary) {
		return Choice{Version: r.Canary, Canary: true}
	}
	if live(r.Stable) {
		return Choice{Version: r.Stable}
	}
	return Choice{Fallback: true}
}
