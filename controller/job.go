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
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/replycheck"
	"github.com/pnpworker/pnpworker/schemas"
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
	// noRecord is set when the job may not store a record under its id:
	// its dead letter is its only outcome.
	noRecord bool
	// cancelled is the job's cancelled record, as stored, once one was
	// found in the way of this delivery.
	cancelled []byte
	// logger is the job's child logger, built by log on first use: most
	// jobs log nothing, and building it costs allocations on every job.
	logger *zerolog.Logger
	// buf is the worker's buffer for encoding the job's record.
	buf *[]byte
	// progress is set when the runner reported progress during the
	// request (progress.go); guarded by Controller.progress.mu.
	progress *progressJob
}

// log returns the job's child logger (algorithm, job id, sequence, trace
// id), built once, when something is first logged.
func (t *task) log() *zerolog.Logger {
	if t.logger != nil {
		return t.logger
	}
	lc := t.c.log.With().Str("algorithm", t.alg).Str("job_id", t.id).Uint64("seq", t.md.Sequence.Stream)
	if id := protocol.TraceID(t.msg.Headers()); id != "" {
		lc = lc.Str("trace_id", id)
	}
	l := lc.Logger()
	t.logger = &l
	return t.logger
}

// jobIDOf names a job: Pnp-Job-Id, else Nats-Msg-Id, else, for a run of
// a periodic schedule, the schedule's name and time (jobs.ScheduledRunID),
// else an id derived from the stream sequence and stored time; each the
// same at every redelivery.
func jobIDOf(h nats.Header, md *jetstream.MsgMetadata) string {
	if id := h.Get(HeaderJobID); id != "" {
		return id
	}
	if id := h.Get(HeaderMsgID); id != "" {
		return id
	}
	if id := jobs.ScheduledRunID(h); id != "" {
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
	alg, _ := jobs.SubjectAlgorithm(j.msg.Subject())
	t := &task{c: c, msg: j.msg, md: md, alg: alg, buf: &w.rec}
	h := j.msg.Headers()
	// An id longer than any valid one is invalid whatever follows; cut,
	// it stays invalid (past maxJobIDLen, or not ASCII where a rune was
	// cut) and keeps the job's log lines short: a header may be 64 KiB.
	t.id = truncate(jobIDOf(h, md), maxJobIDLen+1)
	t.rec = Result{
		JobID:       t.id,
		Algorithm:   t.alg,
		Controller:  c.cfg.Instance,
		SubmittedAt: md.Timestamp.UTC(),
		StartedAt:   time.Now().UTC(),
		InputBytes:  len(j.msg.Data()),
		TraceID:     protocol.TraceID(h),
	}
	if in := j.msg.Data(); len(in) <= jobs.MaxRecordedInput && json.Valid(in) {
		t.rec.Input = in
	}
	if !ValidJobID(t.id) {
		t.fail(ctx, &protocol.Error{Code: protocol.CodeInvalidInput, Message: fmt.Sprintf(
			"invalid job id %q: want letters, digits, '_', '=', '-' and single inner dots, at most %d characters", t.id, maxJobIDLen)})
		return
	}
	if ReservedJobID(t.id) && (h.Get(HeaderJobID) != "" || h.Get(HeaderMsgID) != "") {
		if err := checkAutoID(t.id, md); err != nil {
			// A record under the id would be the outcome of the job that
			// later gets it: this job leaves only its dead letter.
			t.noRecord = true
			t.fail(ctx, &protocol.Error{Code: protocol.CodeInvalidInput, Message: err.Error()})
			return
		}
	}
	if !discovery.ValidAlgorithmName(t.alg) {
		// No runner can register such a name, so no puller takes these
		// jobs; the sweep hands them here at once, whatever their age.
		t.fail(ctx, &protocol.Error{Code: protocol.CodeInvalidInput, Message: fmt.Sprintf(
			"subject %s%q: not a valid algorithm name (lower case letters, digits and '_', starting with a letter, at most 64 characters)",
			JobsSubjectPrefix, truncate(t.alg, 64))})
		return
	}
	// A redelivery may already have an outcome (stored just before a
	// crash or a lost ack), or a retrying record that counts its attempts
	// so far. Any delivery, the first too, may find a cancelled record
	// (jobs.Store.Cancel): the job is then retired without running. A
	// first delivery is read only when a cancel may concern it
	// (cancelwatch.go).
	if md.NumDelivered > 1 || c.cancels.mayBeCancelled(t.alg, md.Timestamp) {
		final, err := t.loadPrevious(ctx)
		switch {
		case err != nil && md.NumDelivered < giveUpDeliveries:
			t.log().Warn().Err(err).Msg("cannot read the job's result record; handing the job back")
			t.nak(retryDelay(c.cfg, int(md.NumDelivered)))
			return
		case err != nil:
			// Go on without it: the compare-and-set write of the outcome
			// still keeps a final record that is already there.
			t.log().Error().Err(err).Uint64("deliveries", md.NumDelivered).Msg("cannot read the job's result record; going on without it")
		case final:
			t.ack()
			t.notifyCancelled()
			return
		}
	}
	if v := h.Get(HeaderNotify); v != "" && !ValidNotifySubject(v) {
		t.fail(ctx, &protocol.Error{Code: protocol.CodeInvalidInput, Algorithm: t.alg, Message: fmt.Sprintf(
			"header %s: %q is not a subject under %s> (without wildcards): the controller publishes notifications there only", HeaderNotify, oneLine(truncate(v, 300)), NotifySubjectPrefix)})
		return
	}
	if err := c.tooOld(j, t.alg, md.Timestamp); err != nil {
		t.fail(ctx, err)
		return
	}
	regs := c.cache.Lookup(t.alg)
	if len(regs) == 0 {
		t.nak(jitter(c.cfg.NoRunnerDelay))
		return
	}
	all := regs
	subject, regs := c.chooseVersion(t.alg, regs, j.msg.Data())
	budget := plan(regs)
	var limit time.Duration // the job's own Pnp-Timeout, if any
	if v := h.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.fail(ctx, &protocol.Error{Code: protocol.CodeInvalidInput, Message: fmt.Sprintf("header %s: %q is not a positive duration such as 500ms", HeaderTimeout, v)})
			return
		}
		if d < MinJobTimeout {
			// No runner can start it within that: sending it would only
			// collect refusals.
			t.fail(ctx, &protocol.Error{Code: protocol.CodeDeadline, Algorithm: t.alg, Message: fmt.Sprintf(
				"the job's own time budget (header %s: %s) ran out before it could start: it is shorter than the %s it takes to hand a job to a runner",
				HeaderTimeout, d, MinJobTimeout)})
			return
		}
		budget, limit = min(budget, d), d
	}
	if verr := c.schemas.Validate(regs, j.msg.Data()); verr != nil {
		verr.Algorithm = t.alg
		t.fail(ctx, verr)
		return
	}

	t.rec.Attempts++
	epoch := c.epoch.Load()
	w.setTrace(h)
	sent := time.Now()
	c.progress.begin(t)
	reply, wait, err := c.request(w, subject, t.id, j.msg.Data(), budget)
	c.progress.end(t)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrMaxPayload):
			// The body fitted JOBS but not next to the request's headers:
			// no delivery can ever send it.
			t.fail(ctx, &protocol.Error{Code: protocol.CodeTooLarge, Algorithm: t.alg, Message: fmt.Sprintf(
				"job of %d bytes does not fit, with the request headers, the server's max payload of %d bytes", len(j.msg.Data()), c.nc.MaxPayload())})
		case errors.Is(err, nats.ErrNoResponders) && md.NumDelivered > uint64(c.cfg.MaxNotStarted):
			t.fail(ctx, &protocol.Error{Code: protocol.CodeUnavailable, Algorithm: t.alg, Message: fmt.Sprintf(
				"no runner answered on %s; given up after %d deliveries", subject, md.NumDelivered)})
		case errors.Is(err, nats.ErrNoResponders):
			// Registered but gone (its registration has not expired yet):
			// not an attempt; wait for a runner.
			c.metrics.handBack(t.alg, backNoResponders)
			t.nak(jitter(c.cfg.NoRunnerDelay))
		case ctx.Err() != nil:
			// Past the drain timeout of a stopping controller.
			t.nak(0)
		case c.epoch.Load() != epoch || !c.nc.IsConnected():
			// The connection dropped while waiting for the reply: not the
			// runner's fault, so not an attempt.
			c.metrics.handBack(t.alg, backDisconnected)
			t.nak(jitter(c.cfg.RetryBackoff))
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			t.failure(ctx, &protocol.Error{Code: protocol.CodeDeadline, Algorithm: t.alg, Message: fmt.Sprintf("no reply from a runner within %s", wait)})
		default:
			// Neither the runner's answer nor a wait: count it as an
			// attempt, so that a failure that never goes away (a subject
			// the controller may not publish to, say) ends the job.
			t.log().Warn().Err(err).Msg("request failed")
			t.failure(ctx, &protocol.Error{Code: protocol.CodeInternal, Algorithm: t.alg, Message: "request to the runner failed: " + err.Error()})
		}
		return
	}
	// Headers of whoever answered: bounded before they reach a record.
	t.rec.Instance = truncate(reply.Header.Get(protocol.HeaderInstance), maxReplyField)
	t.rec.Version = truncate(reply.Header.Get(protocol.HeaderVersion), maxReplyField)
	c.afterReply(t.alg, t.id, j.msg.Data(), reply, time.Since(sent), limit)
	if rerr := protocol.ReplyError(reply); rerr != nil {
		if notStarted(rerr) && rerr.Code == protocol.CodeDeadline && limit > 0 && limit <= budget {
			// The runner could not start it within the job's own budget,
			// shorter than the algorithm's: the job's doing, not
			// back-pressure, so an attempt like any other 504 (retried
			// until MaxAttempts), never a refusal handed back for free.
			e := *rerr
			e.Algorithm = t.alg
			e.Message = fmt.Sprintf("%s (the job's own time budget, header %s: %s, ran out before a runner started it)", rerr.Message, HeaderTimeout, limit)
			t.failure(ctx, &e)
			return
		}
		if notStarted(rerr) {
			// Back-pressure, not a failure: the runner refused the job
			// before running it. Like no responders, not an attempt;
			// otherwise a burst over the runners' capacity would use up
			// the attempts of healthy jobs and dead-letter them. Such
			// refusals are counted apart, by JetStream's delivery count,
			// and end the job past MaxNotStarted.
			t.rec.Attempts--
			if md.NumDelivered > uint64(c.cfg.MaxNotStarted) {
				e := *replycheck.ProtocolCode(rerr)
				e.Algorithm = t.alg
				e.Message = fmt.Sprintf("%s (refused without starting; given up after %d deliveries)", e.Message, md.NumDelivered)
				t.fail(ctx, &e)
				return
			}
			c.metrics.handBack(t.alg, backNotStarted)
			t.nak(notStartedDelay(c.cfg, md.NumDelivered))
			return
		}
		t.failure(ctx, replycheck.ProtocolCode(rerr))
		return
	}
	output, check := reply.Data, true
	ref := reply.Header.Get(protocol.HeaderOutputRef)
	if ref != "" {
		// The output did not fit a message: the runner stored it. It is
		// checked like any other output, read back within
		// MaxReferencedOutputBytes, so a reference is no way around the
		// output schema.
		// Only the algorithm's own outputs bucket: its runners' user may
		// write no other, and a reference elsewhere would hand this job
		// an output another algorithm (or the controller) stored.
		r, err := objref.Parse(ref)
		if err != nil || r.Bucket != objref.OutputsBucketFor(t.alg) {
			t.failure(ctx, &protocol.Error{Code: protocol.CodeBadGateway, Algorithm: t.alg, Instance: t.rec.Instance,
				Message: fmt.Sprintf("runner replied with %s %q, not a reference into bucket %s", protocol.HeaderOutputRef, truncate(ref, 300), objref.OutputsBucketFor(t.alg))})
			return
		}
		if output, check, err = c.referencedOutput(ctx, r); err != nil {
			t.log().Warn().Str("instance", t.rec.Instance).Str("output_ref", ref).Err(err).Msg("runner output by reference not checked")
			t.failure(ctx, &protocol.Error{Code: protocol.CodeBadGateway, Algorithm: t.alg, Instance: t.rec.Instance,
				Message: fmt.Sprintf("runner output %s could not be checked: %v", truncate(ref, 300), err)})
			return
		}
	}
	if check {
		if verr := c.schemas.ValidateOutput(all, regs, t.rec.Instance, output); verr != nil {
			// Not the output the algorithm promises (a broken or hostile
			// instance in the queue group): an attempt that failed, retried,
			// so that another instance may answer.
			verr.Algorithm, verr.Instance = t.alg, t.rec.Instance
			t.log().Warn().Str("instance", t.rec.Instance).Str("version", t.rec.Version).Str("error", verr.Error()).
				Int("attempts", t.rec.Attempts).Msg("runner output does not match its schema")
			t.failure(ctx, verr)
			return
		}
	}
	c.metrics.attempt(t.alg, 0)
	t.rec.Status = StatusSucceeded
	if ref != "" {
		t.rec.OutputRef = ref
	} else {
		t.rec.Output = compactJSON(reply.Data)
	}
	finish(&t.rec, time.Now())
	t.finalize(ctx)
}

