package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

// Jobs of an algorithm no runner serves, or past MaxAlgorithms, are not
// pulled (see supervise), so process never sees them expire. The sweep finds them instead: it reads
// the oldest jobs of each unserved subject directly from JOBS, by
// sequence, without a consumer (so their delivery counts stay untouched),
// and fails those older than MaxJobAge like any other failure: dead
// letter, failed record, then the job is deleted from JOBS, which is its
// ack. It stops at the first job that is young enough, since JOBS stores
// a subject's jobs in order.

// sweepBatch bounds the jobs one sweep expires per algorithm; the next
// sweep goes on.
const sweepBatch = 1000

// sweepMaxSubjects bounds the subjects of JOBS the sweep lists. Past it
// (a producer can publish to any number of jobs.<name> subjects), the
// list would be a reply of megabytes that may never arrive, and no job
// would expire; the sweep walks the jobs in stream order instead
// (walkSweep).
var sweepMaxSubjects uint64 = 10_000

// sweepWalkBatch bounds the jobs one walking sweep reads; the next sweep
// goes on from there.
const sweepWalkBatch = 10_000

// sweepPeriod is how often the sweep runs: a quarter of the shorter
// maximum age (MaxUnservedJobAge), between 500 ms and one minute.
func (c *Controller) sweepPeriod() time.Duration {
	return min(max(min(c.cfg.MaxJobAge, c.cfg.MaxUnservedJobAge)/4, 500*time.Millisecond), time.Minute)
}

// markServed marks every algorithm of live in ServedBucket once per
// appearance, in the background: a mark that fails is tried again, with
// backoff, while the algorithm stays live. (It cannot wait for the next
// change of the registrations: renewed heartbeats are no change, so in a
// steady fleet that may never come.)
func (c *Controller) markServed(ctx context.Context, live map[string]bool) {
	if c.store == nil || c.store.Served() == nil {
		return
	}
	c.markedMu.Lock()
	defer c.markedMu.Unlock()
	if c.marked == nil {
		c.marked = map[string]bool{}
	}
	for alg := range c.marked {
		if !live[alg] {
			delete(c.marked, alg)
		}
	}
	for alg := range live {
		if c.marked[alg] || !discovery.ValidAlgorithmName(alg) {
			continue
		}
		c.marked[alg] = true
		go c.putServed(ctx, alg)
	}
}

// Bounds of the backoff between attempts to mark an algorithm as served.
const (
	servedRetryMin = time.Second
	servedRetryMax = 30 * time.Second
)

// putServed marks alg in ServedBucket, trying again after a failure until
// it succeeds, ctx ends or alg is no longer live (markServed took it out
// of marked).
func (c *Controller) putServed(ctx context.Context, alg string) {
	backoff := servedRetryMin
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		at, _ := time.Now().UTC().MarshalText()
		_, err := c.store.Served().Put(pctx, alg, at)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		c.log.Warn().Err(err).Str("algorithm", alg).Dur("retry_in", backoff).Msg("cannot mark the algorithm as served; its waiting jobs may expire after --max-unserved-job-age")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, servedRetryMax)
		c.markedMu.Lock()
		live := c.marked[alg]
		c.markedMu.Unlock()
		if !live {
			return
		}
	}
}

// everServed reports whether a runner has ever registered for alg: a mark
// in ServedBucket. Without the bucket, or when it cannot be read, it says
// yes, so that a job never expires sooner by mistake.
func (c *Controller) everServed(ctx context.Context, alg string) bool {
	if c.store.Served() == nil {
		return true
	}
	_, err := c.store.Served().Get(ctx, alg)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		c.log.Debug().Err(err).Str("algorithm", alg).Msg("cannot read the served mark; counting the algorithm as served")
	}
	return true
}

