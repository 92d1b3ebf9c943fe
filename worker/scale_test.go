package worker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/worker"
)

// runWorker runs a worker until the test ends, like startWorker, and also
// returns it.
func runWorker(t *testing.T, nc *nats.Conn, cfg worker.Config) (*worker.Worker, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = zerolog.New(logs).Level(zerolog.DebugLevel)
	w, err := worker.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	})
	return w, logs
}

// scalingCommand is the slow algorithm of testdata/scaling.py, noting each
// execution in a file; it returns the command, its environment and the
// file.
func scalingCommand(t *testing.T) ([]string, []string, string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "executions")
	return sdkCommand(t, "testdata/scaling.py"), []string{"SCALING_LOG=" + log}, log
}

// executions reads the notes of testdata/scaling.py: how often each token
// started and ended.
func executions(t *testing.T, file string) (started, ended map[string]int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	started, ended = map[string]int{}, map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		switch f[0] {
		case "start":
			started[f[1]]++
		case "end":
			ended[f[1]]++
		}
	}
	return started, ended
}

// checkOnce fails unless every token ran exactly once, start to end, and
// nothing else ran.
func checkOnce(t *testing.T, file string, tokens []string) {
	t.Helper()
	started, ended := executions(t, file)
	for _, tok := range tokens {
		if started[tok] != 1 || ended[tok] != 1 {
			t.Errorf("token %s: started %d times, ended %d times; want once", tok, started[tok], ended[tok])
		}
	}
	if len(started) != len(tokens) {
		t.Errorf("%d tokens ran, %d were sent", len(started), len(tokens))
	}
}

// load sends slow requests from clients goroutines, each waiting for its
// reply before the next, until stop is closed; it returns the tokens sent
// and counts the failures.
type load struct {
	name     string // begins every token
	mu       sync.Mutex
	tokens   []string
	failures []string
	wg       sync.WaitGroup
	next     atomic.Int64
}

func (l *load) run(t *testing.T, nc *nats.Conn, clients, ms int, stop <-chan struct{}) {
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok := fmt.Sprintf("%s-c%d-%d", l.name, c, l.next.Add(1))
				m, err := nc.Request("run.slow", fmt.Appendf(nil, `{"token":%q,"ms":%d}`, tok, ms), 60*time.Second)
				l.mu.Lock()
				l.tokens = append(l.tokens, tok)
				switch {
				case err != nil:
					l.failures = append(l.failures, tok+": "+err.Error())
				case protocol.ReplyError(m) != nil:
					l.failures = append(l.failures, tok+": "+protocol.ReplyError(m).Error())
				case !strings.Contains(string(m.Data), tok):
					l.failures = append(l.failures, tok+": reply "+string(m.Data))
				}
				l.mu.Unlock()
			}
		}()
	}
}

func (l *load) wait(t *testing.T) []string {
	t.Helper()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.failures {
		t.Errorf("request failed: %s", f)
	}
	return l.tokens
}

// instances counts the live instances of alg in discovery; 0 before the
// bucket exists.
func instances(t *testing.T, nc *nats.Conn, alg string) int {
	t.Helper()
	recs, err := lookupErr(t, nc, alg)
	if err != nil {
		return 0
	}
	return len(recs)
}