// referencedOutput reads back an output a runner stored by reference, for
// the output check; check is false when the check is off
// (MaxReferencedOutputBytes -1).
func (c *Controller) referencedOutput(ctx context.Context, r objref.Ref) (output []byte, check bool, err error) {
	if c.cfg.MaxReferencedOutputBytes < 0 {
		return nil, false, nil
	}
	output, err = objref.Read(ctx, c.store.JetStream(), r, c.cfg.MaxReferencedOutputBytes)
	return output, true, err
}

// Bounds of what a reply puts in a record. A runner built on the runner
// library sends no more (runner/endpoint.go), but whatever answers in the
// queue group may send anything up to the max payload, and a record that
// cannot be stored would leave its job without a counted attempt or an
// outcome.
const (
	// maxReplyField bounds the instance and version a reply names.
	maxReplyField = 256
	// maxErrorMessage bounds an error's message and each violation's
	// pointer and message, in bytes.
	maxErrorMessage = 1000
	// maxErrorViolations bounds the violations of an error.
	maxErrorViolations = 100
	// maxErrorJSON bounds an error encoded (encoding/json writes '<', '>'
	// and '&' as six bytes each), also at most a quarter of the max
	// payload; violations past it are dropped.
	maxErrorJSON = 64 << 10
)

// boundError returns e, or a copy of it cut to the bounds above, with
// the violations left out counted in a last one ("… and N more
// violations", as the runner library writes it) and an empty message
// replaced, so that a record holding it always fits a message and
// satisfies result.json.
func boundError(e *protocol.Error, maxPayload int64) *protocol.Error {
	limit := min(maxErrorJSON, int(maxPayload/4))
	fits := func(e *protocol.Error) bool {
		b, err := json.Marshal(e)
		return err == nil && len(b) <= limit
	}
	if e.Message != "" && len(e.Message) <= maxErrorMessage && len(e.Algorithm) <= maxReplyField &&
		len(e.Instance) <= maxReplyField && len(e.Violations) <= maxErrorViolations && fits(e) {
		return e
	}
	c := *e
	c.Message = cut(c.Message)
	if c.Message == "" {
		c.Message = "(no message)"
	}
	c.Algorithm, c.Instance = truncate(c.Algorithm, maxReplyField), truncate(c.Instance, maxReplyField)
	total := len(c.Violations)
	vs := make([]schemas.Violation, 0, min(total, maxErrorViolations)+1)
	for _, v := range c.Violations[:min(total, maxErrorViolations)] {
		vs = append(vs, schemas.Violation{Pointer: cut(v.Pointer), Message: cut(v.Message)})
	}
	for keep := len(vs); ; keep /= 2 {
		c.Violations = vs[:keep:keep]
		if keep < total {
			c.Violations = append(c.Violations, schemas.Violation{Message: fmt.Sprintf("… and %d more violations", total-keep)})
		}
		if keep == 0 || fits(&c) {
			break
		}
	}
	if len(c.Violations) == 0 {
		c.Violations = nil
	}
	return &c
}

