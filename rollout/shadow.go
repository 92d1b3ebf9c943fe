package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
)

// DefaultShadowConcurrency bounds the shadow requests a Shadower runs at
// once.
const DefaultShadowConcurrency = 8

// Header names of the protocol a Shadower reads from replies (the runner
// package defines them too; rollout sits below it).
const (
	headerVersion    = "Pnp-Version"
	headerNotStarted = "Pnp-Not-Started"
)

// Codes written into comparisons for answers that are not the protocol's
// or never came or could not be read (the protocol's 500, 502, 503, 504).
const (
	codeInternal    = 500
	codeBadGateway  = 502
	codeUnavailable = 503
	codeDeadline    = 504
)

// outputReadTimeout bounds reading one output stored by reference for a
// comparison.
const outputReadTimeout = 30 * time.Second

// ShadowOptions configures a Shadower. The zero value is the default.
type ShadowOptions struct {
	// Concurrency bounds the shadow requests in flight; an input that
	// finds them all busy is not shadowed (counted as dropped). Default
	// DefaultShadowConcurrency.
	Concurrency int
	// Compare sets the numeric tolerance and ignored fields.
	Compare CompareOptions
	// MaxOutputBytes bounds an output stored by reference that is read
	// back to be compared. Default DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// Logger gets a warning the first time inputs are dropped and the
	// first time a comparison cannot be stored.
	Logger zerolog.Logger
	// OnCompared, when set, is called with each stored comparison.
	OnCompared func(Comparison)
}

// ShadowCounts counts a Shadower's work since it was made.
type ShadowCounts struct {
	// Started shadow requests, and Compared: their comparison stored.
	Started, Compared int64
	// Dropped inputs found every slot busy.
	Dropped int64
	// NoInstance inputs found no live instance of the shadow version.
	NoInstance int64
	// StoreFailed comparisons could not be stored in COMPARE.
	StoreFailed int64
	// NotCompared comparisons were stored without a verdict: an output
	// stored by reference could not be read (Comparison.NotCompared).
	NotCompared int64
}

// ShadowInput is one input the stable version of a route answered.
type ShadowInput struct {
	// Route is the algorithm's route; nothing runs unless it names a
	// shadow and Stable came from its stable version.
	Route Route
	// Candidates are the live instances of Route.Shadow.
	Candidates []discovery.Registration
	// Budget is the shadow request's time budget.
	Budget time.Duration
	// JobID names the job, if the input is one.
	JobID string
	// Body is the input; Stable the stable version's reply to it, after
	// StableTook.
	Body       []byte
	Stable     *nats.Msg
	StableTook time.Duration
}

// Shadower runs inputs that a route's stable version answered on the
// route's shadow version too, in the background, compares both answers
// and stores the comparisons in COMPARE. It never delays or fails the
// stable answer: it runs at most Concurrency requests and drops inputs
// past that.
type Shadower struct {
	ctx context.Context
	nc  *nats.Conn
	js  jetstream.JetStream
	o   ShadowOptions
	sem chan struct{}

	// mu makes Offer's wg.Add and Wait safe to race: once Wait has begun,
	// nothing more starts.
	mu      sync.Mutex
	waiting bool
	wg      sync.WaitGroup

	started, compared, dropped, noInstance, storeFailed, notCompared atomic.Int64
}

// NewShadower returns a Shadower whose requests and comparisons end with
// ctx.
func NewShadower(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, o ShadowOptions) *Shadower {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultShadowConcurrency
	}
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = DefaultMaxOutputBytes
	}
	return &Shadower{ctx: ctx, nc: nc, js: js, o: o, sem: make(chan struct{}, o.Concurrency)}
}

// Counts returns the counters. It is safe for concurrent use.
func (s *Shadower) Counts() ShadowCounts {
	return ShadowCounts{Started: s.started.Load(), Compared: s.compared.Load(), Dropped: s.dropped.Load(),
		NoInstance: s.noInstance.Load(), StoreFailed: s.storeFailed.Load(), NotCompared: s.notCompared.Load()}
}

// Wait waits for the shadow requests in flight (they end with the
// Shadower's context); Offer starts nothing once Wait was called.
func (s *Shadower) Wait() {
	s.mu.Lock()
	s.waiting = true
	s.mu.Unlock()
	s.wg.Wait()
}

