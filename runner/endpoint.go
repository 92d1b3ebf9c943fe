package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/internal/procstats"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// endpoint serves one algorithm. micro calls handle one message at a time
// on the subscription's goroutine, so handle only admits the request and
// queues it; up to MaxConcurrency long-lived workers run the queue. Long-lived
// workers matter: schema validation and JSON need deep stacks, and a fresh
// goroutine per request would grow (copy) its stack every time. They are
// started by use, when a request is admitted and no worker is free, so a
// large MaxConcurrency costs nothing until the load reaches it.
type endpoint struct {
	alg   *Algorithm
	nc    *nats.Conn
	js    jetstream.JetStream // the outputs bucket, for outputs too large for a message
	subs  subs
	cache *liveView // live instances, for protocol.HeaderVersionWanted
	// provisioned is closed once the outputs bucket exists (the runner
	// serves while provisioning); storeOutput waits for it.
	provisioned <-chan struct{}
	monitorSubs []*nats.Subscription
	started     time.Time
	metadata    map[string]string
	instance    string
	rec         discovery.Registration
	log         zerolog.Logger
	base        context.Context
	okHeader    nats.Header
	checkOutput bool

	jobs       chan job // capacity = limit, so an admitted job never blocks
	limit      int
	workers    sync.WaitGroup
	maxWorkers int         // MaxConcurrency
	workerList []*worker   // started so far, under mu; never more than maxWorkers
	stopping   atomic.Bool // the drain timeout passed: cut everything short

	mu       sync.Mutex
	admitted int  // queued + running
	draining bool // shutdown started: signal idle when admitted reaches 0
	idle     chan struct{}
	closed   bool // jobs is closed: refuse everything

	cancels cancelled // recently cancelled job ids (cancel.go)

	drainOnce sync.Once
	drained   chan struct{} // closed when the subscription finished draining

	svcStats serviceStats
	metrics  *Metrics            // nil without metrics
	okObs    prometheus.Observer // latency of successes; nil without WithMetrics

	// counters for the micro STATS data field
	running    atomic.Int64
	served     atomic.Int64
	overloaded atomic.Int64
	noReply    atomic.Int64
	fromJS     atomic.Int64 // refused: JetStream delivered them (jetstream.go)
	jsLog      zerolog.Logger
	errMu      sync.Mutex
	errCodes   map[int]int64
	busyNanos  atomic.Int64
}

type job struct {
	body     []byte
	hdr      nats.Header
	reply    string
	received time.Time
}

// startWorker starts one more worker; the caller holds e.mu and has checked
// that the queue is open and fewer than maxWorkers run.
func (e *endpoint) startWorker() {
	w := &worker{e: e}
	// One timer per worker, re-armed for each request: it answers 504
	// the moment a request's deadline passes, even when the function
	// ignores its context.
	w.timer = time.AfterFunc(time.Hour, func() { w.interrupt(true) })
	w.timer.Stop()
	e.workerList = append(e.workerList, w)
	e.workers.Add(1)
	go func() {
		defer e.workers.Done()
		for j := range e.jobs {
			w.serve(j)
			e.done()
		}
	}()
}

// worker is one of the endpoint's long-lived goroutines and the state of
// the request it runs. The reply to a request goes out exactly once: from
// the worker when the function returns, or from interrupt when the deadline
// passes or shutdown gives up waiting, whichever claims it first. The
// worker stays busy until the function really returns, so a function that
// ignores its context cannot push the instance past MaxConcurrency.
type worker struct {
	e     *endpoint
	timer *time.Timer
	// okID is the endpoint's success headers plus the job id, built on
	// first use; only the worker's goroutine touches it.
	okID nats.Header

	mu       sync.Mutex
	active   bool
	replied  bool
	received time.Time
	deadline time.Time
	cancel   context.CancelFunc
	reply    string
	hdr      nats.Header
}

// idHeader returns the success headers with Pnp-Job-Id set to id. They
// are the worker's own and valid until its next request.
func (w *worker) idHeader(id string) nats.Header {
	if w.okID == nil {
		w.okID = make(nats.Header, len(w.e.okHeader)+1)
		for k, v := range w.e.okHeader {
			w.okID[k] = v
		}
		w.okID[protocol.HeaderJobID] = []string{""}
	}
	w.okID[protocol.HeaderJobID][0] = id
	return w.okID
}