// tooOld returns the error of a job stored at stored that has waited too
// long: past MaxJobAge, or, when the sweep found no runner ever
// registered for its algorithm, past MaxUnservedJobAge. Nil otherwise.
func (c *Controller) tooOld(j *job, alg string, stored time.Time) *protocol.Error {
	age := time.Since(stored)
	if age > c.cfg.MaxJobAge {
		return c.expired(alg, age)
	}
	if sj, ok := j.msg.(*storedJob); ok && sj.unserved && age > c.cfg.MaxUnservedJobAge {
		return &protocol.Error{Code: protocol.CodeDeadline, Algorithm: alg, Message: fmt.Sprintf(
			"expired: the job waited %s without an outcome, longer than the maximum age of %s for jobs of an algorithm no runner has ever registered for (max unserved job age)",
			age.Round(time.Second), c.cfg.MaxUnservedJobAge)}
	}
	return nil
}

// sweep expires the old jobs of algorithms this controller does not pull
// until ctx ends.
func (c *Controller) sweep(ctx context.Context, w *worker) {
	t := time.NewTicker(c.sweepPeriod())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.sweepOnce(ctx, w); err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Dur("retry_in", c.sweepPeriod()).Msg("expiry sweep failed")
		}
	}
}

func (c *Controller) sweepOnce(ctx context.Context, w *worker) error {
	// Not the algorithms with live runners: past MaxAlgorithms some of
	// those are not pulled either.
	served := map[string]bool{}
	if p := c.pulled.Load(); p != nil {
		served = *p
	}
	cutoff := time.Now().Add(-c.cfg.MaxJobAge)
	unservedCutoff := time.Now().Add(-c.cfg.MaxUnservedJobAge)
	info, err := c.store.Jobs().Info(ctx)
	if err != nil {
		return fmt.Errorf("controller: sweep: %w", err)
	}
	if n := info.State.NumSubjects; n > sweepMaxSubjects {
		if !c.walking {
			c.log.Warn().Uint64("subjects", n).Uint64("max_listed", sweepMaxSubjects).Msg("JOBS holds too many subjects to list; the expiry sweep walks the jobs in order")
			c.walking = true
		}
		return c.walkSweep(ctx, w, served, cutoff, unservedCutoff)
	}
	c.walking = false
	info, err = c.store.Jobs().Info(ctx, jetstream.WithSubjectFilter(JobsSubjectPrefix+">"))
	if err != nil {
		return fmt.Errorf("controller: sweep: %w", err)
	}
	var errs []error
	for subj := range info.State.Subjects {
		alg, _ := jobs.SubjectAlgorithm(subj)
		if served[alg] {
			continue // its puller expires them
		}
		due, unserved := cutoff, false
		switch {
		case !discovery.ValidAlgorithmName(alg):
			// No runner can ever serve it: fail its jobs now (process
			// refuses the name), whatever their age.
			due = time.Now().Add(time.Hour)
		case !c.everServed(ctx, alg):
			due, unserved = unservedCutoff, true
		}
		if err := c.expireOldest(ctx, w, subj, due, unserved); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// expireOldest fails the jobs on subj stored before cutoff, oldest first,
// at most sweepBatch of them; unserved says no runner ever registered for
// their algorithm.
func (c *Controller) expireOldest(ctx context.Context, w *worker, subj string, cutoff time.Time, unserved bool) error {
	seq := uint64(1)
	for range sweepBatch {
		raw, err := c.store.Jobs().GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("controller: sweep %s: %w", subj, err)
		}
		if !raw.Time.Before(cutoff) {
			return nil
		}
		sj := &storedJob{raw: raw, stream: c.store.Jobs(), ctx: ctx, unserved: unserved}
		c.process(w, &job{msg: sj})
		if sj.ackErr != nil {
			// The job stays in JOBS and the next round finds it again:
			// say so each round rather than loop in silence (process
			// logs a failed ack at debug level only, since a consumer
			// redelivers a job whose ack was lost).
			return fmt.Errorf("controller: sweep %s: job %d has its outcome but stays in JOBS: %w", subj, raw.Sequence, sj.ackErr)
		}
		seq = raw.Sequence + 1
	}
	return nil
}

// walkSweep reads the jobs of JOBS in stream order, from where the last
// walk stopped, at most sweepWalkBatch of them, and fails those process
// would never see: jobs on invalid algorithm names, and jobs older than
// cutoff of algorithms nobody pulls. Past the last job the next walk
// starts again from the first. Its cost per round is bounded whatever
// the number of subjects; a job waits at most a walk over the stream
// longer for its expiry.
func (c *Controller) walkSweep(ctx context.Context, w *worker, served map[string]bool, cutoff, unservedCutoff time.Time) error {
	seq := max(c.walkNext, 1)
	ever := map[string]bool{} // everServed, read once per algorithm per walk
	for range sweepWalkBatch {
		raw, err := c.store.Jobs().GetMsg(ctx, seq, jetstream.WithGetMsgSubject(JobsSubjectPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			c.walkNext = 0
			return nil
		}
		if err != nil {
			return fmt.Errorf("controller: sweep at sequence %d: %w", seq, err)
		}
		seq = raw.Sequence + 1
		c.walkNext = seq
		alg, _ := jobs.SubjectAlgorithm(raw.Subject)
		unserved := false
		if discovery.ValidAlgorithmName(alg) {
			if served[alg] {
				continue
			}
			e, ok := ever[alg]
			if !ok {
				e = c.everServed(ctx, alg)
				ever[alg] = e
			}
			unserved = !e
			due := cutoff
			if unserved {
				due = unservedCutoff
			}
			if !raw.Time.Before(due) {
				continue
			}
		}
		sj := &storedJob{raw: raw, stream: c.store.Jobs(), ctx: ctx, unserved: unserved}
		c.process(w, &job{msg: sj})
		if sj.ackErr != nil {
			return fmt.Errorf("controller: sweep %s: job %d has its outcome but stays in JOBS: %w", raw.Subject, raw.Sequence, sj.ackErr)
		}
	}
	return nil
}

// storedJob is a job read from JOBS by sequence rather than delivered by a
// consumer: acking it deletes it from the stream; handing it back leaves
// it there for the next sweep.
type storedJob struct {
	raw    *jetstream.RawStreamMsg
	stream jetstream.Stream
	ctx    context.Context
	// unserved says no runner has ever registered for the job's
	// algorithm: it expires after MaxUnservedJobAge.
	unserved bool
	// ackErr is the error of the last Ack, for the sweep to report.
	ackErr error
}

var _ jetstream.Msg = (*storedJob)(nil)

func (m *storedJob) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{
		Sequence: jetstream.SequencePair{Stream: m.raw.Sequence},
		// Not 1: the job may have been delivered before, and may even
		// have its outcome stored already (a crash before its ack), which
		// process then keeps.
		NumDelivered: 2,
		Stream:       JobsStream,
		Timestamp:    m.raw.Time,
	}, nil
}

func (m *storedJob) Data() []byte         { return m.raw.Data }
func (m *storedJob) Headers() nats.Header { return m.raw.Header }
func (m *storedJob) Subject() string      { return m.raw.Subject }
func (m *storedJob) Reply() string        { return "" }

// Ack deletes the job from JOBS. A job already gone (acked by a puller
// that expired it at the same time) is not an error.
func (m *storedJob) Ack() error {
	m.ackErr = m.delete()
	return m.ackErr
}

func (m *storedJob) delete() error {
	err := m.stream.DeleteMsg(m.ctx, m.raw.Sequence)
	if err == nil {
		return nil
	}
	if _, gerr := m.stream.GetMsg(m.ctx, m.raw.Sequence); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("controller: delete job %d: %w", m.raw.Sequence, err)
}

func (m *storedJob) DoubleAck(context.Context) error  { return m.Ack() }
func (m *storedJob) Nak() error                       { return nil }
func (m *storedJob) NakWithDelay(time.Duration) error { return nil }
func (m *storedJob) InProgress() error                { return nil }
func (m *storedJob) Term() error                      { return m.Ack() }
func (m *storedJob) TermWithReason(string) error      { return m.Ack() }