// gauge reads pnp_worker_processes of algorithm.
func gauge(t *testing.T, reg *prometheus.Registry, algorithm string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pnp_worker_processes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "algorithm" && lp.GetValue() == algorithm {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// checkDocumented fails unless docs/METRICS.md names exactly the
// pnp_worker_ metrics reg exports.
func checkDocumented(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	b, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`pnp_worker_[a-z_]+`).FindAllString(string(b), -1) {
		if !strings.HasSuffix(m, "_") {
			named[m] = true
		}
	}
	for m := range named {
		if !have[m] {
			t.Errorf("docs/METRICS.md names %s, which the worker does not export", m)
		}
	}
	for m := range have {
		if !named[m] {
			t.Errorf("docs/METRICS.md does not document %s", m)
		}
	}
}

// With --worker-procs 1:3, clients that keep more slow requests coming
// than one process can run grow the worker to three processes, never
// more; when the load drops to one client the extra processes are
// drained and stopped, one at a time, back to one, while that client's
// requests keep flowing: no request fails and none runs twice. Each
// decision is one log line with its reason and counts, and
// pnp_worker_processes follows.
func TestScaleUpThenDownUnderLoad(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	cmd, env, file := scalingCommand(t)
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	w, logs := runWorker(t, nc, worker.Config{
		Command: cmd, Env: env, Procs: 1, MaxProcs: 3,
		ScaleInterval: 100 * time.Millisecond, ScaleIdle: 1500 * time.Millisecond,
		Metrics: metrics,
	})
	natstest.Eventually(t, 30*time.Second, func() bool { return gauge(t, reg, "slow") == 1 }, "the first process does not serve")

	burst := &load{name: "burst"}
	stopBurst := make(chan struct{})
	burst.run(t, nc, 6, 300, stopBurst)
	most := 0
	natstest.Eventually(t, 90*time.Second, func() bool {
		most = max(most, worker.Procs(w))
		return gauge(t, reg, "slow") == 3
	}, "the worker did not grow to 3 processes")
	if n := instances(t, nc, "slow"); n != 3 {
		t.Errorf("%d instances in discovery at 3 processes, want 3", n)
	}
	// At the maximum the backlog persists; no fourth process comes.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		most = max(most, worker.Procs(w))
		time.Sleep(20 * time.Millisecond)
	}
	if most > 3 {
		t.Errorf("%d processes at once, at most 3 allowed", most)
	}

	// Down to one client: requests keep coming while processes drain.
	trickle := &load{name: "trickle"}
	stopTrickle := make(chan struct{})
	trickle.run(t, nc, 1, 100, stopTrickle)
	close(stopBurst)
	tokens := burst.wait(t)
	natstest.Eventually(t, 120*time.Second, func() bool {
		return gauge(t, reg, "slow") == 1 && worker.Procs(w) == 1
	}, "the worker did not shrink back to 1 process")
	close(stopTrickle)
	tokens = append(tokens, trickle.wait(t)...)
	if n := instances(t, nc, "slow"); n != 1 {
		t.Errorf("%d instances in discovery at 1 process, want 1", n)
	}
	checkOnce(t, file, tokens)

	checkDocumented(t, reg)

	ups := logs.lines(map[string]string{"message": "worker scaled up: a process added"})
	downs := logs.lines(map[string]string{"message": "worker scaled down: draining a process"})
	if len(ups) != 2 || len(downs) != 2 {
		t.Fatalf("%d scale-ups and %d scale-downs logged, want 2 and 2", len(ups), len(downs))
	}
	for i, l := range ups {
		if l["reason"] != "backlog" || l["algorithm"] != "slow" || l["procs"] != float64(i+1) || l["to"] != float64(i+2) {
			t.Errorf("scale-up %d logged as %v", i, l)
		}
		if l["waiting"].(float64)+l["refused"].(float64) == 0 {
			t.Errorf("scale-up %d without waiting or refused requests: %v", i, l)
		}
	}
	for i, l := range downs {
		if l["reason"] != "idle" || l["procs"] != float64(3-i) || l["to"] != float64(2-i) {
			t.Errorf("scale-down %d logged as %v", i, l)
		}
	}
}

// A process being drained takes no new request, finishes the ones it
// holds, and exits; its requests are answered, each run once, and the
// requests sent meanwhile go to the processes that stay.
func TestRetiredProcessFinishesItsRequests(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	cmd, env, file := scalingCommand(t)
	w, _ := runWorker(t, nc, worker.Config{
		// No scaler: nothing but the test drains a process, and no
		// process replaces it.
		Command: cmd, Env: env, Procs: 2,
	})
	natstest.Eventually(t, 30*time.Second, func() bool { return instances(t, nc, "slow") == 2 }, "two processes do not serve")

	// Slow requests on both processes, several waiting in each.
	l := &load{name: "drain"}
	stop := make(chan struct{})
	l.run(t, nc, 6, 1500, stop)
	natstest.Eventually(t, 20*time.Second, func() bool { return worker.RetireBusy(w, "slow") },
		"no process runs a request with more waiting")
	natstest.Eventually(t, 60*time.Second, func() bool {
		return worker.Procs(w) == 1 && instances(t, nc, "slow") == 1
	}, "the drained process did not exit")
	close(stop)
	checkOnce(t, file, l.wait(t))
}