func (w *worker) begin(reply string, hdr nats.Header, received, deadline time.Time, cancel context.CancelFunc) {
	w.mu.Lock()
	w.active, w.replied, w.received, w.deadline, w.cancel, w.reply, w.hdr = true, false, received, deadline, cancel, reply, hdr
	stopping := w.e.stopping.Load()
	w.mu.Unlock()
	w.timer.Reset(time.Until(deadline))
	if stopping {
		w.interrupt(false)
	}
}

// finish ends the request and reports whether the worker still owns its
// reply.
func (w *worker) finish() bool {
	w.timer.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	own := !w.replied
	w.active, w.replied, w.cancel, w.hdr = false, true, nil, nil
	return own
}

// interrupt answers the running request now and cancels its context, unless
// it was answered already; with onlyIfDue, only once its deadline passed (a
// timer fire that raced with the end of an earlier request is ignored).
func (w *worker) interrupt(onlyIfDue bool) {
	w.mu.Lock()
	if !w.active || w.replied || (onlyIfDue && time.Now().Before(w.deadline)) {
		w.mu.Unlock()
		return
	}
	w.replied = true
	reply, hdr, received, cancel := w.reply, w.hdr, w.received, w.cancel
	w.mu.Unlock()
	cancel()
	w.e.replyError(reply, hdr, received, w.e.ctxError(""))
}

// interruptAll cancels every running request and answers it 503; queued
// ones are answered 503 by the workers without running.
func (e *endpoint) interruptAll() {
	e.stopping.Store(true)
	e.mu.Lock()
	workers := e.workerList[:len(e.workerList):len(e.workerList)]
	e.mu.Unlock()
	for _, w := range workers {
		w.interrupt(false)
	}
}

func (e *endpoint) done() {
	e.mu.Lock()
	e.admitted--
	if e.draining && e.admitted == 0 {
		select {
		case <-e.idle:
		default:
			close(e.idle)
		}
	}
	e.mu.Unlock()
}

// beginDrain returns a channel closed once no admitted request is left.
// Requests still delivered by the draining subscription are admitted and
// served as usual.
func (e *endpoint) beginDrain() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.draining = true
	if e.admitted == 0 {
		close(e.idle)
	}
	return e.idle
}

func (e *endpoint) markDrained() { e.drainOnce.Do(func() { close(e.drained) }) }

// waitDrained waits until the subscription has handed over every delivered
// message and every admitted request is done, or ctx ends.
func (e *endpoint) waitDrained(ctx context.Context) bool {
	select {
	case <-e.drained:
	case <-ctx.Done():
		return false
	}
	select {
	case <-e.beginDrain():
		return true
	case <-ctx.Done():
		return false
	}
}

// close stops the workers after they finish what is queued; anything that
// arrives later is answered 503.
func (e *endpoint) close() { e.closeWithin(stuckGrace) }

