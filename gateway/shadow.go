package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
)

// shadow runs a request's input on its route's shadow version, in the
// background, when the stable version gave reply after took
// (rollout.Shadower), with the caller's time budget limit (0: none) as
// the stable version had. It never blocks.
func (g *Gateway) shadow(name string, body []byte, reply *nats.Msg, took, limit time.Duration) {
	sh := g.shadower.Load()
	if sh == nil {
		return
	}
	r, ok := g.routeTable.Lookup(name)
	if !ok || r.Shadow == "" {
		return
	}
	var candidates []discovery.Registration
	var budget time.Duration
	for _, reg := range g.cache.Lookup(name) {
		if reg.Version == r.Shadow {
			candidates = append(candidates, reg)
			budget = max(budget, reg.Timeout())
		}
	}
	if budget <= 0 {
		budget = protocol.DefaultTimeout
	}
	if limit > 0 {
		budget = min(budget, limit)
	}
	sh.Offer(rollout.ShadowInput{Route: r, Candidates: candidates, Budget: budget, Body: body, Stable: reply, StableTook: took})
}

// shadowMetrics are pnp_gateway_shadow_runs_total{outcome}, read from the
// shadower's counters at scrape time.
func (g *Gateway) shadowMetrics() []prometheus.Collector {
	const name, help = "pnp_gateway_shadow_runs_total", "Requests considered for a shadow run, by outcome: compared (stored in COMPARE with a verdict), not_compared (stored without: an output by reference could not be read), dropped (every slot busy), no_instance (no live shadow version), store_failed."
	counts := func() rollout.ShadowCounts {
		if sh := g.shadower.Load(); sh != nil {
			return sh.Counts()
		}
		return rollout.ShadowCounts{}
	}
	var cs []prometheus.Collector
	for outcome, f := range map[string]func(rollout.ShadowCounts) int64{
		"compared":     func(n rollout.ShadowCounts) int64 { return n.Compared },
		"dropped":      func(n rollout.ShadowCounts) int64 { return n.Dropped },
		"no_instance":  func(n rollout.ShadowCounts) int64 { return n.NoInstance },
		"store_failed": func(n rollout.ShadowCounts) int64 { return n.StoreFailed },
		"not_compared": func(n rollout.ShadowCounts) int64 { return n.NotCompared },
	} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"outcome": outcome}},
			func() float64 { return float64(f(counts())) }))
	}
	return cs
}

// ShadowCounts returns the counters of the request shadow runs (zero
// before Serve, and when Config.Shadow.Concurrency < 0).
func (g *Gateway) ShadowCounts() rollout.ShadowCounts {
	if sh := g.shadower.Load(); sh != nil {
		return sh.Counts()
	}
	return rollout.ShadowCounts{}
}

// listRoutes is GET /v1/routes: every route (docs/ROLLOUT.md), sorted by
// algorithm.
func (g *Gateway) listRoutes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, g.routeTable.All())
}

// Bounds of GET /v1/algorithms/{name}/comparisons?last=N.
const (
	defaultComparisons = 500
	maxComparisons     = 10000
)

// reportTTL is how long a comparisons report is reused: a dashboard
// polls it, and a read creates a consumer.
const reportTTL = 2 * time.Second

// reportCache holds recent comparisons reports by query.
type reportCache struct {
	mu sync.Mutex
	m  map[string]cachedReport
}

type cachedReport struct {
	at  time.Time
	rep rollout.Report
}

// maxCachedReports bounds the cache: queries come from any client.
const maxCachedReports = 64

func (c *reportCache) get(key string) (rollout.Report, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || time.Since(e.at) > reportTTL {
		return rollout.Report{}, false
	}
	return e.rep, true
}

func (c *reportCache) put(key string, rep rollout.Report) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedReports {
		c.m = map[string]cachedReport{}
	}
	c.m[key] = cachedReport{at: time.Now(), rep: rep}
}

// comparisons is GET /v1/algorithms/{name}/comparisons: the report of the
// algorithm's last shadow comparisons (what pnp route report prints),
// optionally of one candidate version only.
func (g *Gateway) comparisons(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !discovery.ValidAlgorithmName(name) {
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("%q is not an algorithm name", name)})
		return
	}
	last := defaultComparisons
	if v := r.URL.Query().Get("last"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxComparisons {
			writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("last=%q: want a number from 1 to %d", v, maxComparisons)})
			return
		}
		last = n
	}
	candidate := r.URL.Query().Get("candidate")
	key := name + "\x00" + strconv.Itoa(last) + "\x00" + candidate
	if rep, ok := g.reports.get(key); ok {
		writeJSON(w, http.StatusOK, rep)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	cs, err := rollout.ReadComparisons(ctx, g.js, name, time.Time{}, last)
	switch {
	case err == nil, errors.Is(err, jetstream.ErrStreamNotFound):
		if candidate != "" {
			cs = slices.DeleteFunc(cs, func(c rollout.Comparison) bool { return c.CandidateVersion != candidate })
		}
		rep := rollout.Summarize(name, cs)
		g.reports.put(key, rep)
		writeJSON(w, http.StatusOK, rep)
	case r.Context().Err() != nil:
	default:
		g.log.Warn().Err(err).Str("algorithm", name).Msg("reading comparisons failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: name, Message: "cannot read the comparisons: JetStream unavailable"})
	}
}
