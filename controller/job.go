package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"pnpworker/discovery"
	"pnpworker/runner"
)

// task is one delivery of a job being taken to an outcome.
type task struct {
	c   *Controller
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
	alg string
	id  string
	rec Result
	// rev is the revision of the retrying record this delivery replaces;
	// 0 when there is none.
	rev uint64
}

func (t *task) log() *zerolog.Logger {
	l := t.c.log.With().Str("algorithm", t.alg).Str("job_id", t.id).Uint64("seq", t.md.Sequence.Stream).Logger()
	return &l
}

// jobIDOf names a job: Pnp-Job-Id, else Nats-Msg-Id, else an id derived
// from the stream sequence and stored time, the same at every redelivery.
func jobIDOf(h nats.Header, md *jetstream.MsgMetadata) string {
	if id := h.Get(HeaderJobID); id != "" {
		return id
	}
	if id := h.Get(HeaderMsgID); id != "" {
		return id
	}
	return autoJobID(md.Sequence.Stream, md.Timestamp)
}

// process takes one delivery to its end: an outcome stored and the job
// acked, a retrying record and a delayed nak, or a nak that hands the job
// back untouched (no runner, controller shutting down, NATS away).
func (c *Controller) process(w *worker, j *job) {
	ctx := w.ctx
	md, err := j.msg.Metadata()
	if err != nil {
		c.log.Error().Err(err).Str("subject", j.msg.Subject()).Msg("message without JetStream metadata")
		return
	}
	t := &task{c: c, msg: j.msg, md: md, alg: strings.TrimPrefix(j.msg.Subject(), JobsSubjectPrefix)}
	h := j.msg.Headers()
	t.id = jobIDOf(h, md)
	t.rec = Result{
		JobID:       t.id,
		Algorithm:   t.alg,
		Controller:  c.cfg.Instance,
		SubmittedAt: md.Timestamp.UTC(),
		StartedAt:   time.Now().UTC(),
	}
	if !ValidJobID(t.id) {
		t.fail(ctx, &runner.Error{Code: runner.CodeInvalidInput, Message: fmt.Sprintf(
			"invalid job id %q: want letters, digits, '_', '=', '-' and single inner dots, at most %d characters", t.id, maxJobIDLen)})
		return
	}
	if md.NumDelivered > 1 {
		// A redelivery: the job may already have an outcome (stored just
		// before a crash or a lost ack), or a retrying record that counts
		// its attempts so far.
		final, err := t.loadPrevious(ctx)
		if err != nil {
			t.log().Warn().Err(err).Msg("cannot read the job's result record; handing the job back")
			t.nak(jitter(c.cfg.RetryBackoff))
			return
		}
		if final {
			t.ack()
			return
		}
	}
	regs := c.cache.Lookup(t.alg)
	if len(regs) == 0 {
		t.nak(jitter(c.cfg.NoRunnerDelay))
		return
	}
	budget := plan(regs)
	if v := h.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.fail(ctx, &runner.Error{Code: runner.CodeInvalidInput, Message: fmt.Sprintf("header %s: %q is not a positive duration such as 500ms", HeaderTimeout, v)})
			return
		}
		budget = min(budget, d)
	}
	if verr := c.schemas.validate(regs, j.msg.Data()); verr != nil {
		verr.Algorithm = t.alg
		t.fail(ctx, verr)
		return
	}

	t.rec.Attempts++
	epoch := c.epoch.Load()
	reply, wait, err := c.request(w, discovery.RequestSubject(t.alg), t.id, j.msg.Data(), budget)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			// Registered but gone (its registration has not expired yet):
			// not an attempt; wait for a runner.
			t.nak(jitter(c.cfg.NoRunnerDelay))
		case ctx.Err() != nil:
			// Past the drain timeout of a stopping controller.
			t.nak(0)
		case c.epoch.Load() != epoch || !c.nc.IsConnected():
			// The connection dropped while waiting for the reply: not the
			// runner's fault, so not an attempt.
			t.nak(jitter(c.cfg.RetryBackoff))
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			t.failure(ctx, &runner.Error{Code: runner.CodeDeadline, Algorithm: t.alg, Message: fmt.Sprintf("no reply from a runner within %s", wait)})
		default:
			t.log().Warn().Err(err).Msg("request failed; handing the job back")
			t.nak(jitter(c.cfg.RetryBackoff))
		}
		return
	}
	t.rec.Instance = reply.Header.Get(runner.HeaderInstance)
	t.rec.Version = reply.Header.Get(runner.HeaderVersion)
	if rerr := runner.ReplyError(reply); rerr != nil {
		if notStarted(rerr) {
			// Back-pressure, not a failure: the runner refused the job
			// before running it. Like no responders, not an attempt;
			// otherwise a burst over the runners' capacity would use up
			// the attempts of healthy jobs and dead-letter them.
			t.rec.Attempts--
			t.nak(jitter(c.cfg.RetryBackoff))
			return
		}
		t.failure(ctx, protocolCode(rerr))
		return
	}
	if verr := c.schemas.validateOutput(regs, t.rec.Instance, reply.Data); verr != nil {
		// Not the output the algorithm promises (a broken or hostile
		// instance in the queue group): an attempt that failed, retried,
		// so that another instance may answer.
		verr.Algorithm, verr.Instance = t.alg, t.rec.Instance
		t.log().Warn().Str("instance", t.rec.Instance).Str("version", t.rec.Version).Str("error", verr.Error()).
			Int("attempts", t.rec.Attempts).Msg("runner output does not match its schema")
		t.failure(ctx, verr)
		return
	}
	t.rec.Status = StatusSucceeded
	t.rec.Output = reply.Data
	t.rec.finish(time.Now())
	t.finalize(ctx)
}

