// Package bench measures the runner library against a hand-written NATS
// responder doing the same work, in one process and one run, so that the
// ratio between the two means something even on a small, noisy machine.
//
// Both responders serve the same trivial algorithm (WordCount) behind the
// same JSON Schemas, on the same subject, and are driven by the same load
// generator (Generate): a closed loop of InFlight requesters on their own
// NATS connection. Rounds alternate handwritten, runner, handwritten,
// runner, ... so that drift of the machine affects both alike, and the
// report compares the medians across rounds.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/embedded"
)

// Targets the runner is held to, as ratios to the hand-written responder.
const (
	// TargetThroughputRatio is the lowest acceptable runner/handwritten
	// ratio of median requests per second.
	TargetThroughputRatio = 0.9
	// TargetP50Ratio is the highest acceptable runner/handwritten ratio of
	// median p50 latencies.
	TargetP50Ratio = 1.15
	// TargetMetricsRatio is the lowest acceptable ratio of median requests
	// per second of the runner with Prometheus metrics to the runner
	// without (Config.Metrics): metrics may cost at most 3 %.
	TargetMetricsRatio = 0.97
	// TargetEchoRatio is the lowest acceptable ratio of median requests
	// per second of the runner to the raw nats.go echo (Config.Echo),
	// the floor of any responder.
	TargetEchoRatio = 0.65
)

// DefaultRounds is Config.Rounds' default.
const DefaultRounds = 5

// DefaultWarmup is the most warm-up requests sent before each measured
// round when Config.Warmup is zero.
const DefaultWarmup = 2000

// Config configures Run. The zero value is a complete benchmark on an
// embedded server: DefaultRounds rounds of DefaultRequests requests per
// responder, DefaultInFlight in flight.
type Config struct {
	// URL is the NATS server to use; it needs JetStream, since the runner
	// registers in discovery. Empty: an embedded server is started on
	// 127.0.0.1 (free port, store in a temporary directory removed
	// afterwards).
	URL string
	// NATSOptions are added to every connection Run opens, e.g. credentials.
	NATSOptions []nats.Option
	// Requests is how many measured requests each responder gets per round.
	// Default DefaultRequests.
	Requests int
	// Rounds is how many rounds each responder runs. Default DefaultRounds.
	Rounds int
	// InFlight is how many requests are outstanding at once. Default
	// DefaultInFlight.
	InFlight int
	// Warmup is how many unmeasured requests precede each measured round.
	// Default min(Requests, DefaultWarmup); negative means none.
	Warmup int
	// Timeout bounds each request. Default DefaultRequestTimeout.
	Timeout time.Duration
	// Concurrency is how many requests each responder works on at once: the
	// runner's Spec.MaxConcurrency and the hand-written responder's number
	// of worker goroutines. Default: the runner's default,
	// max(4, 2×GOMAXPROCS).
	Concurrency int
	// SkipOutputCheck turns off validating each reply against the output
	// schema, on both sides (runner.WithoutOutputValidation). Default: both
	// validate outputs, as the runner does unless told otherwise.
	SkipOutputCheck bool
	// Log receives progress (info) and problems. The zero value logs
	// nothing.
	Log zerolog.Logger
	// RunnerLog is given to the runner library. The zero value logs
	// nothing.
	RunnerLog zerolog.Logger
	// Metrics adds a third responder to every round: the runner with
	// Prometheus metrics on (runner.WithMetrics, a fresh registry per
	// round), so that their cost is measured against the runner without,
	// in the same run. Default false: two responders.
	Metrics bool
	// Echo adds the raw nats.go echo (a queue subscription whose callback
	// answers each request with its own body: no decoding, validation,
	// deadline or headers) to every round, last, so that the runner is
	// also measured against the floor of any responder. Default false.
	Echo bool
}

func (c *Config) setDefaults() {
	if c.Requests == 0 {
		c.Requests = DefaultRequests
	}
	if c.Rounds == 0 {
		c.Rounds = DefaultRounds
	}
	if c.InFlight == 0 {
		c.InFlight = DefaultInFlight
	}
	if c.Warmup == 0 {
		c.Warmup = min(c.Requests, DefaultWarmup)
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultRequestTimeout
	}
	if c.Concurrency == 0 {
		c.Concurrency = max(4, 2*runtime.GOMAXPROCS(0))
	}
}