// closeWithin closes the queue and waits up to d for the workers. When the
// requests were cancelled, leftovers that no free worker takes are answered
// 503 here, so a stuck algorithm call cannot leave them unanswered.
func (e *endpoint) closeWithin(d time.Duration) bool {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.jobs)
	}
	e.mu.Unlock()
	if e.stopping.Load() {
		for j := range e.jobs {
			e.replyError(j.reply, j.hdr, j.received, notStarted(e.ctxError("before the request started")))
			e.done()
		}
	}
	done := make(chan struct{})
	go func() { e.workers.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

type endpointStats struct {
	InFlight       int64            `json:"in_flight"`
	Waiting        int64            `json:"waiting"`
	MaxConcurrency int              `json:"max_concurrency"`
	MaxPending     int              `json:"max_pending"`
	Served         int64            `json:"served"`
	Rejected503    int64            `json:"rejected_overloaded"`
	NoReplySubject int64            `json:"dropped_no_reply_subject"`
	FromJetStream  int64            `json:"refused_jetstream"`
	Errors         map[string]int64 `json:"errors_by_code,omitempty"`
	AvgRunMS       float64          `json:"avg_run_ms"`
	Batches        *BatchStats      `json:"batches,omitempty"`
	// Process is the runner process's goroutines and heap: the same for
	// every algorithm the process serves.
	Process procstats.Snapshot `json:"process"`
}

// stats is the endpoint's STATS data: micro's own processing_time only
// measures the hand-off, since requests run on their own goroutines.
func (e *endpoint) stats() endpointStats {
	s := e.counters()
	s.Process = procstats.Read()
	return s
}

// counters is stats without the process figures.
func (e *endpoint) counters() endpointStats {
	l := e.load()
	s := endpointStats{
		InFlight:       int64(l.InFlight),
		Waiting:        int64(l.Waiting),
		MaxConcurrency: e.alg.spec.MaxConcurrency,
		MaxPending:     e.alg.spec.MaxPending,
		Served:         e.served.Load(),
		Rejected503:    e.overloaded.Load(),
		NoReplySubject: e.noReply.Load(),
		FromJetStream:  e.fromJS.Load(),
	}
	if e.alg.batch != nil {
		s.Batches = e.alg.batch.stats()
	}
	if s.Served > 0 {
		s.AvgRunMS = float64(e.busyNanos.Load()) / float64(s.Served) / 1e6
	}
	e.errMu.Lock()
	if len(e.errCodes) > 0 {
		s.Errors = make(map[string]int64, len(e.errCodes))
		for c, n := range e.errCodes {
			s.Errors[strconv.Itoa(c)] = n
		}
	}
	e.errMu.Unlock()
	return s
}

// handle runs on the subscription's goroutine and must not block.
func (e *endpoint) handle(m *nats.Msg) {
	// What JetStream delivered is never a request, whoever pointed it
	// here: refused before anything else looks at it.
	if marker, ok := protocol.JetStreamDelivered(m); ok {
		e.refuseJetStream(m, marker)
		return
	}
	reply := m.Reply
	if reply == "" {
		// Published without a reply subject: nobody would see the answer.
		e.noReply.Add(1)
		return
	}
	if e.forward(m, e.cache) {
		return
	}
	hdr := m.Header
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		e.replyError(reply, hdr, time.Now(), &Error{Code: CodeUnavailable, Message: "draining: runner is shutting down", NotStarted: true})
		return
	case e.admitted >= e.limit:
		e.mu.Unlock()
		e.overloaded.Add(1)
		spec := e.alg.spec
		e.replyError(reply, hdr, time.Now(), &Error{Code: CodeUnavailable, Message: fmt.Sprintf("overloaded: %d requests running and %d waiting", spec.MaxConcurrency, spec.MaxPending), NotStarted: true})
		return
	}
	e.admitted++
	// A busy worker holds one admitted request: with more admitted than
	// workers, one more is needed for this request not to wait for a slot.
	if e.admitted > len(e.workerList) && len(e.workerList) < e.maxWorkers {
		e.startWorker()
	}
	// Sent under the lock so close cannot close the channel in between;
	// never blocks, since admitted <= cap(jobs).
	e.jobs <- job{body: m.Data, hdr: hdr, reply: reply, received: time.Now()}
	e.mu.Unlock()
}

