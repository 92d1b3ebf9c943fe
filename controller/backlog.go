package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
)

// An algorithm's durable consumer on JOBS, ConsumerName(algorithm), is what
// an autoscaler reads to see its backlog: KEDA's nats-jetstream scaler asks
// the server's monitoring endpoint for the consumer's num_pending plus
// num_ack_pending, and when the consumer is missing it reads the whole
// stream's last sequence instead. So the consumer must exist from the first
// job of an algorithm no runner has ever served, and for as long as jobs
// wait, not only while a runner is live.
//
// The controller makes it so: every backlogPeriod it lists the subjects of
// JOBS that hold jobs and the consumers on JOBS, creates the missing
// consumer of each algorithm with jobs waiting, and gives it no inactive
// threshold, so the server keeps it however long nobody pulls. Once an
// algorithm's jobs are gone, the controller gives its consumer
// ConsumerInactiveThreshold again and the server deletes it after that long
// without pulls, as before. Config.KeepConsumers names algorithms whose
// consumers never lose it. Producers create no consumers (a consumer's
// deliver subject is not checked against its creator's permissions), and
// the controller is the one role that already owns these consumers'
// settings, so the work is the controller's.
//
// Jobs of priority high and low wait on subjects and consumers of their own
// (jobs.PriorityConsumerName), which are tended the same way, each on its
// own jobs; a kept algorithm keeps all three, since its ScaledObject reads
// all three.

// backlogPeriod is how often a controller tends the consumers of JOBS:
// how long after its first job an algorithm's backlog may take to become
// visible. A variable so tests can shorten it.
var backlogPeriod = 5 * time.Second

// inactiveThreshold is the inactive threshold the consumer of alg's jobs
// of priority p should have now: none while jobs wait for it or when alg
// is kept, else ConsumerInactiveThreshold.
func (c *Controller) inactiveThreshold(alg string, p jobs.Priority) time.Duration {
	if c.keep[alg] {
		return 0
	}
	if w := c.backlog.Load(); w != nil && (*w)[queue{alg, p}] {
		return 0
	}
	return c.cfg.ConsumerInactiveThreshold
}

// queue is one algorithm's jobs of one priority: one subject of JOBS and
// one consumer, jobs.PriorityConsumerName.
type queue struct {
	alg string
	p   jobs.Priority
}

// tendConsumers runs tendOnce every backlogPeriod until ctx ends, the first
// time at once.
func (c *Controller) tendConsumers(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.tendOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			// Said once at warning level, not every pass.
			ev := c.log.Warn()
			if failing {
				ev = c.log.Debug()
			}
			ev.Err(err).Dur("retry_in", backlogPeriod).Msg("cannot tend the consumers of JOBS; the backlog of algorithms without runners may not be visible")
			failing = true
		case err == nil && failing:
			c.log.Info().Msg("consumers of JOBS tended again")
			failing = false
		}
		t.Reset(backlogPeriod)
	}
}