// Offer runs in on the shadow version in the background. It never
// blocks.
func (s *Shadower) Offer(in ShadowInput) {
	r := in.Route
	if r.Shadow == "" || in.Stable.Header.Get(headerVersion) != r.Stable || s.ctx.Err() != nil {
		return
	}
	stableErr, notStarted := answerError(in.Stable)
	if notStarted {
		return // refused before running (overload, draining): nothing to compare
	}
	if len(in.Candidates) == 0 {
		s.noInstance.Add(1)
		return
	}
	select {
	case s.sem <- struct{}{}:
	default:
		if s.dropped.Add(1) == 1 {
			s.o.Logger.Warn().Str("algorithm", r.Algorithm).Int("concurrency", cap(s.sem)).Msg("shadow slots all busy: dropping shadow runs (counted)")
		}
		return
	}
	s.mu.Lock()
	if s.waiting {
		s.mu.Unlock()
		<-s.sem
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	s.started.Add(1)
	cmp := Comparison{Algorithm: r.Algorithm, JobID: in.JobID, Source: SourceShadow, StableVersion: r.Stable,
		CandidateVersion: r.Shadow, StableMS: ms(in.StableTook), StableError: stableErr}
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		s.run(cmp, in)
	}()
}

func (s *Shadower) run(cmp Comparison, in ShadowInput) {
	// Outputs stored by reference are compared by content, read here, off
	// the stable answer's path. One that cannot be read leaves the
	// comparison without a verdict, never with a made-up one.
	var stableOut []byte
	if cmp.StableError == "" {
		var err error
		if stableOut, err = s.output(in.Stable); err != nil {
			cmp.NotCompared = "stable output: " + err.Error()
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, in.Budget+in.Budget/10+100*time.Millisecond)
	defer cancel()
	h := nats.Header{headerTimeout: {in.Budget.String()}}
	if in.JobID != "" {
		h.Set(headerJobID, in.JobID)
	}
	msg := &nats.Msg{Subject: discovery.PinnedSubject(cmp.Algorithm, cmp.CandidateVersion), Data: in.Body, Header: h}
	start := time.Now()
	reply, err := s.nc.RequestMsgWithContext(ctx, msg)
	cmp.CandidateMS = ms(time.Since(start))
	var out []byte
	switch {
	case s.ctx.Err() != nil:
		return // stopping: no verdict
	case errors.Is(err, nats.ErrNoResponders):
		cmp.CandidateError = fmt.Sprintf("%d: no responders", codeUnavailable)
	case err != nil:
		cmp.CandidateError = fmt.Sprintf("%d: %v", codeDeadline, err)
	default:
		if e, _ := answerError(reply); e != "" {
			cmp.CandidateError = e
		} else if out, err = s.output(reply); err != nil && cmp.NotCompared == "" {
			cmp.NotCompared = "candidate output: " + err.Error()
		}
	}
	if cmp.StableError != "" || cmp.CandidateError != "" {
		cmp.NotCompared = "" // the error codes decide, outputs are not needed
	}
	if cmp.NotCompared == "" {
		cmp.Decide(stableOut, out, s.o.Compare)
	}
	cmp.At = time.Now().UTC()
	if err := s.store(cmp); err != nil {
		if s.storeFailed.Add(1) == 1 {
			s.o.Logger.Warn().Err(err).Msg("cannot store a shadow comparison (counted)")
		}
		return
	}
	if cmp.NotCompared != "" {
		if s.notCompared.Add(1) == 1 {
			s.o.Logger.Warn().Str("algorithm", cmp.Algorithm).Str("reason", cmp.NotCompared).Msg("an output of a shadow run could not be read: stored without a verdict (counted)")
		}
		return
	}
	s.compared.Add(1)
	if s.o.OnCompared != nil {
		s.o.OnCompared(cmp)
	}
}

func (s *Shadower) output(reply *nats.Msg) ([]byte, error) {
	ctx, cancel := context.WithTimeout(s.ctx, outputReadTimeout)
	defer cancel()
	return ReplyOutput(ctx, s.js, reply, s.o.MaxOutputBytes)
}

func (s *Shadower) store(cmp Comparison) error {
	b, err := json.Marshal(cmp)
	if err != nil {
		return err
	}
	// Diffs are bounded (MaxDiffs of MaxDiffValue), which fits the
	// default max payload; a server with a smaller one keeps fewer.
	for limit := s.nc.MaxPayload() - 1024; int64(len(b)) > limit && len(cmp.Diffs) > 0; {
		cmp.Diffs = cmp.Diffs[:len(cmp.Diffs)/2]
		if b, err = json.Marshal(cmp); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	_, err = s.js.Publish(ctx, CompareSubjectPrefix+cmp.Algorithm, b)
	return err
}

// answerError returns "<code>: <message>" of an error reply (empty for a
// success), and whether the runner refused it without starting.
func answerError(m *nats.Msg) (string, bool) {
	code := m.Header.Get(micro.ErrorCodeHeader)
	if code == "" {
		return "", false
	}
	if n, err := strconv.Atoi(code); err != nil || n == 0 {
		code = strconv.Itoa(codeInternal) // a micro service that is not a pnp runner
	}
	return code + ": " + m.Header.Get(micro.ErrorHeader), m.Header.Get(headerNotStarted) == "true"
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
