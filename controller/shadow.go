package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"pnpworker/discovery"
	"pnpworker/rollout"
	"pnpworker/runner"
)

// DefaultShadowConcurrency bounds the shadow requests one controller runs
// at once.
const DefaultShadowConcurrency = 8

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
	// Recorded jobs in HISTORY; RecordFailed could not be stored;
	// RecordTooLarge did not fit one message.
	Recorded       int64 `json:"recorded"`
	RecordFailed   int64 `json:"record_failed"`
	RecordTooLarge int64 `json:"record_too_large"`
	// CanaryRejected jobs were picked for the canary, whose input schema
	// rejects them, and went to the stable version instead.
	CanaryRejected int64 `json:"canary_rejected"`
}

// shadows runs the shadow requests of one Run.
type shadows struct {
	ctx  context.Context
	c    *Controller
	sem  chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	started, compared, dropped, noInstance, storeFailed atomic.Int64
	// recorded and recordFailed count history records (history.go).
	recorded, recordFailed, recordTooLarge atomic.Int64
}

func newShadows(ctx context.Context, c *Controller) *shadows {
	s := &shadows{ctx: ctx, c: c, sem: make(chan struct{}, c.cfg.Shadow.Concurrency)}
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

// wait waits for the shadow requests in flight (cancelled with the
// controller's background context).
func (s *shadows) wait() { s.wg.Wait() }

// ShadowStats returns the shadow counters. It is safe for concurrent use.
func (c *Controller) ShadowStats() ShadowStats {
	s := c.shadows.Load()
	if s == nil {
		return ShadowStats{CanaryRejected: c.rollout.canaryRejected.Load()}
	}
	return ShadowStats{Started: s.started.Load(), Compared: s.compared.Load(), Dropped: s.dropped.Load(),
		NoInstance: s.noInstance.Load(), StoreFailed: s.storeFailed.Load(),
		Recorded: s.recorded.Load(), RecordFailed: s.recordFailed.Load(), RecordTooLarge: s.recordTooLarge.Load(),
		CanaryRejected: c.rollout.canaryRejected.Load()}
}

// afterReply is called when a runner answered a job: it records a sample
// of succeeded jobs in HISTORY and runs the shadow. Neither blocks the job.
func (c *Controller) afterReply(alg, id string, body []byte, reply *nats.Msg, took time.Duration) {
	c.recordHistory(alg, id, body, reply, took)
	c.shadow(alg, id, body, reply, took)
}

// shadow runs a job's input on its route's shadow version, in the
// background, when the stable version gave reply after took. It never
// blocks: with every slot busy the job is not shadowed, and counted.
func (c *Controller) shadow(alg, id string, body []byte, reply *nats.Msg, took time.Duration) {
	s := c.shadows.Load()
	if s == nil || c.routes == nil {
		return
	}
	r, ok := c.routes.Lookup(alg)
	if !ok || r.Shadow == "" || reply.Header.Get(runner.HeaderVersion) != r.Stable {
		return
	}
	stableErr := runner.ReplyError(reply)
	if stableErr != nil && stableErr.NotStarted {
		return // refused before running (overload, draining): nothing to compare
	}
	var regs []discovery.Registration
	for _, x := range c.cache.Lookup(alg) {
		if x.Version == r.Shadow {
			regs = append(regs, x)
		}
	}
	if len(regs) == 0 {
		s.noInstance.Add(1)
		return
	}
	select {
	case s.sem <- struct{}{}:
	default:
		if s.dropped.Add(1) == 1 {
			c.log.Warn().Str("algorithm", alg).Int("concurrency", cap(s.sem)).Msg("shadow slots all busy: dropping shadow runs (counted in ShadowStats)")
		}
		return
	}
	s.started.Add(1)
	cmp := rollout.Comparison{Algorithm: alg, JobID: id, Source: rollout.SourceShadow, StableVersion: r.Stable,
		CandidateVersion: r.Shadow, StableMS: ms(took)}
	if stableErr != nil {
		cmp.StableError = fmt.Sprintf("%d: %s", stableErr.Code, stableErr.Message)
	}
	stable := reply
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		s.run(cmp, body, stable, plan(regs))
	}()
}

// outputReadTimeout bounds reading one output stored by reference for a
// comparison.
const outputReadTimeout = 30 * time.Second

// maxComparedOutput bounds an output by reference read back to be
// compared: the controller's bound for checking one, or the default when
// that check is off.
func (c *Controller) maxComparedOutput() int64 {
	if c.cfg.MaxReferencedOutputBytes > 0 {
		return c.cfg.MaxReferencedOutputBytes
	}
	return DefaultMaxReferencedOutputBytes
}

func (s *shadows) run(cmp rollout.Comparison, body []byte, stable *nats.Msg, budget time.Duration) {
	c := s.c
	ctx, cancel := context.WithTimeout(s.ctx, budget+budget/10+100*time.Millisecond)
	defer cancel()
	// Outputs stored by reference are compared by content, read here, off
	// the job's path.
	var stableOut []byte
	if cmp.StableError == "" {
		rctx, cancel := context.WithTimeout(s.ctx, outputReadTimeout)
		var err error
		stableOut, err = rollout.ReplyOutput(rctx, c.js, stable, c.maxComparedOutput())
		cancel()
		if err != nil {
			cmp.StableError = fmt.Sprintf("%d: %v", runner.CodeBadGateway, err)
		}
	}
	msg := &nats.Msg{Subject: discovery.PinnedSubject(cmp.Algorithm, cmp.CandidateVersion), Data: body,
		Header: nats.Header{runner.HeaderJobID: {cmp.JobID}, runner.HeaderTimeout: {budget.String()}}}
	start := time.Now()
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	cmp.CandidateMS = ms(time.Since(start))
	var out []byte
	switch {
	case s.ctx.Err() != nil:
		return // the controller is stopping: no verdict
	case err != nil:
		cmp.CandidateError = fmt.Sprintf("%d: %v", runner.CodeDeadline, err)
		if errors.Is(err, nats.ErrNoResponders) {
			cmp.CandidateError = fmt.Sprintf("%d: no responders", runner.CodeUnavailable)
		}
	default:
		if e := runner.ReplyError(reply); e != nil {
			cmp.CandidateError = fmt.Sprintf("%d: %s", e.Code, e.Message)
		} else {
			rctx, cancel := context.WithTimeout(s.ctx, outputReadTimeout)
			out, err = rollout.ReplyOutput(rctx, c.js, reply, c.maxComparedOutput())
			cancel()
			if err != nil {
				cmp.CandidateError = fmt.Sprintf("%d: %v", runner.CodeBadGateway, err)
			}
		}
	}
	cmp.Decide(stableOut, out, c.cfg.Shadow.Compare)
	cmp.At = time.Now().UTC()
	if err := publishComparison(s.ctx, c, cmp); err != nil {
		if s.storeFailed.Add(1) == 1 {
			c.log.Warn().Err(err).Msg("cannot store a shadow comparison (counted in ShadowStats)")
		}
		return
	}
	s.compared.Add(1)
	c.metrics.compared(cmp.Algorithm, cmp.Equal)
}

func publishComparison(ctx context.Context, c *Controller, cmp rollout.Comparison) error {
	b, err := json.Marshal(cmp)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = c.js.Publish(pctx, rollout.CompareSubjectPrefix+cmp.Algorithm, b)
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
