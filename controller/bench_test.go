package controller_test

import (
	"context"
	"encoding/json"

	"errors"
	"flag"
	"fmt"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// benchInFlight is how many jobs both pipelines keep in flight.
const benchInFlight = 64

var benchRounds = flag.Int("rounds", 3, "BenchmarkControllerVsHandwritten: rounds of each pipeline, alternated; medians are reported")

// BenchmarkControllerVsHandwritten runs b.N jobs through (a) a hand-written
// pipeline — pull consume, request-reply to the runner, put the reply in
// the results bucket, ack — and (b) the controller, over the same trivial
// runner, 64 jobs in flight each, and reports jobs/s of both and the ratio.
// b.N is the job count. The two pipelines alternate for -rounds rounds
// (a, b, a, b, …) so that other load on the machine hits both alike, and
// the medians across rounds are reported:
//
//	go test -run '^$' -bench ControllerVsHandwritten -benchtime 50000x ./controller/ -rounds 3
func BenchmarkControllerVsHandwritten(b *testing.B) {
	n := b.N
	rounds := max(1, *benchRounds)
	if n < 1000 {
		rounds = 1 // the framework's warm-up call
	}
	var hand, ctl, handCPU, ctlCPU []float64
	for r := range rounds {
		// Each pipeline's goroutines, its server's too, carry a profiler
		// label: -cpuprofile, then go tool pprof -tagfocus
		// pipeline=controller (or handwritten), shows one side alone.
		var h, hc, c, cc float64
		pprof.Do(b.Context(), pprof.Labels("pipeline", "handwritten"), func(context.Context) {
			h, hc = benchPipeline(b, n, runHandwritten, handwrittenOutcome)
		})
		pprof.Do(b.Context(), pprof.Labels("pipeline", "controller"), func(context.Context) {
			c, cc = benchPipeline(b, n, runController, controllerOutcome)
		})
		b.Logf("round %d: handwritten %.0f jobs/s, controller %.0f jobs/s, ratio %.3f; CPU per job %.1f µs and %.1f µs, ratio %.3f",
			r+1, h, c, c/h, hc, cc, cc/hc)
		hand, ctl = append(hand, h), append(ctl, c)
		handCPU, ctlCPU = append(handCPU, hc), append(ctlCPU, cc)
	}
	h, c := median(hand), median(ctl)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(h, "handwritten_jobs/s")
	b.ReportMetric(c, "controller_jobs/s")
	b.ReportMetric(c/h, "ratio")
	// CPU per job (the whole process: server, runner and pipeline) drifts
	// less than throughput on a shared machine.
	b.ReportMetric(median(ctlCPU)/median(handCPU), "cpu_ratio")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// benchPipeline starts a server and the runner, stores n jobs, then times
// run until JOBS is empty. It returns jobs per second and the process's CPU
// time per job (µs) while they ran, and fails the run
// unless every job has a stored value that outcome accepts as its success:
// a job that ends failed (or with a result that is not its own) is not
// throughput.
func benchPipeline(b *testing.B, n int, run func(b *testing.B, srv *natstest.Server, store *controller.Store) func(), outcome func(id string, value []byte) error) (perSecond, cpuMicros float64) {
	b.Helper()
	b.StopTimer()
	srv := natstest.Start(b)
	nc := srv.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// All n jobs of one algorithm wait before the clock starts.
	store, err := controller.Provision(ctx, js, controller.StoreConfig{JobsMaxPerAlgorithm: -1})
	if err != nil {
		b.Fatal(err)
	}
	stopRunner := benchRunner(b, srv)
	defer stopRunner()

	for i := range n {
		msg := &nats.Msg{Subject: "jobs.bench", Data: fmt.Appendf(nil, `{"n":%d}`, i), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("job-%d", i))
		// A generous stall wait: on a busy machine the server acks
		// slower than the default 200ms allows for a full window.
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("storing the jobs took over a minute")
	}
	if info, err := store.Jobs().Info(ctx); err != nil || info.State.Msgs != uint64(n) {
		b.Fatalf("JOBS holds %v jobs (%v), want %d", info.State.Msgs, err, n)
	}

	b.StartTimer()
	start, cpu := time.Now(), processCPU(b)
	stop := run(b, srv, store)
	// Poll until JOBS is empty; give up (and fail) when it stops draining
	// for a minute, so a pipeline that keeps retrying cannot hang the run.
	left, progressAt := uint64(n), time.Now()
	for {
		info, err := store.Jobs().Info(ctx)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if err == nil && info.State.Msgs < left {
			left, progressAt = info.State.Msgs, time.Now()
		}
		if time.Since(progressAt) > time.Minute {
			stop()
			b.Fatalf("JOBS stuck at %d of %d jobs for a minute", left, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed, cpu := time.Since(start), processCPU(b)-cpu
	b.StopTimer()
	stop()
	if ok, failures := countSuccesses(b, store, n, outcome); ok != n {
		b.Fatalf("%d of %d jobs succeeded; failures (up to 5): %v", ok, n, failures)
	}
	return float64(n) / elapsed.Seconds(), float64(cpu.Microseconds()) / float64(n)
}

// processCPU is the user and system time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countSuccesses reads every value of the results bucket and counts those
// outcome accepts for jobs job-0 … job-<n-1>; missing jobs are failures
// too. It returns the count and up to five reasons for the others.
func countSuccesses(b *testing.B, store *controller.Store, n int, outcome func(id string, value []byte) error) (int, []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := store.Results().WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	seen := make(map[string]bool, n)
	ok := 0
	var failures []string
	fail := func(why string) {
		if len(failures) < 5 {
			failures = append(failures, why)
		}
	}
	for e := range w.Updates() {
		if e == nil {
			break // the initial values are all delivered
		}
		seen[e.Key()] = true
		if err := outcome(e.Key(), e.Value()); err != nil {
			fail(fmt.Sprintf("%s: %v", e.Key(), err))
			continue
		}
		ok++
	}
	if ctx.Err() != nil {
		b.Fatalf("reading the results: %v", ctx.Err())
	}
	for i := range n {
		if id := fmt.Sprintf("job-%d", i); !seen[id] {
			fail(id + ": no result")
		}
	}
	if len(seen) != n {
		fail(fmt.Sprintf("%d result keys for %d jobs", len(seen), n))
		ok = min(ok, n-1)
	}
	return ok, failures
}

// controllerOutcome accepts a succeeded result record whose output is the
// job's own echo.
func controllerOutcome(id string, value []byte) error {
	var r controller.Result
	if err := json.Unmarshal(value, &r); err != nil {
		return fmt.Errorf("undecodable record: %w", err)
	}
	if r.Status != controller.StatusSucceeded {
		return fmt.Errorf("status %s (%v)", r.Status, r.Error)
	}
	return checkEcho(id, r.Output)
}

// handwrittenOutcome accepts the runner's reply stored as is, when it is
// the job's own echo (the hand-written pipeline stores only successes).
func handwrittenOutcome(id string, value []byte) error { return checkEcho(id, value) }

// checkEcho says whether output is {"n":i} for job id job-<i>.
func checkEcho(id string, output []byte) error {
	var o echoOut
	if err := json.Unmarshal(output, &o); err != nil {
		return fmt.Errorf("output %.100q: %w", output, err)
	}
	if want := fmt.Sprintf("job-%d", o.N); want != id {
		return fmt.Errorf("output %s belongs to %s", output, want)
	}
	return nil
}

// benchRunner serves the trivial algorithm "bench" (echo of an integer).
func benchRunner(b *testing.B, srv *natstest.Server) func() {
	a, err := runner.NewAlgorithm(runner.Spec{
		Name:           "bench",
		Version:        "1.0.0",
		InputSchema:    []byte(`{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}`),
		OutputSchema:   []byte(`{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}`),
		MaxConcurrency: benchInFlight,
	}, func(_ context.Context, in echoIn) (echoOut, error) { return echoOut{N: in.N}, nil })
	if err != nil {
		b.Fatal(err)
	}
	r, err := runner.New(srv.Connect(), []*runner.Algorithm{a})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	<-r.Started()
	return func() {
		cancel()
		<-done
	}
}

// runController starts a controller with 64 jobs in flight.
func runController(b *testing.B, srv *natstest.Server, _ *controller.Store) func() {
	c, err := controller.New(srv.Connect(), controller.Config{MaxInFlight: benchInFlight})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// runHandwritten is the baseline: what a developer would write by hand
// with nats.go for the same job, and nothing more — no discovery, schema
// check, retries, dead letters, result records or heartbeats.
func runHandwritten(b *testing.B, srv *natstest.Server, store *controller.Store) func() {
	nc := srv.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := js.CreateOrUpdateConsumer(ctx, controller.JobsStream, jetstream.ConsumerConfig{
		Durable:       "handwritten",
		FilterSubject: "jobs.bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 1000,
	})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(benchInFlight))
	if err != nil {
		b.Fatal(err)
	}
	results := store.Results()
	sem := make(chan struct{}, benchInFlight)
	var failures atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// A short wait, called again, as the controller does: a single
			// Next can idle 30 s at small batches (see Controller.consume).
			msg, err := it.Next(jetstream.NextMaxWait(250 * time.Millisecond))
			if errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
				continue
			}
			if err != nil {
				return
			}
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				reply, err := nc.Request("run.bench", msg.Data(), 5*time.Second)
				if err == nil && reply.Header.Get(protocol.HeaderErrorCode) != "" {
					// An error reply is final here: no result, and the job
					// leaves JOBS, so the run ends and the count fails it.
					failures.Add(1)
					_ = msg.Term()
					return
				}
				if err == nil {
					_, err = results.Put(ctx, msg.Headers().Get(jetstream.MsgIDHeader), reply.Data)
				}
				if err != nil {
					failures.Add(1)
					_ = msg.Nak()
					return
				}
				_ = msg.Ack()
			}()
		}
	}()
	return func() {
		cancel()
		it.Stop()
		<-done
		if f := failures.Load(); f > 0 {
			b.Logf("handwritten pipeline: %d failed attempts", f)
		}
	}
}