// tendOnce makes one pass: the consumer of every algorithm with jobs
// waiting (or kept) exists without an inactive threshold, and every other
// controller consumer has ConsumerInactiveThreshold. A consumer that
// cannot be changed is reported and tried again at the next pass.
func (c *Controller) tendOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	waiting, err := c.waitingQueues(ctx)
	if err != nil {
		return err
	}
	existing := map[queue]*jetstream.ConsumerInfo{}
	l := c.store.Jobs().ListConsumers(ctx)
	for ci := range l.Info() {
		if alg, p, ok := jobs.ConsumerQueue(ci.Name); ok {
			q := queue{alg, p}
			existing[q] = ci
			// Also counts the jobs of subjects too many to list.
			if ci.NumPending+uint64(ci.NumAckPending) > 0 {
				waiting[q] = true
			}
		}
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("controller: list the consumers of JOBS: %w", err)
	}
	// Published before any change, so that a puller creating the consumer
	// meanwhile asks for the same threshold.
	c.backlog.Store(&waiting)

	// A kept algorithm keeps the consumers of all its priorities, which
	// its autoscaler reads, jobs or not.
	want := make([]queue, 0, len(waiting)+3*len(c.keep))
	for q := range waiting {
		want = append(want, q)
	}
	for alg := range c.keep {
		for _, p := range jobs.Priorities {
			if q := (queue{alg, p}); !waiting[q] {
				want = append(want, q)
			}
		}
	}
	slices.SortFunc(want, func(a, b queue) int {
		return cmp.Or(cmp.Compare(a.alg, b.alg), cmp.Compare(a.p, b.p))
	})
	// MaxAlgorithms bounds the algorithms with consumers, not the
	// consumers: each algorithm may have one per priority.
	algs := map[string]bool{}
	for q := range existing {
		algs[q.alg] = true
	}
	var errs []error
	over := 0
	for _, q := range want {
		ci, ok := existing[q]
		if ok && ci.Config.InactiveThreshold == 0 {
			continue
		}
		cfg := c.consumerConfig(q.alg, q.p)
		if ok {
			// Only the threshold changes: the rest stays as the controller
			// pulling it set it.
			cfg = ci.Config
			cfg.InactiveThreshold = 0
		} else if !algs[q.alg] && len(algs) >= c.cfg.MaxAlgorithms && !c.keep[q.alg] {
			over++
			continue
		}
		if _, err := c.js.CreateOrUpdateConsumer(ctx, JobsStream, cfg); err != nil {
			errs = append(errs, fmt.Errorf("controller: keep the consumer %s: %w", cfg.Durable, err))
			continue
		}
		if !ok {
			algs[q.alg] = true
			c.log.Info().Str("algorithm", q.alg).Str("consumer", cfg.Durable).Bool("jobs_waiting", waiting[q]).
				Msg("consumer created for an algorithm without a runner; it stays while jobs wait")
		}
	}
	if over != c.backlogOver {
		if over > 0 {
			c.log.Warn().Int("max_algorithms", c.cfg.MaxAlgorithms).Int("without_consumer", over).
				Msg("more algorithms have jobs waiting than consumers this controller keeps; their backlog is not visible to autoscalers")
		}
		c.backlogOver = over
	}
	relaxed := 0
	for q, ci := range existing {
		if waiting[q] || c.keep[q.alg] || ci.Config.InactiveThreshold != 0 {
			continue
		}
		cfg := ci.Config
		cfg.InactiveThreshold = c.cfg.ConsumerInactiveThreshold
		if _, err := c.js.UpdateConsumer(ctx, JobsStream, cfg); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("controller: let the consumer %s expire: %w", cfg.Durable, err))
			continue
		}
		relaxed++
	}
	if relaxed > 0 {
		c.log.Info().Int("consumers", relaxed).Dur("inactive_threshold", c.cfg.ConsumerInactiveThreshold).
			Msg("no jobs wait for these consumers: they expire when unused")
	}
	return errors.Join(errs...)
}

// waitingQueues returns the algorithms and priorities with jobs in JOBS,
// from the stream's subjects; with more subjects than the sweep lists,
// none (the consumers' own counts still show theirs).
func (c *Controller) waitingQueues(ctx context.Context) (map[queue]bool, error) {
	waiting := map[queue]bool{}
	info, err := c.store.Jobs().Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("controller: jobs waiting: %w", err)
	}
	if info.State.NumSubjects > sweepMaxSubjects || info.State.Msgs == 0 {
		return waiting, nil
	}
	info, err = c.store.Jobs().Info(ctx, jetstream.WithSubjectFilter(JobsSubjectPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("controller: jobs waiting: %w", err)
	}
	for subj, n := range info.State.Subjects {
		if alg, p := jobs.SubjectAlgorithm(subj); n > 0 && discovery.ValidAlgorithmName(alg) {
			waiting[queue{alg, p}] = true
		}
	}
	return waiting, nil
}