// notStarted reports whether a runner refused the job without running it
// (the Pnp-Not-Started header: overloaded at admission, draining, or its
// time budget spent while it waited in the runner's queue).
func notStarted(e *runner.Error) bool {
	return e.NotStarted && (e.Code == runner.CodeUnavailable || e.Code == runner.CodeDeadline)
}

// protocolCode maps an error code outside the protocol's set (a micro
// service that is not a pnp runner may send any) to 400 or 500, keeping the
// original in the message, so records always satisfy result.json and the
// retry decision stays "4xx final, 5xx retried".
func protocolCode(e *runner.Error) *runner.Error {
	switch e.Code {
	case runner.CodeInvalidInput, runner.CodeNotFound, runner.CodeTooLarge, runner.CodeUnprocessable,
		runner.CodeInternal, runner.CodeBadGateway, runner.CodeUnavailable, runner.CodeDeadline:
		return e
	}
	c := *e
	c.Message = fmt.Sprintf("%s (code %d)", e.Message, e.Code)
	if e.Code >= 400 && e.Code < 500 {
		c.Code = runner.CodeInvalidInput
	} else {
		c.Code = runner.CodeInternal
	}
	return &c
}

// plan picks the time budget of a request: the longest of the live
// instances', since the request may reach any of them. The subject is
// always run.<algorithm> (discovery.RequestSubject): records that name
// another are refused by discovery, so there is nothing to choose.
func plan(regs []discovery.Registration) time.Duration {
	var budget time.Duration
	for _, r := range regs {
		budget = max(budget, r.Timeout())
	}
	if budget <= 0 {
		budget = runner.DefaultTimeout
	}
	return budget
}

// worker is what one of the MaxInFlight processing goroutines keeps from
// job to job, so that a job costs fewer allocations.
type worker struct {
	// ctx is the worker's own child of the jobs' context: request
	// timeouts derive from it instead of all contending for one parent.
	ctx    context.Context
	cancel context.CancelFunc
	// msg and its header are reused for every request; the connection
	// encodes them before RequestMsgWithContext returns.
	msg       nats.Msg
	id        []string
	timeout   []string
	budget    time.Duration
	budgetStr string
}

func newWorker(jobCtx context.Context) *worker {
	w := &worker{id: []string{""}, timeout: []string{""}}
	w.ctx, w.cancel = context.WithCancel(jobCtx)
	w.msg.Header = nats.Header{runner.HeaderJobID: w.id, runner.HeaderTimeout: w.timeout}
	return w
}