func (w *worker) serve(j job) {
	e := w.e
	body, hdr, reply := j.body, j.hdr, j.reply
	spec := e.alg.spec
	deadline := j.received.Add(spec.Timeout)
	if d, ok, err := callerDeadline(hdr, j.received); err != nil {
		e.replyError(reply, hdr, j.received, &Error{Code: CodeInvalidInput, Message: err.Error()})
		return
	} else if ok && d.Before(deadline) {
		deadline = d
	}
	// e.base is never cancelled: the request's context ends at its deadline
	// or when interrupt cancels it, and deriving from a parent that cannot
	// be cancelled keeps that cheap.
	ctx, cancel := context.WithDeadline(e.base, deadline)
	defer cancel()
	if ctx.Err() != nil || e.stopping.Load() {
		// The deadline passed (or shutdown gave up) while the request
		// waited in the queue.
		e.replyError(reply, hdr, j.received, notStarted(e.ctxError("before the request started")))
		return
	}
	e.running.Add(1)
	defer e.running.Add(-1)

	// e.base already carries the endpoint's logger; a job id or a trace
	// id needs its own.
	log := e.log
	if id := hdr.Get(protocol.HeaderJobID); id != "" {
		ref := &jobRef{id: id, e: e}
		ctx = context.WithValue(ctx, jobIDKey{}, ref)
		ref.ctx = ctx
	}
	if l, ok := e.requestLogger(hdr); ok {
		log = l
		ctx = log.WithContext(ctx)
	}

	if err := validate(e.alg.input, body); err != nil {
		e.replyError(reply, hdr, j.received, err.(*Error))
		return
	}

	w.begin(reply, hdr, j.received, deadline, cancel)
	if id := hdr.Get(protocol.HeaderJobID); id != "" && e.cancels.has(id, time.Now()) {
		// Cancelled before it arrived: answered, and never run.
		w.cancelIf(id)
		w.finish()
		return
	}
	start := time.Now()
	data, err := e.call(ctx, body, log)
	took := time.Since(start)
	e.busyNanos.Add(int64(took))
	if !w.finish() {
		return // interrupt answered it
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			if ctx.Err() != nil {
				err = e.ctxError("")
			}
		}
		e.replyError(reply, hdr, j.received, asError(err))
		return
	}
	if e.checkOutput {
		if err := validate(e.alg.output, data); err != nil {
			verr := err.(*Error)
			e.replyError(reply, hdr, j.received, &Error{Code: CodeInternal, Message: "algorithm produced output that does not match its output schema", Violations: verr.Violations})
			return
		}
	}
	msg := &nats.Msg{Subject: reply, Data: data, Header: e.okHeader}
	id := hdr.Get(protocol.HeaderJobID)
	var ref string
	if int64(len(data)) > e.nc.MaxPayload()-outputHeadroom {
		r, err := e.storeOutput(data)
		if err != nil {
			log.Warn().Err(err).Int("bytes", len(data)).Msg("output too large for a message and not stored")
			e.replyError(reply, hdr, j.received, &Error{Code: CodeInternal, Message: fmt.Sprintf(
				"output of %d bytes exceeds the server's max payload of %d and could not be stored in bucket %s", len(data), e.nc.MaxPayload(), objref.OutputsBucketFor(e.alg.spec.Name)), Err: err})
			return
		}
		ref = r.String()
		msg.Data, _ = json.Marshal(map[string]string{"output_ref": ref})
	}
	if id != "" && ref == "" {
		// The job id echoed: in the worker's own copy of the reply
		// headers, encoded before PublishMsg returns.
		msg.Header = w.idHeader(id)
	} else if ref != "" {
		msg.Header = make(nats.Header, len(e.okHeader)+2)
		for k, v := range e.okHeader {
			msg.Header[k] = v
		}
		if id != "" {
			msg.Header.Set(protocol.HeaderJobID, id)
		}
		msg.Header.Set(protocol.HeaderOutputRef, ref)
	}
	if err := e.nc.PublishMsg(msg); err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			e.replyError(reply, hdr, j.received, &Error{Code: CodeInternal, Message: fmt.Sprintf("output of %d bytes exceeds the server's max payload of %d", len(data), e.nc.MaxPayload())})
			return
		}
		log.Warn().Err(err).Msg("sending reply")
		return
	}
	e.served.Add(1)
	e.record(took, nil)
	e.observe(j.received, 0)
}

// call runs the algorithm and encodes its output, turning a panic (in the
// function or in an output type's MarshalJSON) into a 500 with the stack
// logged.
func (e *endpoint) call(ctx context.Context, body []byte, log zerolog.Logger) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("algorithm panicked")
			data, err = nil, &Error{Code: CodeInternal, Message: "algorithm panicked", Err: fmt.Errorf("panic: %v", p)}
		}
	}()
	out, err := e.alg.call(ctx, body)
	if err != nil {
		return nil, err
	}
	data, err = json.Marshal(out)
	if err != nil {
		return nil, &Error{Code: CodeInternal, Message: ErrInternal.Message, Err: fmt.Errorf("encode output: %w", err)}
	}
	return data, nil
}

type jobIDKey struct{}

// JobID returns the job id of the request ctx belongs to (the Pnp-Job-Id
// header the controller sets), or "" when the request carries none.
func JobID(ctx context.Context) string {
	if ref, _ := ctx.Value(jobIDKey{}).(*jobRef); ref != nil {
		return ref.id
	}
	return ""
}

func notStarted(er *Error) *Error { er.NotStarted = true; return er }

