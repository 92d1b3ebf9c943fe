package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

// startRunnerWith runs a runner with opts until the test ends.
func startRunnerWith(t *testing.T, srv *natstest.Server, algs []*runner.Algorithm, opts ...runner.Option) {
	t.Helper()
	nc := srv.Connect(errorsTo(t, "runner"))
	r, err := runner.New(nc, algs, append([]runner.Option{runner.WithDrainTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-r.Started():
	case <-done:
		t.Fatal("runner stopped before starting")
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}
}

// TestMetricsAfterJobs runs jobs that succeed, are rejected, fail after
// their attempts, are refused without starting until they fail, run, and
// wait for a runner, with a runner and a
// controller sharing one registry as in cmd/pnp; it scrapes /metrics and
// checks each series against what happened. echo's route shadows it with
// a 2.0.0 that answers job b differently.
func TestMetricsAfterJobs(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	reg := prometheus.NewRegistry()
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "1.0.0", Shadow: "2.0.0"})
	startRunner(t, e.srv, candidate(t, "2.0.0", 5*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		switch {
		case in.N < 0:
			return echoOut{}, protocol.Reject("n must not be negative")
		case in.N == 1:
			return echoOut{N: 101}, nil
		}
		return echoOut{N: in.N}, nil
	}))
	broken := newAlgorithm(t, "broken", 5*time.Second, func(context.Context, echoIn) (echoOut, error) {
		return echoOut{}, errors.New("always fails")
	})
	startRunnerWith(t, e.srv, []*runner.Algorithm{echo(t, "echo", nil), broken}, runner.WithMetrics(reg))
	cfg := fastConfig(t)
	cfg.MaxAttempts = 2
	cfg.Metrics = reg
	cfg.History.Rate = 1
	cfg.MaxNotStarted = 2
	startController(t, e, cfg)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/metrics"
	scrape := func() metricstest.Families { return metricstest.Scrape(t, url) }

	// A job that runs for a while shows up in flight (3 s: well past the
	// queue figures' one-second cache, even on a loaded machine).
	e.submit(t, "echo", "slow", echoIn{N: 9, SleepMS: 3000})
	natstest.Eventually(t, 10*time.Second, func() bool {
		f := scrape()
		return f.Value(t, "pnp_controller_queue_in_flight", "algorithm=echo") == 1 && f.Value(t, "pnp_controller_held") == 1
	}, "the running job never showed in flight")

	for i, id := range []string{"a", "b", "c"} {
		e.submit(t, "echo", id, echoIn{N: i})
	}
	e.submit(t, "echo", "rejected", echoIn{N: -1})
	// A budget no runner can meet: failed at once.
	e.publish(t, "echo", "no-budget", []byte(`{"n":5}`), nats.Header{controller.HeaderTimeout: []string{"1ns"}})
	// A runner that refuses every delivery without starting it: handed
	// back MaxNotStarted times, then failed.
	refuser(t, e, "refusing", 503)
	e.submit(t, "refusing", "refused", echoIn{N: 1})
	e.submit(t, "broken", "broken", echoIn{N: 1})
	e.submit(t, "nobody", "w1", echoIn{N: 1})
	e.submit(t, "nobody", "w2", echoIn{N: 2})
	for _, id := range []string{"slow", "a", "b", "c", "rejected", "broken", "no-budget", "refused"} {
		e.waitResult(t, id)
	}

	var f metricstest.Families
	natstest.Eventually(t, 10*time.Second, func() bool {
		f = scrape()
		// jobs_total counts an outcome just after its ack.
		return f.Value(t, "pnp_controller_queue_in_flight", "algorithm=echo") == 0 &&
			f.Value(t, "pnp_controller_queue_dead", "algorithm=broken") == 1 &&
			f.Value(t, "pnp_controller_jobs_total", "algorithm=echo", "status=succeeded") == 4 &&
			f.Value(t, "pnp_controller_jobs_total", "algorithm=echo", "status=failed") == 2 &&
			f.Value(t, "pnp_controller_jobs_total", "algorithm=broken", "status=failed") == 1
	}, "queue figures never settled")

	for _, c := range []struct {
		alg, status string
		want        float64
	}{{"echo", "succeeded", 4}, {"echo", "failed", 2}, {"broken", "failed", 1}, {"refusing", "failed", 1}} {
		labels := []string{"algorithm=" + c.alg, "status=" + c.status}
		if got := f.Value(t, "pnp_controller_jobs_total", labels...); got != c.want {
			t.Errorf("jobs_total%v = %g, want %g", labels, got, c.want)
		}
		h := f.Histogram(t, "pnp_controller_job_duration_seconds", labels...)
		if float64(h.GetSampleCount()) != c.want {
			t.Errorf("job_duration_seconds%v count = %d, want %g", labels, h.GetSampleCount(), c.want)
		}
	}
	// The slow job took 3 s from submission to outcome.
	if h := f.Histogram(t, "pnp_controller_job_duration_seconds", "algorithm=echo", "status=succeeded"); h.GetSampleSum() < 3 {
		t.Errorf("sum of succeeded job durations = %g s, want at least the slow job's 3 s", h.GetSampleSum())
	}
	if n := len(f["pnp_controller_jobs_total"].GetMetric()); n != 4 {
		t.Errorf("jobs_total has %d series, want 4 (no retrying, no duplicate)", n)
	}
	for _, c := range []struct {
		alg, code string
		want      float64
	}{{"echo", "200", 4}, {"echo", "422", 1}, {"broken", "500", 2}} {
		if got := f.Value(t, "pnp_controller_attempts_total", "algorithm="+c.alg, "code="+c.code); got != c.want {
			t.Errorf("attempts_total{%s,%s} = %g, want %g", c.alg, c.code, got, c.want)
		}
	}
	for _, c := range []struct {
		name, alg string
		want      float64
	}{
		{"pnp_controller_queue_waiting", "nobody", 2},
		{"pnp_controller_queue_in_flight", "nobody", 0},
		{"pnp_controller_queue_waiting", "echo", 0},
		{"pnp_controller_queue_dead", "echo", 2},
		{"pnp_controller_queue_dead", "broken", 1},
		{"pnp_controller_queue_dead", "nobody", 0},
	} {
		if got := f.Value(t, c.name, "algorithm="+c.alg); got != c.want {
			t.Errorf("%s{algorithm=%s} = %g, want %g", c.name, c.alg, got, c.want)
		}
	}
	if got := f.Value(t, "pnp_controller_queue_info_up"); got != 1 {
		t.Errorf("queue_info_up = %g, want 1", got)
	}
	// The runner's series are on the same registry.
	if got := f.Value(t, "pnp_runner_requests_total", "algorithm=echo", "code=200"); got != 4 {
		t.Errorf("runner requests_total{echo,200} = %g, want 4", got)
	}
	if got := f.Value(t, "pnp_runner_requests_total", "algorithm=broken", "code=500"); got != 2 {
		t.Errorf("runner requests_total{broken,500} = %g, want 2", got)
	}
	// Shadow runs of the five echo jobs: b differs, the rejected job is
	// rejected alike. They end after the jobs, so wait for them.
	natstest.Eventually(t, 10*time.Second, func() bool {
		f = scrape()
		return f.Value(t, "pnp_controller_shadow_runs_total", "outcome=compared") == 5 &&
			f.Value(t, "pnp_controller_history_records_total", "outcome=recorded") == 4
	}, "shadow runs never all compared, or history never recorded")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pnp_controller_shadow_comparisons_total", []string{"algorithm=echo", "equal=true"}, 4},
		{"pnp_controller_shadow_comparisons_total", []string{"algorithm=echo", "equal=false"}, 1},
		{"pnp_controller_shadow_runs_total", []string{"outcome=dropped"}, 0},
		{"pnp_controller_shadow_runs_total", []string{"outcome=no_instance"}, 0},
		{"pnp_controller_route_fallback", []string{"algorithm=echo"}, 0},
		{"pnp_controller_canary_rejected_total", nil, 0},
		{"pnp_controller_handed_back_total", []string{"algorithm=refusing", "reason=not_started"}, 2},
		{"pnp_controller_history_records_total", []string{"outcome=recorded"}, 4}, // slow, a, b, c
		{"pnp_controller_history_records_total", []string{"outcome=too_large"}, 0},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	checkDocumented(t, f)
}