// request sends the job to a runner and waits a little longer than the
// budget, so the runner's own 504 arrives before the wait ends. It returns
// how long it waited at most.
func (c *Controller) request(w *worker, subject, id string, body []byte, budget time.Duration) (*nats.Msg, time.Duration, error) {
	wait := budget + budget/10 + 100*time.Millisecond
	rctx, cancel := context.WithTimeout(w.ctx, wait)
	defer cancel()
	if budget != w.budget {
		w.budget, w.budgetStr = budget, budget.String()
	}
	w.msg.Subject, w.msg.Data = subject, body
	w.id[0], w.timeout[0] = id, w.budgetStr
	reply, err := c.nc.RequestMsgWithContext(rctx, &w.msg)
	w.msg.Data = nil
	return reply, wait, err
}

func (t *task) loadPrevious(ctx context.Context) (final bool, err error) {
	e, err := t.c.store.results.Get(ctx, t.id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("controller: get result %s: %w", t.id, err)
	}
	t.rev = e.Revision()
	prev, err := decodeResult(t.id, e.Value())
	if err != nil {
		// Not a record we wrote: replace it.
		return false, nil
	}
	if prev.Status.Final() {
		return true, nil
	}
	t.rec.Attempts = prev.Attempts
	if !prev.StartedAt.IsZero() {
		t.rec.StartedAt = prev.StartedAt
	}
	return false, nil
}

// failure handles a failed attempt: retry later while attempts remain and
// the error is retryable, otherwise fail the job.
func (t *task) failure(ctx context.Context, e *runner.Error) {
	if !e.Retryable() || t.rec.Attempts >= t.c.cfg.MaxAttempts {
		t.fail(ctx, e)
		return
	}
	delay := retryDelay(t.c.cfg, t.rec.Attempts)
	now := time.Now().UTC()
	next := now.Add(delay)
	rec := t.rec
	rec.Status, rec.Error, rec.FinishedAt, rec.NextAttemptAt = StatusRetrying, e, &now, &next
	data, err := rec.appendJSON(nil)
	if err == nil {
		err = t.put(ctx, data)
	}
	switch {
	case errors.Is(err, errFinal):
		t.ack()
		return
	case err != nil:
		// The attempt is not counted; the job is still retried.
		t.log().Warn().Err(err).Msg("cannot store the retrying record")
	}
	t.log().Debug().Int("attempts", rec.Attempts).Int("code", e.Code).Str("error", e.Message).Dur("retry_in", delay).Msg("attempt failed; retrying")
	t.nak(delay)
}

// fail makes the job's failure final: a dead letter first (so a crash in
// between leaves the job replayable), then the failed result, then the ack.
func (t *task) fail(ctx context.Context, e *runner.Error) {
	t.rec.Status, t.rec.Error, t.rec.Output = StatusFailed, e, nil
	t.rec.finish(time.Now())
	seq, err := t.deadLetter(ctx, e)
	if err != nil {
		t.log().Warn().Err(err).Msg("cannot store the dead letter; handing the job back")
		t.nak(0)
		return
	}
	t.rec.DeadLetterSeq = seq
	t.log().Warn().Int("code", e.Code).Str("error", e.Message).Int("attempts", t.rec.Attempts).
		Uint64("dead_letter_seq", seq).Msg("job failed")
	if !ValidJobID(t.id) {
		// No key to store a result under: the dead letter tells the story.
		t.ack()
		return
	}
	t.finalize(ctx)
}

// resultOverhead leaves room for the KV headers next to a result record.
const resultOverhead = 1024

// finalize stores the final record and acks the job. A final record that
// is already there wins: the job is acked and its outcome unchanged.
func (t *task) finalize(ctx context.Context) {
	data, err := t.rec.appendJSON(make([]byte, 0, 512+len(t.rec.Output)))
	if err != nil {
		t.log().Error().Err(err).Msg("encode result")
		t.nak(0)
		return
	}
	if limit := t.c.nc.MaxPayload() - resultOverhead; int64(len(data)) > limit && t.rec.Status == StatusSucceeded {
		t.fail(ctx, &runner.Error{Code: runner.CodeTooLarge, Algorithm: t.alg, Instance: t.rec.Instance,
			Message: fmt.Sprintf("result of %d bytes does not fit the server's max payload of %d", len(data), t.c.nc.MaxPayload())})
		return
	}
	err = retry(ctx, func() error { return t.put(ctx, data) })
	switch {
	case errors.Is(err, errFinal):
		t.log().Debug().Msg("job already has a final result; keeping it")
		t.ack()
	case err != nil:
		t.log().Warn().Err(err).Msg("cannot store the result; handing the job back")
		t.nak(0)
	default:
		t.ack()
		if subj := t.msg.Headers().Get(HeaderNotify); subj != "" {
			if err := t.c.nc.Publish(subj, data); err != nil {
				t.log().Debug().Err(err).Str("notify", subj).Msg("notification not sent")
			}
		}
	}
}