// cut truncates s to maxErrorMessage bytes, marking the cut.
func cut(s string) string {
	if len(s) <= maxErrorMessage {
		return s
	}
	return truncate(s, maxErrorMessage) + "…"
}

// MinJobTimeout is the shortest time budget a job may give itself
// (Pnp-Timeout): handing a job to a runner takes a round trip and a place
// in the runner's queue, and a job with less fails at once with 504
// instead of being refused by every runner.
const MinJobTimeout = time.Millisecond

// giveUpDeliveries bounds the deliveries of a job whose outcome cannot be
// stored (results or DEAD failing): past it, the job ends with what can be
// stored, and the failure is logged as an error.
const giveUpDeliveries = 10

// expired is the error of a job older than MaxJobAge.
func (c *Controller) expired(alg string, age time.Duration) *protocol.Error {
	return &protocol.Error{Code: protocol.CodeDeadline, Algorithm: alg, Message: fmt.Sprintf(
		"expired: the job waited %s without an outcome, longer than the maximum job age of %s", age.Round(time.Second), c.cfg.MaxJobAge)}
}

// notStartedDelay is the wait before a refused job is offered again:
// RetryBackoff, doubled every ten deliveries up to MaxRetryBackoff, so
// that a long overload costs a refused job few deliveries.
func notStartedDelay(cfg Config, delivered uint64) time.Duration {
	return retryDelay(cfg, 1+int(min(delivered, 1000)/10))
}