// provisionJobs creates the job streams and buckets, as a controller
// does, and returns the store over them.
func provisionJobs(t *testing.T, ctx context.Context, nc *nats.Conn) (jetstream.JetStream, *controller.Store) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := controller.Provision(ctx, js, controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return js, store
}

// submitSlow submits n jobs of the slow algorithm, each running ms
// milliseconds, with ids prefix-0, prefix-1, ... (also their tokens), and
// returns the ids.
func submitSlow(t *testing.T, ctx context.Context, store *controller.Store, prefix string, n, ms int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		if _, err := store.Submit(ctx, "slow", fmt.Appendf(nil, `{"token":%q,"ms":%d}`, ids[i], ms), controller.SubmitOptions{ID: ids[i]}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// waitJobs waits for the jobs' results, fails unless each succeeded after
// one attempt (no refusal, no retry), and counts them by the instance that
// ran them.
func waitJobs(t *testing.T, ctx context.Context, store *controller.Store, ids []string) map[string]int {
	t.Helper()
	byInstance := map[string]int{}
	for _, id := range ids {
		r, err := store.WaitResult(ctx, id, nil)
		if err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
		if r.Status != controller.StatusSucceeded || r.Attempts != 1 {
			t.Errorf("job %s: %s after %d attempts %v; want succeeded after 1", id, r.Status, r.Attempts, r.Error)
		}
		byInstance[r.Instance]++
	}
	return byInstance
}

// runController runs a controller that hands out at most maxInFlight jobs
// at once, until the test ends.
func runController(t *testing.T, nc *nats.Conn, maxInFlight int) {
	t.Helper()
	ctl, err := controller.New(nc, controller.Config{
		MaxInFlight: maxInFlight,
		Logger:      zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
}

// Jobs in flight on a process that is drained all complete, each run
// once and dispatched once: the jobs the process runs and those waiting
// in its runner are served before it exits, and the jobs submitted while
// it drains go to the process that stays. Nothing is retried, so the
// controller never saw a draining process refuse a job.
func TestRetiredProcessFinishesItsJobs(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	_, store := provisionJobs(t, ctx, nc)
	cmd, env, file := scalingCommand(t)
	w, _ := runWorker(t, nc, worker.Config{
		// No scaler: nothing but the test drains a process, and no
		// process replaces it.
		Command: cmd, Env: env, Procs: 2,
	})
	natstest.Eventually(t, 30*time.Second, func() bool { return instances(t, nc, "slow") == 2 }, "two processes do not serve")
	runController(t, nc, 64)

	// Eight jobs at once: the controller hands them all out, so one
	// process at least runs one with others waiting behind it.
	ids := submitSlow(t, ctx, store, "before", 8, 800)
	natstest.Eventually(t, 30*time.Second, func() bool { return worker.RetireBusy(w, "slow") },
		"no process runs a job with more waiting")
	ids = append(ids, submitSlow(t, ctx, store, "during", 4, 800)...)
	natstest.Eventually(t, 60*time.Second, func() bool {
		return worker.Procs(w) == 1 && instances(t, nc, "slow") == 1
	}, "the drained process did not exit")
	ids = append(ids, submitSlow(t, ctx, store, "after", 2, 800)...)
	waitJobs(t, ctx, store, ids)
	checkOnce(t, file, ids)
}

// Jobs waiting in JOBS for an algorithm whose processes are all busy grow
// the worker even when no request waits at any runner: here the
// controller dispatches one job at a time, so the runner's admission
// never holds more than the job that runs, and only JOBS shows the
// backlog (jobs.Waiting). Every job still succeeds, after one attempt,
// and runs once.
func TestJobsBacklogScalesUp(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	js, store := provisionJobs(t, ctx, nc)
	cmd, env, file := scalingCommand(t)
	_, logs := runWorker(t, nc, worker.Config{
		Command: cmd, Env: env, Procs: 1, MaxProcs: 2,
		ScaleInterval: 100 * time.Millisecond, ScaleIdle: time.Hour,
		Backlog: func(ctx context.Context, alg string) (int, error) { return jobs.Waiting(ctx, js, alg) },
	})
	natstest.Eventually(t, 30*time.Second, func() bool { return instances(t, nc, "slow") == 1 }, "the first process does not serve")
	runController(t, nc, 1)

	ids := submitSlow(t, ctx, store, "job", 12, 400)
	natstest.Eventually(t, 60*time.Second, func() bool { return instances(t, nc, "slow") == 2 }, "jobs waiting in JOBS did not add a process")
	ups := logs.lines(map[string]string{"message": "worker scaled up: a process added"})
	if len(ups) != 1 {
		t.Fatalf("%d scale-ups logged, want 1", len(ups))
	}
	// At most the job being handed over shows as waiting in the runner
	// (admitted, not yet picked up by a free slot).
	if l := ups[0]; l["jobs_waiting"].(float64) < 1 || l["waiting"].(float64) > 1 || l["refused"] != float64(0) {
		t.Errorf("scale-up not for jobs waiting in JOBS alone: %v", l)
	}
	waitJobs(t, ctx, store, ids)
	checkOnce(t, file, ids)
}

// A burst of jobs that the controller hands out all at once waits in the
// first process's runner; the process added for it gets its share of them
// (handed back to the controller, which counts no attempt), so both
// processes run jobs of the burst. Every job succeeds after one attempt,
// and runs once.
func TestJobsBurstSpreadsOverAddedProcess(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	_, store := provisionJobs(t, ctx, nc)
	cmd, env, file := scalingCommand(t)
	_, logs := runWorker(t, nc, worker.Config{
		Command: cmd, Env: env, Procs: 1, MaxProcs: 2,
		ScaleInterval: 100 * time.Millisecond, ScaleIdle: time.Hour,
	})
	natstest.Eventually(t, 30*time.Second, func() bool { return instances(t, nc, "slow") == 1 }, "the first process does not serve")
	runController(t, nc, 64)

	ids := submitSlow(t, ctx, store, "burst", 16, 500)
	byInstance := waitJobs(t, ctx, store, ids)
	checkOnce(t, file, ids)
	if len(byInstance) != 2 {
		t.Errorf("jobs by instance %v: the added process ran none of the burst", byInstance)
	}
	if moved := logs.lines(map[string]string{"message": "worker rebalanced: waiting jobs handed back to the controller"}); len(moved) == 0 {
		t.Error("no rebalance logged")
	} else if l := moved[0]; l["reason"] != "room" || l["algorithm"] != "slow" || l["jobs"].(float64) < 1 {
		t.Errorf("rebalance logged as %v", l)
	}
}

// A jobs backlog that cannot be read (a runner user of nats.conf may not
// read consumer info) is warned about once, not at each retry; the reads
// are retried after a pause, the worker scales on the runners' admission
// meanwhile, and a read that works again is said once.
func TestBacklogReadFailureWarnedOnce(t *testing.T) {
	worker.SetBacklogRetry(t, 100*time.Millisecond)
	s := natstest.Start(t)
	nc := s.Connect()
	cmd, env, file := scalingCommand(t)
	var calls atomic.Int64
	var denied atomic.Bool
	denied.Store(true)
	_, logs := runWorker(t, nc, worker.Config{
		Command: cmd, Env: env, Procs: 1, MaxProcs: 2,
		ScaleInterval: 50 * time.Millisecond, ScaleIdle: time.Hour,
		Backlog: func(ctx context.Context, alg string) (int, error) {
			calls.Add(1)
			if denied.Load() {
				return 0, fmt.Errorf("read %s: %w", alg, nats.ErrPermissionViolation)
			}
			return 0, nil
		},
	})
	natstest.Eventually(t, 30*time.Second, func() bool { return instances(t, nc, "slow") == 1 }, "the first process does not serve")
	// One client keeps the process busy with nothing waiting: the
	// backlog is read, and there is none to scale on.
	l := &load{name: "busy"}
	stop := make(chan struct{})
	l.run(t, nc, 1, 200, stop)
	cannot := map[string]string{"message": "cannot read the jobs backlog; scaling on the runner's admission alone meanwhile"}
	natstest.Eventually(t, 60*time.Second, func() bool { return len(logs.lines(cannot)) >= 4 }, "the failing backlog read was not retried")
	denied.Store(false)
	again := map[string]string{"message": "reading the jobs backlog again"}
	natstest.Eventually(t, 60*time.Second, func() bool { return len(logs.lines(again)) == 1 }, "the backlog read working again is not said")
	close(stop)
	checkOnce(t, file, l.wait(t))

	var warns int
	for _, line := range logs.lines(cannot) {
		if line["level"] == "warn" {
			warns++
		} else if line["level"] != "debug" {
			t.Errorf("failed read logged at %v", line["level"])
		}
	}
	if warns != 1 {
		t.Errorf("the failing backlog read was warned about %d times, want once", warns)
	}
	if ups := logs.lines(map[string]string{"message": "worker scaled up: a process added"}); len(ups) != 0 {
		t.Errorf("scaled up with nothing waiting: %v", ups)
	}
	if calls.Load() < 5 {
		t.Errorf("backlog read %d times, want a read per retry", calls.Load())
	}
}

// jobs.Waiting is 0 while no controller has created the algorithm's
// consumer, and counts the undelivered jobs once one has.
func TestJobsWaitingWithoutConsumer(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := jobs.Waiting(ctx, js, "slow"); err != nil || n != 0 {
		t.Fatalf("without stream JOBS: %d, %v; want 0, nil", n, err)
	}
	store, err := controller.Provision(ctx, js, controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := store.Submit(ctx, "slow", []byte(`{"token":"x"}`), controller.SubmitOptions{ID: fmt.Sprint("w", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := jobs.Waiting(ctx, js, "slow"); err != nil || n != 0 {
		t.Fatalf("without a consumer: %d, %v; want 0, nil", n, err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, jobs.JobsStream, jetstream.ConsumerConfig{
		Durable: jobs.ConsumerName("slow"), FilterSubject: "jobs.slow", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := jobs.Waiting(ctx, js, "slow"); err != nil || n != 3 {
		t.Fatalf("with a consumer: %d, %v; want 3, nil", n, err)
	}
	// High and low jobs wait on consumers of their own and count too.
	for i, p := range []jobs.Priority{jobs.PriorityHigh, jobs.PriorityHigh, jobs.PriorityLow} {
		if _, err := store.Submit(ctx, "slow", []byte(`{"token":"x"}`), controller.SubmitOptions{ID: fmt.Sprint("p", i), Priority: p}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []jobs.Priority{jobs.PriorityHigh, jobs.PriorityLow} {
		if _, err := js.CreateOrUpdateConsumer(ctx, jobs.JobsStream, jetstream.ConsumerConfig{
			Durable: jobs.PriorityConsumerName("slow", p), FilterSubject: jobs.JobSubject("slow", p), AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := jobs.Waiting(ctx, js, "slow"); err != nil || n != 6 {
		t.Fatalf("with every priority's consumer: %d, %v; want 6, nil", n, err)
	}
}

func TestScaleConfigValidate(t *testing.T) {
	for name, c := range map[string]struct {
		cfg  worker.Config
		want string
	}{
		"max below procs":   {worker.Config{Procs: 3, MaxProcs: 2}, "max procs 2 is below procs 3"},
		"max below default": {worker.Config{MaxProcs: -1}, "max procs -1 is negative"},
		"negative idle":     {worker.Config{MaxProcs: 2, ScaleIdle: -time.Second}, "scale idle -1s is negative"},
		"negative interval": {worker.Config{MaxProcs: 2, ScaleInterval: -time.Second}, "scale interval -1s is negative"},
		"fine":              {worker.Config{Procs: 1, MaxProcs: 4}, ""},
		"max equal procs":   {worker.Config{Procs: 2, MaxProcs: 2}, ""},
		"max only, procs 1": {worker.Config{MaxProcs: 1}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c.cfg.Command = []string{"x"}
			err := c.cfg.Validate()
			if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
		})
	}
}