// checkDocumented checks that docs/METRICS.md and the Grafana dashboard
// name only pnp_ metrics this scrape has, and that the docs name all of
// them: a renamed metric breaks this test, not a dashboard in production.
func checkDocumented(t *testing.T, f metricstest.Families) {
	t.Helper()
	have := map[string]bool{}
	for name := range f {
		if strings.HasPrefix(name, "pnp_") {
			have[name] = true
		}
	}
	name := regexp.MustCompile(`pnp_[a-z_]+`)
	for _, file := range []string{"../docs/METRICS.md", "../deploy/grafana/pnpworker.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		mentioned := map[string]bool{}
		for _, m := range name.FindAllString(string(b), -1) {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if base, ok := strings.CutSuffix(m, suffix); ok && have[base] {
					m = base
				}
			}
			if strings.HasSuffix(m, "_") {
				continue // a prefix in prose, such as pnp_runner_*
			}
			if strings.HasPrefix(m, "pnp_gateway_") || strings.HasPrefix(m, "pnp_worker_") {
				continue // the gateway's and the worker's own tests check them
			}
			mentioned[m] = true
			if !have[m] {
				t.Errorf("%s names %s, which no process exports", file, m)
			}
		}
		if file == "../docs/METRICS.md" {
			for m := range have {
				if !mentioned[m] {
					t.Errorf("%s does not document %s", file, m)
				}
			}
		}
	}
}