// Validate reports every problem with c (before defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Requests < 0 {
		errs = append(errs, fmt.Errorf("requests %d is negative", c.Requests))
	}
	if c.Rounds < 0 {
		errs = append(errs, fmt.Errorf("rounds %d is negative", c.Rounds))
	}
	if c.InFlight < 0 {
		errs = append(errs, fmt.Errorf("in flight %d is negative", c.InFlight))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %s is negative", c.Timeout))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency %d is negative", c.Concurrency))
	}
	return errors.Join(errs...)
}

// Setup records the conditions of a run, so a report can be reproduced.
type Setup struct {
	Server       string `json:"server"`
	Requests     int    `json:"requests_per_round"`
	Rounds       int    `json:"rounds"`
	InFlight     int    `json:"in_flight"`
	Warmup       int    `json:"warmup_per_round"`
	Concurrency  int    `json:"concurrency"`
	OutputCheck  bool   `json:"output_check"`
	GOMAXPROCS   int    `json:"gomaxprocs"`
	NumCPU       int    `json:"num_cpu"`
	GoVersion    string `json:"go_version"`
	GOOS         string `json:"goos"`
	GOARCH       string `json:"goarch"`
	Subject      string `json:"subject"`
	PayloadBytes [2]int `json:"payload_bytes_min_max"`
	Metrics      bool   `json:"metrics,omitempty"`
	Echo         bool   `json:"echo,omitempty"`
}

// Round is one measured round of one responder.
type Round struct {
	Round     int    `json:"round"`
	Responder string `json:"responder"`
	Result
}

// Summary is the median, across rounds, of each measure of one responder.
type Summary struct {
	PerSecond     float64       `json:"req_per_s"`
	P50           time.Duration `json:"p50_ns"`
	P99           time.Duration `json:"p99_ns"`
	CPUPerRequest time.Duration `json:"cpu_per_request_ns"`
	Errors        int           `json:"errors"`
}

// Report is the outcome of Run.
type Report struct {
	Setup       Setup   `json:"setup"`
	Rounds      []Round `json:"rounds"`
	Handwritten Summary `json:"handwritten"`
	Runner      Summary `json:"runner"`
	// ThroughputRatio is Runner.PerSecond / Handwritten.PerSecond.
	ThroughputRatio float64 `json:"throughput_ratio"`
	// P50Ratio and P99Ratio are Runner / Handwritten latencies.
	P50Ratio float64 `json:"p50_ratio"`
	P99Ratio float64 `json:"p99_ratio"`
	// CPURatio is Runner / Handwritten CPU per request (whole process).
	CPURatio float64 `json:"cpu_ratio,omitempty"`
	// RunnerMetrics is the runner with Prometheus metrics, when
	// Config.Metrics asked for it.
	RunnerMetrics *Summary `json:"runner_metrics,omitempty"`
	// MetricsThroughputRatio and MetricsP50Ratio compare RunnerMetrics to
	// Runner (with / without metrics).
	MetricsThroughputRatio float64 `json:"metrics_throughput_ratio,omitempty"`
	MetricsP50Ratio        float64 `json:"metrics_p50_ratio,omitempty"`
	// MetricsPairedRatio is the median, over rounds, of each round's
	// with/without ratio of requests per second: the two ran back to back,
	// so drift of a shared machine cancels better than in the ratio of
	// medians.
	MetricsPairedRatio float64 `json:"metrics_paired_ratio,omitempty"`
	// Echo is the raw nats.go echo, when Config.Echo asked for it.
	Echo *Summary `json:"echo,omitempty"`
	// EchoThroughputRatio, EchoP50Ratio and EchoCPURatio compare Runner
	// to Echo (runner / echo).
	EchoThroughputRatio float64 `json:"echo_throughput_ratio,omitempty"`
	EchoP50Ratio        float64 `json:"echo_p50_ratio,omitempty"`
	EchoCPURatio        float64 `json:"echo_cpu_ratio,omitempty"`
	// MeetsTargets reports whether both ratios are within
	// TargetThroughputRatio and TargetP50Ratio, with metrics measured
	// MetricsThroughputRatio within TargetMetricsRatio, and with the
	// echo measured EchoThroughputRatio within TargetEchoRatio.
	MeetsTargets bool `json:"meets_targets"`
}