// ctxError is the reply to a request cut short: 503 once shutdown gave up
// waiting, 504 for a deadline.
func (e *endpoint) ctxError(where string) *Error {
	suffix := ""
	if where != "" {
		suffix = " " + where
	}
	if e.stopping.Load() {
		return &Error{Code: CodeUnavailable, Message: "draining: runner is shutting down" + suffix}
	}
	return &Error{Code: CodeDeadline, Message: "deadline exceeded" + suffix}
}

// maxViolations and maxMessage bound an error reply, so that it always fits
// in a message: a hostile input can produce any number of violations.
const (
	maxViolations = 100
	maxMessage    = 1000
)

// replyError answers a request with er; received is when the request
// arrived, for its latency.
func (e *endpoint) replyError(reply string, req nats.Header, received time.Time, er *Error) {
	er.Algorithm = e.alg.spec.Name
	er.Instance = e.instance
	if !protocol.ValidCode(er.Code) {
		er.Err = fmt.Errorf("invalid error code %d: %w (%s)", er.Code, er.Err, er.Message)
		er.Code, er.Message = CodeInternal, ErrInternal.Message
	}
	if len(er.Message) > maxMessage {
		er.Message = er.Message[:maxMessage] + "…"
	}
	if n := len(er.Violations); n > maxViolations {
		er.Violations = append(er.Violations[:maxViolations:maxViolations], schemas.Violation{Pointer: "", Message: fmt.Sprintf("… and %d more violations", n-maxViolations)})
	}
	for i, v := range er.Violations {
		if len(v.Message) > maxMessage {
			er.Violations[i].Message = v.Message[:maxMessage] + "…"
		}
	}
	e.record(0, er)
	e.observe(received, er.Code)
	e.errMu.Lock()
	if e.errCodes == nil {
		e.errCodes = map[int]int64{}
	}
	e.errCodes[er.Code]++
	e.errMu.Unlock()
	// Every line about the request carries its job id and trace id.
	log, _ := e.requestLogger(req)
	// Refusals before the start (back-pressure, hand-backs) are routine:
	// the metrics count them, the caller tries again.
	ev := log.Debug()
	if er.Code >= 500 && !er.NotStarted {
		ev = log.Warn()
	}
	ev.Int("code", er.Code).Str("reason", er.Message).AnErr("cause", er.Err).Msg("request failed")

	body, err := json.Marshal(er)
	if err != nil {
		body = []byte(`{"code":500,"message":"internal error"}`)
	}
	h := nats.Header{
		protocol.HeaderErrorCode: []string{strconv.Itoa(er.Code)},
		protocol.HeaderError:     []string{er.Message},
		protocol.HeaderInstance:  []string{e.instance},
		protocol.HeaderAlgorithm: []string{e.alg.spec.Name},
		protocol.HeaderVersion:   []string{e.alg.spec.Version},
	}
	if id := req.Get(protocol.HeaderJobID); id != "" {
		h.Set(protocol.HeaderJobID, id)
	}
	if er.NotStarted {
		h.Set(protocol.HeaderNotStarted, "true")
	}
	err = e.nc.PublishMsg(&nats.Msg{Subject: reply, Data: body, Header: h})
	if errors.Is(err, nats.ErrMaxPayload) {
		// Still too large (a tiny max_payload): the headers alone say it.
		h.Set(protocol.HeaderError, "error reply too large; see the runner's log")
		err = e.nc.PublishMsg(&nats.Msg{Subject: reply, Header: h})
	}
	if err != nil {
		log.Warn().Err(err).Msg("sending error reply")
	}
}

// callerDeadline reads the optional deadline headers.
func callerDeadline(h nats.Header, now time.Time) (time.Time, bool, error) {
	var d time.Time
	found := false
	if v := h.Get(protocol.HeaderDeadline); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("header %s: %q is not an RFC 3339 time", protocol.HeaderDeadline, v)
		}
		d, found = t, true
	}
	if v := h.Get(protocol.HeaderTimeout); v != "" {
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			return time.Time{}, false, fmt.Errorf("header %s: %q is not a positive duration such as 500ms", protocol.HeaderTimeout, v)
		}
		if td := now.Add(t); !found || td.Before(d) {
			d, found = td, true
		}
	}
	return d, found, nil
}
