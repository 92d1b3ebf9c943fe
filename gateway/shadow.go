package gateway

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"pnpworker/discovery"
	"pnpworker/rollout"
	"pnpworker/runner"
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
		budget = runner.DefaultTimeout
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
