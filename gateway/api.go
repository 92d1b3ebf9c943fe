package gateway

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/replycheck"
	"github.com/pnpworker/pnpworker/schemas"
)

// Request headers passed on to NATS: the caller's time budget and the W3C
// trace context.
const (
	headerTraceparent    = "traceparent"
	headerTracestate     = "tracestate"
	headerIdempotencyKey = "Idempotency-Key"
)

// replySlack is how much longer than the algorithm's time budget the
// gateway waits for a reply: the runner counts the budget from when it
// received the request, and the reply still has to travel.
const replySlack = 2 * time.Second

// algorithmJSON is one algorithm as GET /v1/algorithms lists it.
type algorithmJSON struct {
	Name           string          `json:"name"`
	Version        string          `json:"version"`
	Versions       []string        `json:"versions"`
	Description    string          `json:"description,omitempty"`
	Subject        string          `json:"subject"`
	TimeoutMS      int64           `json:"timeout_ms"`
	MaxConcurrency int             `json:"max_concurrency"`
	InputSchema    json.RawMessage `json:"input_schema"`
	OutputSchema   json.RawMessage `json:"output_schema"`
	Instances      []instanceJSON  `json:"instances"`
	Stats          *algorithmStats `json:"stats,omitempty"`
}

type instanceJSON struct {
	Instance       string    `json:"instance"`
	Version        string    `json:"version"`
	Host           string    `json:"host,omitempty"`
	SDK            string    `json:"sdk,omitempty"`
	StartedAt      time.Time `json:"started_at"`
	HeartbeatAt    time.Time `json:"heartbeat_at"`
	HeartbeatAgeMS int64     `json:"heartbeat_age_ms"`
}

// algorithms groups the live registrations by algorithm, sorted by name.
// An algorithm's schemas and settings are those of its newest version.
func (g *Gateway) algorithms() []algorithmJSON {
	byName := map[string][]discovery.Registration{}
	for _, r := range g.cache.All() {
		byName[r.Algorithm] = append(byName[r.Algorithm], r)
	}
	now := time.Now()
	out := make([]algorithmJSON, 0, len(byName))
	for name, regs := range byName {
		newest := regs[0]
		var versions []string
		for _, r := range regs {
			if compareVersions(r.Version, newest.Version) > 0 {
				newest = r
			}
			if !slices.Contains(versions, r.Version) {
				versions = append(versions, r.Version)
			}
		}
		slices.SortFunc(versions, compareVersions)
		a := algorithmJSON{
			Name: name, Version: newest.Version, Versions: versions, Description: newest.Description,
			Subject: newest.Subject, TimeoutMS: newest.TimeoutMS, MaxConcurrency: newest.MaxConcurrency,
			InputSchema: newest.InputSchema, OutputSchema: newest.OutputSchema,
		}
		for _, r := range regs {
			a.Instances = append(a.Instances, instanceJSON{
				Instance: r.Instance, Version: r.Version, Host: r.Host, SDK: r.SDK,
				StartedAt: r.StartedAt, HeartbeatAt: r.HeartbeatAt,
				HeartbeatAgeMS: max(0, now.Sub(r.HeartbeatAt).Milliseconds()),
			})
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b algorithmJSON) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func (g *Gateway) listAlgorithms(w http.ResponseWriter, r *http.Request) {
	algs := g.algorithms()
	if r.URL.Query().Get("stats") != "" {
		// One collection per algorithm, at once: each waits up to the
		// stats timeout for an instance that does not answer.
		var wg sync.WaitGroup
		for i := range algs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := g.stats.get(r.Context(), algs[i].Name, len(algs[i].Instances))
				st.GatewayP50MS, st.GatewayP99MS, st.GatewaySamples = g.lat.percentiles(algs[i].Name)
				algs[i].Stats = st
			}()
		}
		wg.Wait()
	}
	writeJSON(w, http.StatusOK, algs)
}