func TestMetricsRegisteredOncePerRegistry(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	reg := prometheus.NewRegistry()
	if _, err := controller.New(e.nc, controller.Config{Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := controller.New(e.nc, controller.Config{Metrics: reg}); err == nil {
		t.Fatal("a second controller on the same registry must fail")
	}
}

// logBuffer collects JSON log lines from concurrent writers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestTraceParentReachesRunnerLogs submits a job with a W3C traceparent
// header and checks that the runner's log lines about it, the algorithm's
// own included, carry its trace id, and that those of a job without one
// carry none.
func TestTraceParentReachesRunnerLogs(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var runnerLog logBuffer
	alg := newAlgorithm(t, "traced", 5*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		zerolog.Ctx(ctx).Info().Int("n", in.N).Msg("working")
		if in.N < 0 {
			return echoOut{}, protocol.Reject("negative")
		}
		return echoOut{N: in.N}, nil
	})
	startRunnerWith(t, e.srv, []*runner.Algorithm{alg}, runner.WithLogger(zerolog.New(&runnerLog).Level(zerolog.DebugLevel)))
	startController(t, e, fastConfig(t))

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	tp := "00-" + traceID + "-b7ad6b7169203331-01"
	submit := func(id string, n int, h nats.Header) {
		b, _ := json.Marshal(echoIn{N: n})
		if _, err := e.store.Submit(context.Background(), "traced", b, controller.SubmitOptions{ID: id, Header: h}); err != nil {
			t.Fatal(err)
		}
		e.waitResult(t, id)
	}
	submit("with-trace", 1, nats.Header{"traceparent": {tp}, "tracestate": {"vendor=1"}})
	submit("rejected-with-trace", -1, nats.Header{"Traceparent": {tp}})
	submit("without-trace", 2, nil)

	about := map[string]int{}
	for _, l := range runnerLog.lines(t) {
		id, _ := l["job_id"].(string)
		if id == "" {
			continue
		}
		about[id]++
		switch got, _ := l["trace_id"].(string); {
		case id == "without-trace" && got != "":
			t.Errorf("a job without traceparent got trace id %q: %v", got, l)
		case id != "without-trace" && got != traceID:
			t.Errorf("log line about %s has trace id %q, want %q: %v", id, got, traceID, l)
		}
	}
	for _, id := range []string{"with-trace", "rejected-with-trace", "without-trace"} {
		if about[id] == 0 {
			t.Errorf("no runner log line about job %s", id)
		}
	}
	// The rejected job's runner lines: the algorithm's and "request failed".
	if about["rejected-with-trace"] < 2 {
		t.Errorf("want the algorithm's line and the failure line about the rejected job, got %d", about["rejected-with-trace"])
	}
}

// TestDurationBucketsAreTheRunners holds the job latency histogram to the
// runner's request buckets, so both read against the same bounds.
func TestDurationBucketsAreTheRunners(t *testing.T) {
	if got := controller.DurationBuckets(); !slices.Equal(got, runner.DurationBuckets) {
		t.Fatalf("job duration buckets %v, want the runner's %v", got, runner.DurationBuckets)
	}
}
