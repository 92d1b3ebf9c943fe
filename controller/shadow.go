package controller

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/rollout"
)

// DefaultShadowConcurrency bounds the shadow requests one controller runs
// at once.
const DefaultShadowConcurrency = rollout.DefaultShadowConcurrency

// ShadowConfig configures shadow runs: when a route names a shadow
// version, each job answered by the stable version also runs on the
// shadow, off the critical path, and the two answers are compared into
// the COMPARE stream. The zero value is the default.
type ShadowConfig struct {
	// Concurrency bounds the shadow requests in flight; a job that finds
	// them all busy is not shadowed (counted as dropped). Default
	// DefaultShadowConcurrency.
	Concurrency int
	// Compare sets the numeric tolerance and ignored fields. Default:
	// rollout.DefaultTolerance, nothing ignored.
	Compare rollout.CompareOptions
	// Stream bounds the COMPARE stream the controller provisions (unless
	// Config.Bind). Default: see rollout.CompareConfig.
	Stream rollout.CompareConfig
}

func (c *ShadowConfig) setDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultShadowConcurrency
	}
}

// Validate reports every problem with c.
func (c ShadowConfig) Validate() error {
	var errs []error
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("shadow concurrency %d is negative", c.Concurrency))
	}
	errs = append(errs, c.Stream.Validate())
	return errors.Join(errs...)
}

// ShadowStats counts shadow runs and history records since the
// controller started.
type ShadowStats struct {
	// Started shadow requests, and Compared: their comparison stored.
	Started  int64 `json:"started"`
	Compared int64 `json:"compared"`
	// Dropped jobs found every shadow slot busy.
	Dropped int64 `json:"dropped"`
	// NoInstance jobs found no live instance of the shadow version.
	NoInstance int64 `json:"no_instance"`
	// StoreFailed comparisons could not be stored in COMPARE.
	StoreFailed int64 `json:"store_failed"`
	// NotCompared comparisons were stored without a verdict: an output
	// stored by reference could not be read.
	NotCompared int64 `json:"not_compared"`
	// Recorded jobs in HISTORY; RecordFailed could not be stored;
	// RecordTooLarge did not fit one message.
	Recorded       int64 `json:"recorded"`
	RecordFailed   int64 `json:"record_failed"`
	RecordTooLarge int64 `json:"record_too_large"`
	// CanaryRejected jobs were picked for the canary, whose input schema
	// rejects them, and went to the stable version instead.
	CanaryRejected int64 `json:"canary_rejected"`
}

// shadows runs the shadow requests of one Run and counts its history
// records.
type shadows struct {
	*rollout.Shadower
	// recorded and recordFailed count history records (history.go).
	recorded, recordFailed, recordTooLarge atomic.Int64
}

func newShadows(ctx context.Context, c *Controller) *shadows {
	s := &shadows{Shadower: rollout.NewShadower(ctx, c.nc, c.js, rollout.ShadowOptions{
		Concurrency:    c.cfg.Shadow.Concurrency,
		Compare:        c.cfg.Shadow.Compare,
		MaxOutputBytes: c.maxComparedOutput(),
		Logger:         c.log,
		OnCompared:     func(cmp rollout.Comparison) { c.metrics.compared(cmp.Algorithm, cmp.Equal) },
	})}
	if !c.cfg.Bind {
		if _, err := rollout.ProvisionCompare(ctx, c.js, c.cfg.Shadow.Stream); err != nil {
			c.log.Warn().Err(err).Msg("cannot provision the COMPARE stream; shadow comparisons will not be stored")
		}
		if c.cfg.History.Rate > 0 {
			if _, err := rollout.ProvisionHistory(ctx, c.js, c.cfg.History); err != nil {
				c.log.Warn().Err(err).Msg("cannot provision the HISTORY stream; job inputs will not be recorded")
			}
		}
	}
	return s
}

// ShadowStats returns the shadow counters. It is safe for concurrent use.
func (c *Controller) ShadowStats() ShadowStats {
	s := c.shadows.Load()
	if s == nil {
		return ShadowStats{CanaryRejected: c.rollout.canaryRejected.Load()}
	}
	n := s.Counts()
	return ShadowStats{Started: n.Started, Compared: n.Compared, Dropped: n.Dropped,
		NoInstance: n.NoInstance, StoreFailed: n.StoreFailed, NotCompared: n.NotCompared,
		Recorded: s.recorded.Load(), RecordFailed: s.recordFailed.Load(), RecordTooLarge: s.recordTooLarge.Load(),
		CanaryRejected: c.rollout.canaryRejected.Load()}
}

// afterReply is called when a runner answered a job: it records a sample
// of succeeded jobs in HISTORY and runs the shadow. Neither blocks the job.
// limit is the job's own time budget (Pnp-Timeout), 0 if it has none.
func (c *Controller) afterReply(alg, id string, body []byte, reply *nats.Msg, took, limit time.Duration) {
	c.recordHistory(alg, id, body, reply, took)
	c.shadow(alg, id, body, reply, took, limit)
}

// shadow runs a job's input on its route's shadow version, in the
// background, when the stable version gave reply after took
// (rollout.Shadower), with the same budget limit as the stable version.
func (c *Controller) shadow(alg, id string, body []byte, reply *nats.Msg, took, limit time.Duration) {
	s := c.shadows.Load()
	if s == nil || c.routes == nil {
		return
	}
	r, ok := c.routes.Lookup(alg)
	if !ok || r.Shadow == "" {
		return
	}
	candidates := ofVersion(c.cache.Lookup(alg), r.Shadow)
	budget := plan(candidates)
	if limit > 0 {
		budget = min(budget, limit)
	}
	s.Offer(rollout.ShadowInput{Route: r, Candidates: candidates, Budget: budget,
		JobID: id, Body: body, Stable: reply, StableTook: took})
}

// maxComparedOutput bounds an output by reference read back to be
// compared: the controller's bound for checking one, or the default when
// that check is off.
func (c *Controller) maxComparedOutput() int64 {
	if c.cfg.MaxReferencedOutputBytes > 0 {
		return c.cfg.MaxReferencedOutputBytes
	}
	return DefaultMaxReferencedOutputBytes
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