// readBody reads the request body up to the server's max payload; a
// larger body is answered with 413 and ok false.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := g.nc.MaxPayload()
	if limit <= 0 {
		limit = 1 << 20
	}
	if n := r.ContentLength; n >= 0 && n <= limit {
		// The length is known and the server delivers exactly that many
		// bytes (or fails the read): read them into a body of that size.
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			writeProblem(w, problem{Code: http.StatusBadRequest, Message: "cannot read the request body"})
			return nil, false
		}
		return body, true
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(max(r.ContentLength, 512), limit+1)))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	body := buf.Bytes()
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("body over the limit of %d bytes (the NATS server's max payload)", limit)})
		return nil, false
	case err != nil:
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: "cannot read the request body"})
		return nil, false
	}
	return body, true
}

// timeoutHeader parses the optional Pnp-Timeout request header.
func timeoutHeader(r *http.Request) (time.Duration, error) {
	v := r.Header.Get(protocol.HeaderTimeout)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("header %s: %q is not a positive duration such as 500ms", protocol.HeaderTimeout, v)
	}
	return d, nil
}

// traceHeaders copies the W3C trace context of r into *h, making the
// header only when there is something to copy (a message without headers
// is cheaper for both ends).
func traceHeaders(r *http.Request, h *nats.Header) {
	for _, k := range []string{headerTraceparent, headerTracestate} {
		if v := r.Header.Get(k); v != "" {
			if *h == nil {
				*h = nats.Header{}
			}
			h.Set(k, v)
		}
	}
}

func noRunner(name string) problem {
	return problem{Code: http.StatusNotFound, Algorithm: name, Message: fmt.Sprintf("no runner serves %s", name)}
}

// run is POST /v1/algorithms/{name}/run: one request-reply to
// run.<name>, the runner's error code as HTTP status.
func (g *Gateway) run(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !discovery.ValidAlgorithmName(name) {
		writeProblem(w, noRunner(name))
		return
	}
	regs := g.cache.Lookup(name)
	if len(regs) == 0 {
		writeProblem(w, noRunner(name))
		return
	}
	// Headers first: a bad one refuses the request before any upload.
	d, err := timeoutHeader(r)
	if err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: err.Error()})
		return
	}
	body, ok := g.readInput(w, r, name)
	if !ok {
		return
	}
	budget := time.Duration(0)
	for _, reg := range regs {
		budget = max(budget, reg.Timeout())
	}
	if budget == 0 {
		budget = protocol.DefaultTimeout
	}
	msg := &nats.Msg{Subject: protocol.RequestSubject(name), Data: body}
	if d > 0 {
		msg.Header = nats.Header{protocol.HeaderTimeout: []string{r.Header.Get(protocol.HeaderTimeout)}}
		budget = min(budget, d)
	}
	traceHeaders(r, &msg.Header)
	wait := budget + replySlack
	extendWrite(w, wait+replySlack)
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	start := time.Now()
	reply, err := g.nc.RequestMsgWithContext(ctx, msg)
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrNoResponders):
		writeProblem(w, noRunner(name))
		return
	case errors.Is(err, nats.ErrMaxPayload):
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Algorithm: name, Message: "request over the NATS server's max payload"})
		return
	case r.Context().Err() != nil:
		return // the caller left
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		writeProblem(w, problem{Code: http.StatusGatewayTimeout, Algorithm: name, Message: fmt.Sprintf("no reply from %s within %s", name, wait)})
		return
	default:
		g.log.Warn().Err(err).Str("algorithm", name).Msg("request to runner failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: name, Message: "NATS unavailable"})
		return
	}
	took := time.Since(start)
	g.lat.add(name, took)
	g.shadow(name, body, reply, took, d)
	g.answerReply(w, r, name, regs, reply)
}

