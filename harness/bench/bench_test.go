package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// testResponders returns both responders, as Run builds them.
func testResponders(t testing.TB, checkOutput bool) []responder {
	t.Helper()
	alg, err := NewAlgorithm(0)
	if err != nil {
		t.Fatal(err)
	}
	hw, err := newHandwritten(alg.Spec().MaxConcurrency, checkOutput)
	if err != nil {
		t.Fatal(err)
	}
	return []responder{
		{name: Handwritten, start: hw.start},
		runnerResponder(alg, checkOutput, zerolog.Nop(), false),
	}
}

// startResponder starts r on nc and stops it at cleanup.
func startResponder(t testing.TB, r responder, nc *nats.Conn) {
	t.Helper()
	stop, err := r.start(context.Background(), nc)
	if err != nil {
		t.Fatalf("start %s: %v", r.name, err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop %s: %v", r.name, err)
		}
	})
}

// BenchmarkResponders measures each responder with DefaultInFlight requests
// in flight on a fresh embedded server: b.N requests per run. Compare the
// req/s and p50-µs metrics of the two sub-benchmarks.
func BenchmarkResponders(b *testing.B) {
	srv := natstest.Start(b)
	serveNC, loadNC := srv.Connect(), srv.Connect()
	subject := protocol.SubjectPrefix + AlgorithmName
	payloads := Payloads()
	for _, r := range testResponders(b, true) {
		b.Run(r.name, func(b *testing.B) {
			startResponder(b, r, serveNC)
			ctx := b.Context()
			if _, err := Generate(ctx, loadNC, subject, payloads, LoadConfig{Requests: 1000}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			res, err := Generate(ctx, loadNC, subject, payloads, LoadConfig{Requests: b.N})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if res.Errors > 0 {
				b.Fatalf("%d requests failed, first: %s", res.Errors, res.FirstError)
			}
			b.ReportMetric(res.PerSecond, "req/s")
			b.ReportMetric(float64(res.P50)/1e3, "p50-µs")
			b.ReportMetric(float64(res.P99)/1e3, "p99-µs")
		})
	}
}

// TestRespondersAgree checks that the comparison is fair: both responders
// give the same answer to every payload and reject the same bad input in
// the same way.
func TestRespondersAgree(t *testing.T) {
	srv := natstest.Start(t)
	loadNC := srv.Connect()
	subject := protocol.SubjectPrefix + AlgorithmName
	bad := []struct {
		name string
		body string
	}{
		{"not json", `{"text":`},
		{"wrong type", `{"text": 42}`},
		{"missing text", `{}`},
		{"extra field", `{"text": "a b", "lang": "en"}`},
		{"empty text", `{"text": ""}`},
	}
	for _, r := range testResponders(t, true) {
		t.Run(r.name, func(t *testing.T) {
			startResponder(t, r, srv.Connect())
			for i, p := range Payloads() {
				msg, err := loadNC.Request(subject, p, 5*time.Second)
				if err != nil {
					t.Fatalf("payload %d: %v", i, err)
				}
				if rerr := protocol.ReplyError(msg); rerr != nil {
					t.Fatalf("payload %d: error reply %v", i, rerr)
				}
				var in Input
				var out Output
				if err := json.Unmarshal(p, &in); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(msg.Data, &out); err != nil {
					t.Fatalf("payload %d: reply %q: %v", i, msg.Data, err)
				}
				if want := len(strings.Fields(in.Text)); out.Words != want {
					t.Errorf("payload %d: words = %d, want %d", i, out.Words, want)
				}
			}
			for _, tc := range bad {
				t.Run(tc.name, func(t *testing.T) {
					msg, err := loadNC.Request(subject, []byte(tc.body), 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					rerr := protocol.ReplyError(msg)
					if !errors.Is(rerr, protocol.ErrInvalidInput) {
						t.Errorf("reply error = %v, want a 400", rerr)
					}
				})
			}
		})
	}
}

// TestRun runs a tiny benchmark end to end and checks that the report adds
// up. It never looks at how fast anything was.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const requests = 200
	rep, err := Run(ctx, Config{Requests: requests, Rounds: 1, Warmup: 50})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(rep.Rounds); got != 2 {
		t.Fatalf("%d rounds reported, want 2", got)
	}
	for i, want := range []string{Handwritten, Runner} {
		rd := rep.Rounds[i]
		if rd.Responder != want || rd.Round != 1 {
			t.Errorf("round %d: %s #%d, want %s #1", i, rd.Responder, rd.Round, want)
		}
		if rd.Requests != requests || rd.OK != requests || rd.Errors != 0 {
			t.Errorf("%s: requests %d, ok %d, errors %d (%s), want %d ok", rd.Responder, rd.Requests, rd.OK, rd.Errors, rd.FirstError, requests)
		}
		if rd.PerSecond <= 0 || rd.P50 <= 0 || rd.P50 > rd.P99 || rd.P99 > rd.Max {
			t.Errorf("%s: implausible measures: %.0f req/s, p50 %s, p99 %s, max %s", rd.Responder, rd.PerSecond, rd.P50, rd.P99, rd.Max)
		}
	}
	s := rep.Setup
	if s.Requests != requests || s.Rounds != 1 || s.InFlight != DefaultInFlight || s.Warmup != 50 || s.Concurrency < 4 || !s.OutputCheck {
		t.Errorf("setup = %+v", s)
	}
	if rep.Handwritten.PerSecond != rep.Rounds[0].PerSecond || rep.Runner.P50 != rep.Rounds[1].P50 {
		t.Errorf("the median of one round is not that round: %+v", rep)
	}
	if rep.ThroughputRatio <= 0 || rep.P50Ratio <= 0 {
		t.Errorf("ratios %.3f, %.3f, want positive", rep.ThroughputRatio, rep.P50Ratio)
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"handwritten", "runner", "req/s", "p50", "runner/handwritten"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v", err)
	}
	if len(back.Rounds) != 2 || back.ThroughputRatio != rep.ThroughputRatio {
		t.Errorf("JSON report lost data: %s", js.String())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"negative warmup means none", Config{Warmup: -1}, true},
		{"negative requests", Config{Requests: -1}, false},
		{"negative rounds", Config{Rounds: -1}, false},
		{"negative in flight", Config{InFlight: -1}, false},
		{"negative timeout", Config{Timeout: -time.Second}, false},
		{"negative concurrency", Config{Concurrency: -2}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestPercentileAndMedian(t *testing.T) {
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if got := percentile(ds, 0.5); got != 5 {
		t.Errorf("p50 = %d, want 5", got)
	}
	if got := percentile(ds, 0.99); got != 10 {
		t.Errorf("p99 = %d, want 10", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of none = %d, want 0", got)
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

// BenchmarkSchemaWork isolates what the per-request work of both responders
// (decode and validate the input, decode and validate an output) costs on a
// goroutine that already exists and on a fresh goroutine per request, whose
// stack has to grow while it runs.
func BenchmarkSchemaWork(b *testing.B) {
	hw, err := newHandwritten(1, true)
	if err != nil {
		b.Fatal(err)
	}
	body, out := Payloads()[8], []byte(`{"words":27}`)
	work := func() {
		for _, c := range []struct {
			data []byte
			s    *jsonschema.Schema
		}{{body, hw.input}, {out, hw.output}} {
			v, err := schemas.DecodeJSON(c.data)
			if err == nil {
				err = c.s.Validate(v)
			}
			if err != nil {
				b.Error(err)
			}
		}
	}
	b.Run("same-goroutine", func(b *testing.B) {
		for b.Loop() {
			work()
		}
	})
	b.Run("goroutine-per-request", func(b *testing.B) {
		done := make(chan struct{})
		for b.Loop() {
			go func() { work(); done <- struct{}{} }()
			<-done
		}
	})
	// What the runner does instead: the input and the output checked
	// from their bytes (schemas.Quick), the input decoded once, into
	// the typed value; the hand-written responder's way for comparison.
	quickIn, quickOut := quickOf(b, InputSchema), quickOf(b, OutputSchema)
	b.Run("typed-input/decode-validate-unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			work()
			var in Input
			if err := json.Unmarshal(body, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("typed-input/quick-unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if quickIn.Check(body) != schemas.Valid || quickOut.Check(out) != schemas.Valid {
				b.Fatal("not valid")
			}
			var in Input
			if err := json.Unmarshal(body, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("empty-goroutine-per-request", func(b *testing.B) {
		done := make(chan struct{})
		for b.Loop() {
			go func() { done <- struct{}{} }()
			<-done
		}
	})
}

// runRounds runs cfg for two rounds of 200 requests (50 warm-up) and
// returns the report and the responders in the order they ran, failing
// the test when a round did not answer every request.
func runRounds(t *testing.T, cfg Config) (Report, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const requests = 200
	cfg.Requests, cfg.Rounds, cfg.Warmup = requests, 2, 50
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, rd := range rep.Rounds {
		order = append(order, rd.Responder)
		if rd.OK != requests {
			t.Errorf("%s round %d: %d ok, want %d", rd.Responder, rd.Round, rd.OK, requests)
		}
	}
	return rep, order
}

// TestRunWithMetrics checks the third responder: the runner with metrics,
// in every round, swapping places with the runner, its requests counted.
func TestRunWithMetrics(t *testing.T) {
	rep, order := runRounds(t, Config{Metrics: true})
	want := []string{Handwritten, Runner, RunnerMetrics, Handwritten, RunnerMetrics, Runner}
	if !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if rep.RunnerMetrics == nil || rep.RunnerMetrics.PerSecond <= 0 || rep.MetricsThroughputRatio <= 0 || rep.MetricsP50Ratio <= 0 || rep.MetricsPairedRatio <= 0 {
		t.Fatalf("metrics summary missing: %+v", rep)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "with/without") {
		t.Errorf("text report lacks the metrics comparison:\n%s", text.String())
	}
}

// TestRunWithEcho checks the raw echo: last in every round, answering
// each payload with itself, and compared with the runner in the report.
func TestRunWithEcho(t *testing.T) {
	srv := natstest.Start(t)
	startResponder(t, echoResponder(), srv.Connect())
	loadNC := srv.Connect()
	for i, p := range Payloads() {
		msg, err := loadNC.Request(protocol.SubjectPrefix+AlgorithmName, p, 5*time.Second)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if !bytes.Equal(msg.Data, p) || len(msg.Header) != 0 {
			t.Fatalf("payload %d: echo answered %q with headers %v, want %q and none", i, msg.Data, msg.Header, p)
		}
	}

	rep, order := runRounds(t, Config{Metrics: true, Echo: true})
	want := []string{Handwritten, Runner, RunnerMetrics, Echo, Handwritten, RunnerMetrics, Runner, Echo}
	if !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if rep.Echo == nil || rep.Echo.PerSecond <= 0 || rep.EchoThroughputRatio <= 0 || rep.EchoP50Ratio <= 0 || !rep.Setup.Echo {
		t.Fatalf("echo summary missing: %+v", rep)
	}
	if got := rep.Runner.PerSecond / rep.Echo.PerSecond; got != rep.EchoThroughputRatio {
		t.Errorf("echo ratio %.3f, want runner/echo = %.3f", rep.EchoThroughputRatio, got)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "runner/echo") {
		t.Errorf("text report lacks the echo comparison:\n%s", text.String())
	}
}

func quickOf(b *testing.B, schema string) *schemas.Quick {
	b.Helper()
	doc, err := schemas.DecodeJSON([]byte(schema))
	if err != nil {
		b.Fatal(err)
	}
	compiled, err := schemas.CompileBytes("bench.json", []byte(schema))
	if err != nil {
		b.Fatal(err)
	}
	q := schemas.NewQuick(doc, compiled)
	if q == nil {
		b.Fatal("no quick check for the schema")
	}
	return q
}