// Run starts (or connects to) a NATS server and measures both responders
// in alternating rounds, logging each round as it ends. It returns the
// report of every round completed, and an error when the configuration is
// invalid, set-up fails, ctx ends early or any request failed.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	cfg.setDefaults()
	log := cfg.Log

	url := cfg.URL
	server := url
	if url == "" {
		dir, err := os.MkdirTemp("", "pnp-bench-")
		if err != nil {
			return Report{}, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(dir)
		srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir, ServerName: "pnp-bench"})
		if err != nil {
			return Report{}, fmt.Errorf("bench: %w", err)
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		url = srv.ClientURL()
		server = "embedded " + url
	}
	// The responders and the load generator each get their own connection,
	// as they would in separate processes: one connection's read loop
	// serialises everything that arrives on it.
	connect := func(name string) (*nats.Conn, error) {
		opts := append([]nats.Option{nats.Name(name), nats.Timeout(5 * time.Second)}, cfg.NATSOptions...)
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			return nil, fmt.Errorf("bench: connect %s: %w", url, err)
		}
		return nc, nil
	}
	serveNC, err := connect("pnp bench responder")
	if err != nil {
		return Report{}, err
	}
	defer serveNC.Close()
	loadNC, err := connect("pnp bench load")
	if err != nil {
		return Report{}, err
	}
	defer loadNC.Close()

	alg, err := NewAlgorithm(cfg.Concurrency)
	if err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	hw, err := newHandwritten(cfg.Concurrency, !cfg.SkipOutputCheck)
	if err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	responders := []responder{
		{name: Handwritten, start: hw.start},
		runnerResponder(alg, !cfg.SkipOutputCheck, cfg.RunnerLog, false),
	}
	if cfg.Metrics {
		responders = append(responders, runnerResponder(alg, !cfg.SkipOutputCheck, cfg.RunnerLog, true))
	}
	if cfg.Echo {
		responders = append(responders, echoResponder())
	}

	payloads := Payloads()
	rep := Report{Setup: Setup{
		Server:       server,
		Requests:     cfg.Requests,
		Rounds:       cfg.Rounds,
		InFlight:     cfg.InFlight,
		Warmup:       cfg.Warmup,
		Concurrency:  cfg.Concurrency,
		OutputCheck:  !cfg.SkipOutputCheck,
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		NumCPU:       runtime.NumCPU(),
		GoVersion:    runtime.Version(),
		GOOS:         runtime.GOOS,
		GOARCH:       runtime.GOARCH,
		Subject:      alg.Subject(),
		PayloadBytes: [2]int{len(slices.MinFunc(payloads, byLen)), len(slices.MaxFunc(payloads, byLen))},
		Metrics:      cfg.Metrics,
		Echo:         cfg.Echo,
	}}
	load := LoadConfig{Requests: cfg.Requests, InFlight: cfg.InFlight, Timeout: cfg.Timeout}
	warm := LoadConfig{Requests: cfg.Warmup, InFlight: cfg.InFlight, Timeout: cfg.Timeout}
	var failed int
	for round := 1; round <= cfg.Rounds; round++ {
		order := responders
		if cfg.Metrics && round%2 == 0 {
			// The two runners swap places every other round, so that
			// neither always follows the other.
			order = slices.Clone(responders)
			order[1], order[2] = order[2], order[1]
		}
		for _, r := range order {
			res, err := measure(ctx, r, serveNC, loadNC, alg.Subject(), payloads, warm, load)
			if err != nil {
				rep.summarise()
				return rep, fmt.Errorf("bench: round %d, %s: %w", round, r.name, err)
			}
			rep.Rounds = append(rep.Rounds, Round{Round: round, Responder: r.name, Result: res})
			failed += res.Errors
			ev := log.Info()
			if res.Errors > 0 {
				ev = log.Warn().Int("errors", res.Errors).Str("first_error", res.FirstError)
			}
			ev.Int("round", round).Str("responder", r.name).
				Float64("req_per_s", round1(res.PerSecond)).
				Dur("p50", res.P50).Dur("p99", res.P99).
				Msg("round done")
		}
	}
	rep.summarise()
	if failed > 0 {
		return rep, fmt.Errorf("bench: %d requests failed", failed)
	}
	return rep, nil
}