// answerReply answers a runner's reply as the controller would take it:
// only the documented headers pass, an error code outside the protocol's
// set becomes 400 or 500, and a success must satisfy the output schema of
// the instance that answered (Pnp-Instance) or it is a 502.
func (g *Gateway) answerReply(w http.ResponseWriter, r *http.Request, name string, regs []discovery.Registration, reply *nats.Msg) {
	passReplyHeaders(w, reply)
	instance := w.Header().Get(protocol.HeaderInstance)
	if e := protocol.ReplyError(reply); e != nil {
		e = replycheck.ProtocolCode(e)
		if e.Algorithm == "" {
			e.Algorithm = name
		}
		e.Instance = instance
		writeProblem(w, fromRunnerError(e))
		return
	}
	output := reply.Data
	if ref := reply.Header.Get(protocol.HeaderOutputRef); ref != "" {
		// The output did not fit a message: it is checked where the
		// runner stored it, as the controller checks it.
		var err error
		if output, err = g.referencedOutput(r, name, ref); err != nil {
			w.Header().Del(protocol.HeaderOutputRef)
			g.log.Warn().Str("algorithm", name).Str("instance", instance).Str("output_ref", truncate(ref, 300)).Err(err).Msg("runner output by reference not checked")
			writeProblem(w, problem{Code: protocol.CodeBadGateway, Algorithm: name, Instance: instance,
				Message: fmt.Sprintf("runner output %s could not be checked: %v", truncate(ref, 300), err)})
			return
		}
	}
	if verr := g.checker.CheckOutput(regs, instance, output); verr != nil {
		g.log.Warn().Str("algorithm", name).Str("instance", instance).Str("error", truncate(verr.Error(), 1000)).Msg("runner output does not match its schema")
		verr.Algorithm, verr.Instance = name, instance
		writeProblem(w, fromRunnerError(verr))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply.Data)
}

// referencedOutput reads back an output stored by reference, within the
// controller's bound, after checking that the reference is one into the
// algorithm's own outputs bucket, the only one its runners may write.
func (g *Gateway) referencedOutput(r *http.Request, algorithm, ref string) ([]byte, error) {
	o, err := objref.Parse(ref)
	if want := objref.OutputsBucketFor(algorithm); err != nil || o.Bucket != want {
		return nil, fmt.Errorf("%s is not a reference into bucket %s", protocol.HeaderOutputRef, want)
	}
	return objref.Read(r.Context(), g.js, o, replycheck.DefaultMaxReferencedOutputBytes)
}