// errFinal reports that the job already has a final record.
var errFinal = errors.New("job already has a final result")

// put stores data under the job id unless a final record is there: it
// creates the key, or replaces the retrying record it replaces. Writes are
// compare-and-set, so of two controllers racing on one job exactly one
// final record is stored and the other gets errFinal.
func (t *task) put(ctx context.Context, data []byte) error {
	kv := t.c.store.results
	rev := t.rev
	for range 5 {
		var err error
		if rev == 0 {
			_, err = kv.Create(ctx, t.id, data)
		} else {
			_, err = kv.Update(ctx, t.id, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("controller: store result %s: %w", t.id, err)
		}
		e, err := kv.Get(ctx, t.id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			rev = 0
			continue
		}
		if err != nil {
			return fmt.Errorf("controller: store result %s: %w", t.id, err)
		}
		if prev, err := decodeResult(t.id, e.Value()); err == nil && prev.Status.Final() {
			return errFinal
		}
		rev = e.Revision()
	}
	return fmt.Errorf("controller: store result %s: too many concurrent writers", t.id)
}

// deadLetter stores the job in DEAD with its body and headers, and the
// reason. The message id makes a second store of the same delivery (after
// a crash) a no-op.
func (t *task) deadLetter(ctx context.Context, e *runner.Error) (uint64, error) {
	h := nats.Header{}
	for k, v := range t.msg.Headers() {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		h[k] = v
	}
	h.Set(HeaderJobID, t.id)
	h.Set(HeaderDeadReason, oneLine(e.Message))
	h.Set(HeaderDeadCode, strconv.Itoa(e.Code))
	h.Set(HeaderDeadAttempts, strconv.Itoa(t.rec.Attempts))
	h.Set(HeaderDeadAt, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(HeaderJobSeq, strconv.FormatUint(t.md.Sequence.Stream, 10))
	h.Set(HeaderSubmittedAt, t.md.Timestamp.UTC().Format(time.RFC3339Nano))
	if b, err := json.Marshal(e); err == nil && len(b) <= 4096 {
		h.Set(HeaderDeadError, string(b))
	}
	msg := &nats.Msg{Subject: DeadSubjectPrefix + t.alg, Header: h, Data: t.msg.Data()}
	msgID := t.id + "@" + strconv.FormatUint(t.md.Sequence.Stream, 10)
	var seq uint64
	err := retry(ctx, func() error {
		ack, err := t.c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
		if err != nil {
			return fmt.Errorf("controller: dead letter %s: %w", t.id, err)
		}
		seq = ack.Sequence
		return nil
	})
	return seq, err
}

func (t *task) ack() {
	if err := t.msg.Ack(); err != nil {
		// The job is offered again after AckWait and finds its result.
		t.log().Debug().Err(err).Msg("ack")
	}
}

// nak hands the job back to JOBS, to be offered again after delay.
func (t *task) nak(delay time.Duration) {
	var err error
	if delay > 0 {
		err = t.msg.NakWithDelay(delay)
	} else {
		err = t.msg.Nak()
	}
	if err != nil {
		t.log().Debug().Err(err).Msg("nak")
	}
}

// retryDelay is the wait after the given number of failed attempts:
// RetryBackoff doubled per attempt after the first, capped at
// MaxRetryBackoff, with jitter.
func retryDelay(cfg Config, attempts int) time.Duration {
	d := cfg.RetryBackoff
	for i := 1; i < attempts && d < cfg.MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(jitter(min(d, cfg.MaxRetryBackoff)), cfg.MaxRetryBackoff)
}

// jitter spreads d over ±20 % so that jobs that failed together do not
// come back together.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// retry calls fn until it succeeds, returns errFinal, or ctx ends, backing
// off from 50 ms to 2 s: it carries a store operation over a NATS restart.
func retry(ctx context.Context, fn func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil || errors.Is(err, errFinal) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