// measure starts r, warms it up, measures one round and stops it.
func measure(ctx context.Context, r responder, serveNC, loadNC *nats.Conn, subject string, payloads [][]byte, warm, load LoadConfig) (res Result, err error) {
	stop, err := r.start(ctx, serveNC)
	if err != nil {
		return Result{}, fmt.Errorf("start: %w", err)
	}
	defer func() {
		if serr := stop(); serr != nil && err == nil {
			err = fmt.Errorf("stop: %w", serr)
		}
	}()
	if warm.Requests > 0 {
		w, err := Generate(ctx, loadNC, subject, payloads, warm)
		if err != nil {
			return Result{}, fmt.Errorf("warm-up: %w", err)
		}
		if w.Errors > 0 {
			return Result{}, fmt.Errorf("warm-up: %d of %d requests failed, first: %s", w.Errors, w.Requests, w.FirstError)
		}
	}
	return Generate(ctx, loadNC, subject, payloads, load)
}

func (rep *Report) summarise() {
	rep.Handwritten = summary(rep.Rounds, Handwritten)
	rep.Runner = summary(rep.Rounds, Runner)
	h, r := rep.Handwritten, rep.Runner
	rep.ThroughputRatio = ratio(r.PerSecond, h.PerSecond)
	rep.P50Ratio = ratio(float64(r.P50), float64(h.P50))
	rep.P99Ratio = ratio(float64(r.P99), float64(h.P99))
	rep.CPURatio = ratio(float64(r.CPUPerRequest), float64(h.CPUPerRequest))
	rep.MeetsTargets = rep.ThroughputRatio >= TargetThroughputRatio && rep.P50Ratio > 0 && rep.P50Ratio <= TargetP50Ratio
	if rep.Setup.Metrics {
		m := summary(rep.Rounds, RunnerMetrics)
		rep.RunnerMetrics = &m
		rep.MetricsThroughputRatio = ratio(m.PerSecond, r.PerSecond)
		rep.MetricsP50Ratio = ratio(float64(m.P50), float64(r.P50))
		rep.MetricsPairedRatio = pairedRatio(rep.Rounds, RunnerMetrics, Runner)
		rep.MeetsTargets = rep.MeetsTargets && rep.MetricsThroughputRatio >= TargetMetricsRatio
	}
	if rep.Setup.Echo {
		e := summary(rep.Rounds, Echo)
		rep.Echo = &e
		rep.EchoThroughputRatio = ratio(r.PerSecond, e.PerSecond)
		rep.EchoP50Ratio = ratio(float64(r.P50), float64(e.P50))
		rep.EchoCPURatio = ratio(float64(r.CPUPerRequest), float64(e.CPUPerRequest))
		rep.MeetsTargets = rep.MeetsTargets && rep.EchoThroughputRatio >= TargetEchoRatio
	}
}

func summary(rounds []Round, name string) Summary {
	var s Summary
	var rps, p50, p99, cpu []float64
	for _, r := range rounds {
		if r.Responder != name {
			continue
		}
		rps = append(rps, r.PerSecond)
		p50 = append(p50, float64(r.P50))
		p99 = append(p99, float64(r.P99))
		cpu = append(cpu, float64(r.CPUPerRequest))
		s.Errors += r.Errors
	}
	s.PerSecond = median(rps)
	s.P50 = time.Duration(median(p50))
	s.P99 = time.Duration(median(p99))
	s.CPUPerRequest = time.Duration(median(cpu))
	return s
}

// pairedRatio is the median over rounds of a's requests per second over
// b's in the same round.
func pairedRatio(rounds []Round, a, b string) float64 {
	per := map[int][2]float64{}
	for _, r := range rounds {
		p := per[r.Round]
		switch r.Responder {
		case a:
			p[0] = r.PerSecond
		case b:
			p[1] = r.PerSecond
		}
		per[r.Round] = p
	}
	var xs []float64
	for _, p := range per {
		if p[0] > 0 && p[1] > 0 {
			xs = append(xs, p[0]/p[1])
		}
	}
	return median(xs)
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

func byLen(a, b []byte) int { return len(a) - len(b) }