// notStarted reports whether a runner refused the job without running it
// (the Pnp-Not-Started header: overloaded at admission, draining, or its
// time budget spent while it waited in the runner's queue).
func notStarted(e *protocol.Error) bool {
	return e.NotStarted && (e.Code == protocol.CodeUnavailable || e.Code == protocol.CodeDeadline)
}

// plan picks the time budget of a request: the longest of the instances'
// that may answer it (chooseVersion), since the request may reach any of
// them.
func plan(regs []discovery.Registration) time.Duration {
	var budget time.Duration
	for _, r := range regs {
		budget = max(budget, r.Timeout())
	}
	if budget <= 0 {
		budget = protocol.DefaultTimeout
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
	// rec is the buffer a job's record is encoded into; the record is
	// copied into the connection's buffer when it is stored and
	// published, so the next job may reuse it.
	rec []byte
}

func newWorker(jobCtx context.Context) *worker {
	w := &worker{id: []string{""}, timeout: []string{""}}
	w.ctx, w.cancel = context.WithCancel(jobCtx)
	w.msg.Header = nats.Header{protocol.HeaderJobID: w.id, protocol.HeaderTimeout: w.timeout}
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
	e, err := t.c.store.Results().Get(ctx, t.id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("controller: get result %s: %w", t.id, err)
	}
	prev, err := jobs.DecodeResult(t.id, e.Value())
	if t.md.NumDelivered <= 1 && (err != nil || prev.Status != jobs.StatusCancelled) {
		// A first delivery heeds only a cancel: any other record is an
		// earlier job's under the same id (submitted again after the
		// duplicate window), which this one runs after and never
		// replaces (put creates the key).
		return false, nil
	}
	t.rev = e.Revision()
	if err != nil {
		// Not a record we wrote: replace it.
		return false, nil
	}
	if prev.Status.Final() {
		t.sawFinal(prev.Status, e.Value())
		return true, nil
	}
	t.rec.Attempts = prev.Attempts
	if prev.Status == jobs.StatusRunning {
		// The attempt a running record counts ended without an outcome
		// (handed back, or its controller stopped): not an attempt, as
		// it would not be had it reported no progress.
		t.rec.Attempts = max(prev.Attempts-1, 0)
	}
	if !prev.StartedAt.IsZero() {
		t.rec.StartedAt = prev.StartedAt
	}
	return false, nil
}

// failure handles a failed attempt: retry later while attempts remain and
// the error is retryable, otherwise fail the job.
func (t *task) failure(ctx context.Context, e *protocol.Error) {
	e = boundError(e, t.c.nc.MaxPayload())
	t.c.metrics.attempt(t.alg, e.Code)
	if !e.Retryable() || t.rec.Attempts >= t.c.cfg.MaxAttempts {
		t.fail(ctx, e)
		return
	}
	delay := retryDelay(t.c.cfg, t.rec.Attempts)
	now := time.Now().UTC()
	next := now.Add(delay)
	rec := t.rec
	rec.Status, rec.Error, rec.FinishedAt, rec.NextAttemptAt = StatusRetrying, e, &now, &next
	data, err := appendJSON(nil, &rec)
	if err == nil {
		err = retry(ctx, t.c.cfg, t.log, "store the retrying record", func() error { return t.put(ctx, data) })
	}
	switch {
	case errors.Is(err, errFinal):
		t.ack()
		t.notifyCancelled()
		return
	case err != nil && ctx.Err() != nil:
		t.nak(0)
		return
	case err != nil && (permanent(err) || t.md.NumDelivered >= giveUpDeliveries):
		// The attempt cannot be counted, so retrying would call the
		// runner again and again: the job ends here, dead-lettered.
		t.log().Error().Err(err).Uint64("deliveries", t.md.NumDelivered).Msg("cannot store the retrying record; failing the job")
		t.fail(ctx, e)
		return
	case err != nil:
		// The attempt is not counted; the job is still retried, for at
		// most giveUpDeliveries deliveries.
		t.log().Warn().Err(err).Uint64("deliveries", t.md.NumDelivered).Msg("cannot store the retrying record; handing the job back")
	}
	t.log().Debug().Int("attempts", rec.Attempts).Int("code", e.Code).Str("error", e.Message).Dur("retry_in", delay).Msg("attempt failed; retrying")
	t.nak(delay)
}

// fail makes the job's failure final: a dead letter first (so a crash in
// between leaves the job replayable), then the failed result, then the ack.
// A dead letter that cannot be stored hands the job back while deliveries
// remain (giveUpDeliveries); after that, or when it can never be stored,
// the job fails without one.
func (t *task) fail(ctx context.Context, e *protocol.Error) {
	e = boundError(e, t.c.nc.MaxPayload())
	t.rec.Status, t.rec.Error, t.rec.Output = StatusFailed, e, nil
	finish(&t.rec, time.Now())
	seq, err := t.deadLetter(ctx, e)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.nak(0)
		return
	case !permanent(err) && t.md.NumDelivered < giveUpDeliveries:
		t.log().Warn().Err(err).Uint64("deliveries", t.md.NumDelivered).Msg("cannot store the dead letter; handing the job back")
		t.nak(retryDelay(t.c.cfg, int(t.md.NumDelivered)))
		return
	default:
		t.log().Error().Err(err).Uint64("deliveries", t.md.NumDelivered).Msg("cannot store the dead letter; failing the job without one")
	}
	t.rec.DeadLetterSeq = seq
	t.log().Warn().Int("code", e.Code).Str("error", e.Message).Int("attempts", t.rec.Attempts).
		Uint64("dead_letter_seq", seq).Msg("job failed")
	if t.noRecord || !ValidJobID(t.id) || !discovery.ValidAlgorithmName(t.alg) {
		// No key to store a result under (or none this job may use), or
		// no algorithm a record (result.json) may name: the dead letter
		// tells the story.
		t.ack()
		t.finished()
		return
	}
	t.finalize(ctx)
}

