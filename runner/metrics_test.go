package runner_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// serveMetrics serves reg on an HTTP test server and returns its /metrics URL.
func serveMetrics(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

// TestMetricsAfterTraffic sends successes, each kind of error and an
// overload refusal, then scrapes /metrics and checks every counter, gauge
// and histogram against what was sent.
func TestMetricsAfterTraffic(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := prometheus.NewRegistry()
	start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = 1; s.MaxPending = 1 })}, runner.WithMetrics(reg))
	url := serveMetrics(t, reg)

	for range 3 {
		request(t, nc, `{"text":"a b c"}`, nil)
	}
	request(t, nc, `{"text":1}`, nil)                       // 400
	request(t, nc, `{"text":"x","mode":"reject"}`, nil)     // 422
	request(t, nc, `{"text":"x","mode":"bad_output"}`, nil) // 500

	// One slow request runs, one waits; the next is refused.
	slow := make(chan *nats.Msg, 2)
	send := func() {
		go func() {
			m, _ := nc.Request("run.word_count", []byte(`{"text":"slow","sleep_ms":1500}`), 15*time.Second)
			slow <- m
		}()
	}
	send()
	natstest.Eventually(t, 5*time.Second, func() bool {
		return metricstest.Scrape(t, url).Value(t, "pnp_runner_in_flight", "algorithm=word_count") == 1
	}, "in_flight never reached 1")
	send()
	natstest.Eventually(t, 5*time.Second, func() bool {
		return metricstest.Scrape(t, url).Value(t, "pnp_runner_waiting", "algorithm=word_count") == 1
	}, "waiting never reached 1")
	if m := request(t, nc, `{"text":"refused"}`, nil); m.Header.Get(protocol.HeaderErrorCode) != "503" {
		t.Fatalf("want a 503 refusal, got %v", m.Header)
	}
	for range 2 {
		if m := <-slow; m == nil || protocol.ReplyError(m) != nil {
			t.Fatalf("slow request: %v", m)
		}
	}

	// A reply is counted just after it is sent: wait for the last one.
	alg := "algorithm=word_count"
	natstest.Eventually(t, 5*time.Second, func() bool {
		f := metricstest.Scrape(t, url)
		return f.Value(t, "pnp_runner_requests_total", alg, "code=200") == 5 && f.Value(t, "pnp_runner_in_flight", alg) == 0
	}, "the slow requests are not counted")
	f := metricstest.Scrape(t, url)
	wantCounts := map[string]float64{"200": 5, "400": 1, "422": 1, "500": 1, "503": 1}
	for code, want := range wantCounts {
		if got := f.Value(t, "pnp_runner_requests_total", alg, "code="+code); got != want {
			t.Errorf("requests_total{code=%s} = %g, want %g", code, got, want)
		}
		h := f.Histogram(t, "pnp_runner_request_duration_seconds", alg, "code="+code)
		if float64(h.GetSampleCount()) != want {
			t.Errorf("request_duration_seconds{code=%s} count = %d, want %g", code, h.GetSampleCount(), want)
		}
	}
	if n := len(f["pnp_runner_requests_total"].GetMetric()); n != len(wantCounts) {
		t.Errorf("requests_total has %d series, want %d", n, len(wantCounts))
	}
	// The slow requests ran 1.5 s each (the second also queued behind
	// the first): the 200s' sum shows at least their 3 s of running, and
	// they sit above the 0.5 s bucket.
	h := f.Histogram(t, "pnp_runner_request_duration_seconds", alg, "code=200")
	if h.GetSampleSum() < 3 {
		t.Errorf("sum of 200 latencies = %g s, want at least the slow requests' 3 s", h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 0.5 && b.GetCumulativeCount() != 3 {
			t.Errorf("bucket le=0.5 holds %d, want the 3 fast requests", b.GetCumulativeCount())
		}
	}
	for name, want := range map[string]float64{
		"pnp_runner_overload_refusals_total": 1,
		"pnp_runner_in_flight":               0,
		"pnp_runner_waiting":                 0,
		"pnp_runner_max_concurrency":         1,
	} {
		if got := f.Value(t, name, alg); got != want {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
	if got := f.Value(t, "pnp_runner_busy_seconds_total", alg); got < 2.9 {
		t.Errorf("busy_seconds_total = %g, want at least the slow requests' 3 s", got)
	}
}

func TestMetricsRegisteredOncePerRegistry(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := prometheus.NewRegistry()
	if _, err := runner.New(nc, []*runner.Algorithm{wordCount(t, nil)}, runner.WithMetrics(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := runner.New(nc, []*runner.Algorithm{wordCount(t, nil)}, runner.WithMetrics(reg)); err == nil {
		t.Fatal("a second runner on the same registry must fail, not mix its series with the first one's")
	}
}

// syncBuffer is a log sink safe for the runner's concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestTraceIDOnEveryRequestLogLine checks that the trace id of a request's
// traceparent is on every log line about it: the algorithm's own (through
// zerolog.Ctx) and the runner's, on success and on failure; and that a
// request without one gets none.
func TestTraceIDOnEveryRequestLogLine(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	var buf syncBuffer
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "word_count", Version: "1.0.0", InputSchema: []byte(textSchema), OutputSchema: []byte(outSchema),
	}, func(ctx context.Context, in in) (out, error) {
		zerolog.Ctx(ctx).Info().Str("text", in.Text).Msg("counting")
		if in.Mode == "reject" {
			return out{}, runner.Reject("no")
		}
		return out{Words: 1}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(nc, []*runner.Algorithm{a}, runner.WithLogger(zerolog.New(&buf).Level(zerolog.DebugLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Started()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tp := "00-" + traceID + "-00f067aa0ba902b7-01"
	request(t, nc, `{"text":"traced-ok"}`, nats.Header{protocol.HeaderTraceParent: {tp}, protocol.HeaderJobID: {"job-1"}})
	request(t, nc, `{"text":"traced-reject","mode":"reject"}`, nats.Header{protocol.HeaderTraceParent: {tp}})
	request(t, nc, `{"text":"untraced"}`, nats.Header{protocol.HeaderJobID: {"job-2"}})
	request(t, nc, `{"text":"badly-traced"}`, nats.Header{protocol.HeaderTraceParent: {"00-zz"}})

	lines := buf.lines(t)
	seen := map[string]int{}
	for _, l := range lines {
		text, _ := l["text"].(string)
		msg, _ := l["message"].(string)
		switch {
		case strings.HasPrefix(text, "traced"):
			seen[text]++
		case msg == "request failed" && l["code"] == float64(422):
			seen["failure line"]++
		case text == "":
			continue
		default:
			if _, ok := l["trace_id"]; ok {
				t.Errorf("a request without a valid traceparent got a trace id: %v", l)
			}
			seen[text]++
			continue
		}
		if l["trace_id"] != traceID {
			t.Errorf("log line about a traced request without its trace id: %v", l)
		}
	}
	for _, k := range []string{"traced-ok", "traced-reject", "failure line", "untraced", "badly-traced"} {
		if seen[k] == 0 {
			t.Errorf("no log line %q in:\n%v", k, lines)
		}
	}
}

// TestSharedMetricsSumAndOutliveRunners: runners sharing one Metrics (as a
// process's worker runners do, made anew at each worker restart) report
// one series per algorithm, summed over them; a runner that stops leaves
// its counts, so counters never go down, and only its gauges go.
func TestSharedMetricsSumAndOutliveRunners(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := prometheus.NewRegistry()
	m, err := runner.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runner.NewMetrics(reg); err == nil {
		t.Error("a second Metrics on one registry must fail")
	}
	if _, err := runner.New(nc, []*runner.Algorithm{wordCount(t, nil)}, runner.WithMetrics(prometheus.NewRegistry()), runner.WithSharedMetrics(m)); err == nil {
		t.Error("WithMetrics and WithSharedMetrics together must fail")
	}
	url := serveMetrics(t, reg)
	conc := func(s *runner.Spec) { s.MaxConcurrency = 2 }
	_, stopA := start(t, nc, []*runner.Algorithm{wordCount(t, conc)}, runner.WithSharedMetrics(m))
	start(t, nc, []*runner.Algorithm{wordCount(t, conc)}, runner.WithSharedMetrics(m))
	alg := "algorithm=word_count"
	value := func(name string, labels ...string) float64 {
		return metricstest.Scrape(t, url).Value(t, name, append([]string{alg}, labels...)...)
	}
	if got := value("pnp_runner_max_concurrency"); got != 4 {
		t.Fatalf("max_concurrency = %g, want 4 (two runners of 2)", got)
	}
	for range 10 {
		request(t, nc, `{"text":"a b"}`, nil)
	}
	request(t, nc, `{"text":1}`, nil)
	// A reply is counted just after it is sent.
	natstest.Eventually(t, 5*time.Second, func() bool {
		return value("pnp_runner_requests_total", "code=200") == 10 && value("pnp_runner_requests_total", "code=400") == 1
	}, "requests_total{200} is not 10")
	stopA()
	natstest.Eventually(t, 10*time.Second, func() bool { return value("pnp_runner_max_concurrency") == 2 }, "the stopped runner's capacity is still counted")
	if got := value("pnp_runner_requests_total", "code=200"); got != 10 {
		t.Errorf("requests_total{200} = %g after a runner stopped, want still 10", got)
	}
	if got := value("pnp_runner_requests_total", "code=400"); got != 1 {
		t.Errorf("requests_total{400} = %g after a runner stopped, want still 1", got)
	}
	for range 5 {
		request(t, nc, `{"text":"a b"}`, nil)
	}
	start(t, nc, []*runner.Algorithm{wordCount(t, conc)}, runner.WithSharedMetrics(m))
	natstest.Eventually(t, 5*time.Second, func() bool { return value("pnp_runner_requests_total", "code=200") == 15 }, "requests_total{200} is not 15")
	if got := value("pnp_runner_max_concurrency"); got != 4 {
		t.Errorf("max_concurrency = %g with a new runner, want 4", got)
	}
	f := metricstest.Scrape(t, url)
	if h := f.Histogram(t, "pnp_runner_request_duration_seconds", alg, "code=200"); h.GetSampleCount() != 15 {
		t.Errorf("request_duration_seconds{200} count = %d, want 15", h.GetSampleCount())
	}
}