// jobAccepted is the answer to a job submission or replay.
type jobAccepted struct {
	JobID     string `json:"job_id"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Location  string `json:"location"`
	// NotBefore is when a delayed job enters the queue.
	NotBefore *time.Time `json:"not_before,omitempty"`
}

func accepted(w http.ResponseWriter, sub jobs.Submission) {
	loc := "/v1/jobs/" + sub.ID
	w.Header().Set("Location", loc)
	a := jobAccepted{JobID: sub.ID, Duplicate: sub.Duplicate, Location: loc}
	if !sub.NotBefore.IsZero() {
		a.NotBefore = &sub.NotBefore
	}
	writeJSON(w, http.StatusAccepted, a)
}

// submit is POST /v1/algorithms/{name}/jobs: a durable job, named by the
// Idempotency-Key header when there is one.
func (g *Gateway) submit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !discovery.ValidAlgorithmName(name) {
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("%q cannot name an algorithm", name)})
		return
	}
	if !g.known(w, r, name) {
		return
	}
	var opts jobs.SubmitOptions
	if key := r.Header.Get(headerIdempotencyKey); key != "" {
		if !protocol.ValidJobID(key) {
			writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: fmt.Sprintf("header %s: %q cannot name a job: want letters, digits, '_', '=', '-' and single inner dots, at most 255 characters", headerIdempotencyKey, key)})
			return
		}
		if protocol.ReservedJobID(key) {
			writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: fmt.Sprintf("header %s: %q cannot name a job: the prefix auto- is reserved for ids the controller assigns", headerIdempotencyKey, key)})
			return
		}
		opts.ID = key
	}
	d, err := timeoutHeader(r)
	if err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: err.Error()})
		return
	}
	opts.Timeout = d
	if opts.NotBefore, err = notBeforeHeader(r); err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: err.Error()})
		return
	}
	if opts.Priority, err = priorityHeader(r); err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: err.Error()})
		return
	}
	// Headers first: a bad one refuses the job before any upload.
	body, ok := g.readInput(w, r, name)
	if !ok {
		return
	}
	if !json.Valid(body) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: name, Message: "invalid input",
			Violations: []schemas.Violation{{Pointer: "", Message: "the body is not valid JSON"}}})
		return
	}
	traceHeaders(r, &opts.Header)
	sub, err := g.store.Submit(r.Context(), name, body, opts)
	switch {
	case errors.Is(err, jobs.ErrTooLarge):
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Algorithm: name, Message: strings.TrimPrefix(err.Error(), "jobs: ")})
	case errors.Is(err, jobs.ErrNoSchedules):
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: name, Message: strings.TrimPrefix(err.Error(), "jobs: ")})
	case errors.Is(err, jobs.ErrJobsFull):
		// The queue's own limit (the algorithm's, or JOBS'), named.
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: name, Message: strings.TrimPrefix(err.Error(), "jobs: ")})
	case err != nil:
		g.log.Warn().Err(err).Str("algorithm", name).Msg("submit failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: name, Message: "cannot store the job: JetStream unavailable"})
	default:
		accepted(w, sub)
	}
}

// job is GET /v1/jobs/{id}: the job's result record; ?wait=30s waits for
// the final one.
func (g *Gateway) job(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidJobID(id) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("%q cannot name a job", id)})
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("wait %q: want a duration such as 30s", v)})
			return
		}
		wait = min(d, g.cfg.MaxWait)
	}
	var (
		res jobs.Result
		err error
	)
	if wait > 0 {
		extendWrite(w, wait+replySlack)
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		res, err = g.store.WaitResult(ctx, id, nil)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			// Not final yet: answer with what there is, a retrying
			// record or nothing.
			res, err = g.store.Result(r.Context(), id)
		}
	} else {
		res, err = g.store.Result(r.Context(), id)
	}
	if g.resultError(w, r, id, err) {
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// resultError writes the problem for err, an error of reading job id's
// result, and reports whether there was one (nothing is written when the
// caller has left).
func (g *Gateway) resultError(w http.ResponseWriter, r *http.Request, id string, err error) bool {
	switch {
	case err == nil:
		return false
	case r.Context().Err() != nil:
	case errors.Is(err, jobs.ErrNoResult):
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("no result for job %s: it is still waiting, was never submitted, or its result expired", id)})
	case errors.Is(err, jobs.ErrCorruptResult):
		g.log.Error().Err(err).Str("job_id", id).Msg("corrupt result record")
		writeProblem(w, problem{Code: http.StatusInternalServerError, Message: fmt.Sprintf("the record stored for job %s is not its result", id)})
	default:
		g.log.Warn().Err(err).Str("job_id", id).Msg("reading result failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot read the result: JetStream unavailable"})
	}
	return true
}

// deadLetterJSON is a dead letter as GET /v1/dead lists it.
type deadLetterJSON struct {
	Seq       uint64          `json:"seq"`
	JobID     string          `json:"job_id"`
	Algorithm string          `json:"algorithm"`
	Code      int             `json:"code"`
	Reason    string          `json:"reason"`
	Attempts  int             `json:"attempts"`
	DeadAt    time.Time       `json:"dead_at"`
	Body      json.RawMessage `json:"body,omitempty"`
}

func (g *Gateway) dead(w http.ResponseWriter, r *http.Request) {
	alg := r.URL.Query().Get("algorithm")
	if alg != "" && !discovery.ValidAlgorithmName(alg) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("%q cannot name an algorithm", alg)})
		return
	}
	letters, err := g.store.DeadLetters(r.Context(), alg)
	if err != nil {
		g.log.Warn().Err(err).Msg("listing dead letters failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot list dead letters: JetStream unavailable"})
		return
	}
	out := make([]deadLetterJSON, 0, len(letters))
	for _, d := range letters {
		dj := deadLetterJSON{Seq: d.Seq, JobID: d.JobID, Algorithm: d.Algorithm, Code: d.Code, Reason: d.Reason, Attempts: d.Attempts, DeadAt: d.DeadAt}
		if json.Valid(d.Data) {
			dj.Body = d.Data
		}
		out = append(out, dj)
	}
	writeJSON(w, http.StatusOK, out)
}

// replay is POST /v1/dead/{id}/replay: the job's newest dead letter is
// submitted again under its id.
func (g *Gateway) replay(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidJobID(id) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("%q cannot name a job", id)})
		return
	}
	letters, err := g.store.DeadLetters(r.Context(), "")
	if err != nil {
		g.log.Warn().Err(err).Msg("listing dead letters failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot list dead letters: JetStream unavailable"})
		return
	}
	var found *jobs.DeadLetter
	for i := range letters {
		if letters[i].JobID == id {
			found = &letters[i] // oldest first: the last is the newest
		}
	}
	if found == nil {
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("no dead letter for job %s", id)})
		return
	}
	sub, err := g.store.Replay(r.Context(), *found)
	switch {
	case errors.Is(err, jobs.ErrAlreadySucceeded):
		writeProblem(w, problem{Code: http.StatusConflict, Algorithm: found.Algorithm, Message: fmt.Sprintf("job %s already succeeded; its dead letter was removed", id)})
	case errors.Is(err, jobs.ErrNotReplayable):
		writeProblem(w, problem{Code: http.StatusConflict, Algorithm: found.Algorithm, Message: fmt.Sprintf("job %s cannot be replayed: its body was too large to keep", id)})
	case err != nil:
		g.log.Warn().Err(err).Str("job_id", id).Msg("replay failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot replay: JetStream unavailable"})
	default:
		sub.ID = id
		accepted(w, sub)
	}
}

func (g *Gateway) queues(w http.ResponseWriter, r *http.Request) {
	qs, err := g.store.Queues(r.Context())
	if err != nil {
		g.log.Warn().Err(err).Msg("reading queues failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot read the queues: JetStream unavailable"})
		return
	}
	if qs == nil {
		qs = []jobs.Queue{}
	}
	writeJSON(w, http.StatusOK, qs)
}

func (g *Gateway) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyTimeout bounds the discovery read of /readyz.
const readyTimeout = 2 * time.Second

// readyz answers 200 when NATS is connected and the discovery bucket can
// be read.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	if st := g.nc.Status(); st != nats.CONNECTED {
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "NATS not connected: " + st.String()})
		return
	}
	select {
	case <-g.cache.Ready():
	default:
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "discovery not loaded yet"})
		return
	}
	if g.eventsDown.Load() {
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "the results watch gave up: no job events"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if _, err := g.store.Registry().KeyValue().Status(ctx); err != nil {
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "discovery bucket not readable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// fallback answers what no other route of mux took: 405 with Allow when
// the path has routes for other methods, else 404.
func (g *Gateway) fallback(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			g.notFound(w, r)
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeProblem(w, problem{Code: http.StatusMethodNotAllowed, Message: fmt.Sprintf("%s %s: this route takes %s", r.Method, r.URL.Path, strings.Join(allow, " and "))})
	}
}

func (g *Gateway) notFound(w http.ResponseWriter, r *http.Request) {
	writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
}

// compareVersions orders semantic versions numerically by major, minor
// and patch, then by the rest as text.
func compareVersions(a, b string) int {
	pa, pb := strings.SplitN(a, ".", 3), strings.SplitN(b, ".", 3)
	for i := 0; i < 3 && i < len(pa) && i < len(pb); i++ {
		na, ea := leadingInt(pa[i])
		nb, eb := leadingInt(pb[i])
		if c := cmp.Compare(na, nb); c != 0 {
			return c
		}
		if c := cmp.Compare(ea, eb); c != 0 && i == 2 {
			// A pre-release sorts before its release.
			switch {
			case ea == "":
				return 1
			case eb == "":
				return -1
			}
			return c
		}
	}
	return cmp.Compare(a, b)
}

func leadingInt(s string) (int, string) {
	n, i := 0, 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9' && n < 1<<30; i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n, s[i:]
}