// maxKeptRecord bounds the record buffer a worker keeps for its next job,
// so that one large output does not stay allocated per worker.
const maxKeptRecord = 64 << 10

// resultOverhead leaves room for the KV headers next to a result record.
const resultOverhead = 1024

// finalize stores the final record and acks the job. A final record that
// is already there wins: the job is acked and its outcome unchanged. A
// record that cannot be stored hands the job back while deliveries remain;
// after that a succeeded job fails (dead-lettered, so it can be replayed)
// and a failed one keeps its dead letter as its only outcome.
func (t *task) finalize(ctx context.Context) {
	data, err := appendJSON((*t.buf)[:0], &t.rec)
	if err != nil {
		t.log().Error().Err(err).Msg("encode result")
		t.nak(0)
		return
	}
	if cap(data) <= maxKeptRecord {
		*t.buf = data[:0]
	}
	if limit := t.c.nc.MaxPayload() - resultOverhead; int64(len(data)) > limit && t.rec.Status == StatusSucceeded {
		// The output fitted the runner's reply but not the record: keep it
		// in the outputs bucket and store its reference.
		size := len(t.rec.Output)
		err := retry(ctx, t.c.cfg, t.log, "store the output in bucket "+OutputsBucket, func() error { return storeOutput(ctx, t.c.store, &t.rec) })
		if err != nil {
			t.fail(ctx, &protocol.Error{Code: protocol.CodeTooLarge, Algorithm: t.alg, Instance: t.rec.Instance,
				Message: fmt.Sprintf("result of %d bytes does not fit the server's max payload of %d, and its output could not be stored in bucket %s", len(data), t.c.nc.MaxPayload(), OutputsBucket)})
			return
		}
		t.log().Debug().Int("bytes", size).Str("output_ref", t.rec.OutputRef).Msg("output stored by reference")
		if data, err = appendJSON(data[:0], &t.rec); err != nil {
			t.log().Error().Err(err).Msg("encode result")
			t.nak(0)
			return
		}
	}
	err = retry(ctx, t.c.cfg, t.log, "store the result", func() error { return t.put(ctx, data) })
	switch {
	case errors.Is(err, errFinal):
		t.log().Debug().Msg("job already has a final result; keeping it")
		t.ack()
		t.notifyCancelled()
	case err != nil && ctx.Err() != nil:
		t.nak(0)
	case err != nil && !permanent(err) && t.md.NumDelivered < giveUpDeliveries:
		t.log().Warn().Err(err).Uint64("deliveries", t.md.NumDelivered).Msg("cannot store the result; handing the job back")
		t.nak(retryDelay(t.c.cfg, int(t.md.NumDelivered)))
	case err != nil && t.rec.Status == StatusSucceeded:
		t.fail(ctx, &protocol.Error{Code: protocol.CodeInternal, Algorithm: t.alg, Instance: t.rec.Instance,
			Message: "the result could not be stored: " + err.Error()})
	case err != nil:
		t.log().Error().Err(err).Uint64("dead_letter_seq", t.rec.DeadLetterSeq).Msg("cannot store the failed result; the dead letter is the job's outcome")
		t.ack()
		t.finished()
	default:
		t.ack()
		t.finished()
		if subj := t.msg.Headers().Get(HeaderNotify); subj != "" && ValidNotifySubject(subj) {
			// The bare record: DecodeNotification refuses anything else.
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
	kv := t.c.store.Results()
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
		if prev, err := jobs.DecodeResult(t.id, e.Value()); err == nil && prev.Status.Final() {
			t.sawFinal(prev.Status, e.Value())
			return errFinal
		}
		rev = e.Revision()
	}
	return fmt.Errorf("controller: store result %s: too many concurrent writers", t.id)
}

// deadLetterSlack is room kept in a dead letter for what the client adds
// to the message (Nats-Msg-Id and the framing of the header block).
const deadLetterSlack = 64

// maxReasonLen bounds Pnp-Dead-Reason; the full error is in the result
// record and, when it fits, in Pnp-Dead-Error.
const maxReasonLen = 1024

// deadLetter stores the job in DEAD with its body and headers, and the
// reason. The message id makes a second store of the same delivery (after
// a crash) a no-op. A dead letter always fits the server's max payload:
// the job's own headers are left out when only that makes the body fit,
// and the body when it does not fit (markers HeaderDeadHeadersOmitted and
// HeaderDeadBodyOmitted say so; HeaderJobSeq still names the job).
func (t *task) deadLetter(ctx context.Context, e *protocol.Error) (uint64, error) {
	own := nats.Header{}
	for k, v := range t.msg.Headers() {
		if jobs.ReservedHeader(k) {
			continue
		}
		own[k] = v
	}
	id, msgID := t.id, t.id+"@"+strconv.FormatUint(t.md.Sequence.Stream, 10)
	if !ValidJobID(id) {
		// Any header value: keep enough to recognise it, and a message
		// id that is a few bytes.
		id, msgID = truncate(id, maxJobIDLen), "invalid-id@"+strconv.FormatUint(t.md.Sequence.Stream, 10)
	}
	h := nats.Header{}
	h.Set(HeaderJobID, id)
	h.Set(HeaderDeadReason, truncate(oneLine(e.Message), maxReasonLen))
	h.Set(HeaderDeadCode, strconv.Itoa(e.Code))
	h.Set(HeaderDeadAttempts, strconv.Itoa(t.rec.Attempts))
	h.Set(HeaderDeadAt, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(HeaderJobSeq, strconv.FormatUint(t.md.Sequence.Stream, 10))
	h.Set(HeaderSubmittedAt, t.md.Timestamp.UTC().Format(time.RFC3339Nano))
	if b, err := json.Marshal(e); err == nil && len(b) <= 4096 {
		h.Set(HeaderDeadError, string(b))
	}
	limit := int(t.c.nc.MaxPayload()) - len(HeaderMsgID) - len(msgID) - deadLetterSlack
	body := t.msg.Data()
	ownSize := jobs.HeaderSize(own)
	switch size := jobs.HeaderSize(h); {
	case size+ownSize+len(body) <= limit:
		mergeHeader(h, own)
	case ownSize > 0 && size+len(body)+len(HeaderDeadHeadersOmitted)+24 <= limit:
		h.Set(HeaderDeadHeadersOmitted, strconv.Itoa(ownSize))
	default:
		h.Set(HeaderDeadBodyOmitted, strconv.Itoa(len(body)))
		body = nil
		if jobs.HeaderSize(h)+ownSize <= limit {
			mergeHeader(h, own)
		} else if ownSize > 0 {
			h.Set(HeaderDeadHeadersOmitted, strconv.Itoa(ownSize))
		}
		t.log().Warn().Int("body_bytes", len(t.msg.Data())).Int("header_bytes", ownSize).
			Msg("the job does not fit its dead letter; storing its headers and sequence without its body")
	}
	subj := DeadSubjectPrefix + t.alg
	if !discovery.ValidAlgorithmName(t.alg) {
		// The name may be longer than a subject the server takes from a
		// client that also names a reply inbox: it would close the
		// connection.
		subj = DeadSubjectPrefix + DeadInvalidAlgorithm
	}
	msg := &nats.Msg{Subject: subj, Header: h, Data: body}
	var seq uint64
	err := retry(ctx, t.c.cfg, t.log, "store the dead letter", func() error {
		// retry does the retrying, bounded and logged; the client's own
		// retries on no responders would only stretch each try.
		ack, err := t.c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID), jetstream.WithRetryAttempts(0))
		if err != nil {
			return fmt.Errorf("controller: dead letter %s: %w", t.id, err)
		}
		seq = ack.Sequence
		return nil
	})
	return seq, err
}

