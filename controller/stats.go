package controller

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/procstats"
)

// StatsSubject is the subject every running controller answers a request
// on with its Stats; a requester collects the replies it gets within a
// short wait (there is one per controller). StatsSubjectOf names one
// controller's own subject.
const StatsSubject = "pnp.controller.stats"

// StatsSubjectOf is the stats subject of the controller named instance:
// pnp.controller.<instance>.stats.
func StatsSubjectOf(instance string) string { return "pnp.controller." + instance + ".stats" }

// Stats is what a controller reports about itself on StatsSubject: enough
// to tell a leak from a busy moment (goroutines, heap) and what it holds.
type Stats struct {
	// Instance is the controller's instance name (Config.Instance).
	Instance string `json:"instance"`
	// Started is when Run began taking jobs.
	Started time.Time `json:"started"`
	// Held is the number of jobs fetched from JOBS and not yet acked or
	// handed back: at most MaxInFlight running, plus those waiting for a
	// worker.
	Held int `json:"held"`
	// MaxInFlight is Config.MaxInFlight.
	MaxInFlight int `json:"max_in_flight"`
	// Process is the controller process's goroutines and heap.
	Process procstats.Snapshot `json:"process"`
	// Shadow counts shadow runs (started, compared, dropped under load)
	// and job history records.
	Shadow ShadowStats `json:"shadow"`
}

// Stats returns the controller's current Stats. It is safe for concurrent
// use.
func (c *Controller) Stats() Stats {
	c.heldMu.Lock()
	held := len(c.held)
	c.heldMu.Unlock()
	return Stats{
		Instance:    c.cfg.Instance,
		Started:     c.started,
		Held:        held,
		MaxInFlight: c.cfg.MaxInFlight,
		Process:     procstats.Read(),
		Shadow:      c.ShadowStats(),
	}
}

// serveStats answers StatsSubject and StatsSubjectOf(instance) until the
// returned function is called. A failure to subscribe (e.g. a deployment
// whose permissions leave the subjects out) is logged, not fatal: stats
// are for operators and soak tests, jobs do not depend on them.
func (c *Controller) serveStats() (stop func()) {
	var subs []*nats.Subscription
	for _, subj := range []string{StatsSubject, StatsSubjectOf(c.cfg.Instance)} {
		sub, err := c.nc.Subscribe(subj, func(m *nats.Msg) {
			if m.Reply == "" {
				return
			}
			b, err := json.Marshal(c.Stats())
			if err != nil {
				return
			}
			_ = m.Respond(b)
		})
		if err != nil {
			c.log.Warn().Err(err).Str("subject", subj).Msg("stats not served")
			continue
		}
		subs = append(subs, sub)
	}
	// Subscriptions reach the server asynchronously; flush so that a
	// request sent once Ready is closed finds them.
	if err := c.nc.FlushTimeout(2 * time.Second); err != nil {
		c.log.Debug().Err(err).Msg("flush after subscribing to stats")
	}
	return func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
}