func mergeHeader(dst, src nats.Header) {
	for k, v := range src {
		dst[k] = v
	}
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

// retryTries bounds retry: with the default backoffs about 8 s of tries
// in all, so a job's worker is never held long by a store that does not
// answer.
const retryTries = 8

// retry calls fn until it succeeds, returns errFinal, fails with a
// permanent error, ctx ends, or retryTries calls failed, backing off from
// 50 ms to 2 s (or from RetryBackoff to MaxRetryBackoff when those are
// shorter): it carries a store operation over a short NATS restart.
// Giving up is logged (log is called only then); the caller turns the
// error into an outcome.
func retry(ctx context.Context, cfg Config, log func() *zerolog.Logger, what string, fn func() error) error {
	backoff, maxBackoff := min(50*time.Millisecond, cfg.RetryBackoff), min(2*time.Second, cfg.MaxRetryBackoff)
	for try := 1; ; try++ {
		err := fn()
		if err == nil || errors.Is(err, errFinal) {
			return err
		}
		if permanent(err) || try == retryTries {
			log().Warn().Err(err).Int("tries", try).Msgf("giving up: cannot %s", what)
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// permanent reports whether err cannot go away by trying again: the
// message is too large or malformed for the server.
func permanent(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, nats.ErrBadHeaderMsg) || errors.Is(err, nats.ErrInvalidMsg) ||
		errors.Is(err, ErrNoObjectStore)
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
