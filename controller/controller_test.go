package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
)

// 1,000 jobs over two runner replicas and two controller replicas: every
// job gets exactly one succeeded result, the replicas share the work, and
// JOBS is empty afterwards.
func TestThousandJobsTwoRunnersTwoControllers(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	r1 := startRunner(t, e.srv, echo(t, "echo", nil))
	r2 := startRunner(t, e.srv, echo(t, "echo", nil))
	cfg := fastConfig(t)
	cfg.MaxInFlight = 32
	c1 := startController(t, e, cfg)
	c2 := startController(t, e, cfg)

	const n = 1000
	id := jobID("bulk")
	for i := range n {
		e.submit(t, "echo", id(i), echoIn{N: i})
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return rec.done() == n }, "%d of %d results", rec.done(), n)
	e.checkAll(t, n, id)
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "JOBS not empty")

	byController := map[string]int{}
	byRunner := map[string]int{}
	for i := range n {
		res, _ := e.final(t, id(i))
		byController[res.Controller]++
		byRunner[res.Instance]++
		if res.Attempts != 1 {
			t.Errorf("job %s: %d attempts, want 1", id(i), res.Attempts)
		}
	}
	for _, c := range []*ctlHandle{c1, c2} {
		if byController[c.c.Instance()] == 0 {
			t.Errorf("controller %s took no job: %v", c.c.Instance(), byController)
		}
	}
	for _, r := range []*runnerHandle{r1, r2} {
		if byRunner[r.instance()] == 0 {
			t.Errorf("runner %s ran no job: %v", r.instance(), byRunner)
		}
	}
}

// A runner that dies in the middle of a job (its connection closed inside
// the handler) costs one attempt: the job is retried on the other replica
// and has one result.
func TestRunnerKilledMidJob(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startController(t, e, fastConfig(t))

	var calls atomic.Int64
	died := make(chan struct{})
	var dying *runnerHandle
	var once sync.Once
	dyingAlg := newAlgorithm(t, "fragile", time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		calls.Add(1)
		once.Do(func() {
			dying.nc.Close()
			close(died)
		})
		<-ctx.Done()
		return echoOut{}, ctx.Err()
	})
	dying = startRunner(t, e.srv, dyingAlg)

	e.submit(t, "fragile", "k1", echoIn{N: 7})
	select {
	case <-died:
	case <-time.After(10 * time.Second):
		t.Fatal("job never reached the first runner")
	}
	healthy := startRunner(t, e.srv, newAlgorithm(t, "fragile", time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		calls.Add(1)
		return echoOut{N: in.N}, nil
	}))

	res := e.waitResult(t, "k1")
	if res.Status != controller.StatusSucceeded {
		t.Fatalf("status %s (%v), want succeeded", res.Status, res.Error)
	}
	if res.Instance != healthy.instance() {
		t.Errorf("answered by %s, want the surviving replica %s", res.Instance, healthy.instance())
	}
	if res.Attempts != 2 || calls.Load() != 2 {
		t.Errorf("attempts %d, handler calls %d; want 2 and 2", res.Attempts, calls.Load())
	}
	if got := e.statuses(t, "k1"); !slices.Equal(got, []string{"retrying", "succeeded"}) {
		t.Errorf("records written %v, want [retrying succeeded]", got)
	}
	e.final(t, "k1")
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "JOBS not empty")
}

// A controller stopped in the middle of a batch — cleanly, or by losing
// its connection — and replaced by another: every job still gets exactly
// one result.
func TestControllerStoppedMidBatch(t *testing.T) {
	tests := []struct {
		name string
		stop func(t *testing.T, h *ctlHandle)
	}{
		{"cancelled", func(t *testing.T, h *ctlHandle) {
			if err := h.stop(); err != nil {
				t.Fatalf("Run returned %v after cancel, want nil", err)
			}
		}},
		{"connection lost", func(t *testing.T, h *ctlHandle) {
			h.nc.Close()
			if err := h.wait(10 * time.Second); err == nil || err.Error() == "controller did not stop" {
				t.Fatalf("Run returned %v after its connection closed, want the closed-connection error", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, controller.StoreConfig{})
			rec := record(t, e)
			const n = 300
			id := jobID("batch")
			for i := range n {
				e.submit(t, "echo", id(i), echoIn{N: i, SleepMS: 5})
			}
			startRunner(t, e.srv, echo(t, "echo", nil))
			cfg := fastConfig(t)
			cfg.MaxInFlight = 8
			cfg.AckWait = time.Second
			first := startController(t, e, cfg)
			natstest.Eventually(t, 30*time.Second, func() bool { return rec.done() >= 50 }, "no progress")
			tt.stop(t, first)
			if e.jobsLeft(t) == 0 {
				t.Fatal("batch finished before the controller stopped; nothing was tested")
			}
			startController(t, e, cfg)
			natstest.Eventually(t, 60*time.Second, func() bool { return rec.done() == n }, "%d of %d results", rec.done(), n)
			e.checkAll(t, n, id)
			natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "JOBS not empty")
		})
	}
}

// Jobs for an algorithm no runner serves wait in JOBS — not delivered at
// all, while other algorithms' jobs flow — and complete once a runner
// appears, without those waits counting as attempts.
func TestJobsWaitForRunner(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	startController(t, e, fastConfig(t))
	startRunner(t, e.srv, echo(t, "echo", nil))

	const n = 10
	late, now := jobID("late"), jobID("now")
	for i := range n {
		e.submit(t, "late", late(i), echoIn{N: i})
	}
	for i := range n {
		e.submit(t, "echo", now(i), echoIn{N: i})
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return rec.done() == n }, "echo jobs did not complete")
	e.checkAll(t, n, now)

	info, err := e.store.Jobs().Info(context.Background(), jetstream.WithSubjectFilter("jobs.late"))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects["jobs.late"]; got != n {
		t.Fatalf("%d late jobs in JOBS, want %d", got, n)
	}
	if _, err := e.js.Consumer(context.Background(), controller.JobsStream, controller.ConsumerName("late")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer for late exists (err %v): jobs without a runner must not be delivered", err)
	}
	queues, err := e.store.Queues(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(queues, controller.Queue{Algorithm: "late", Waiting: n}) {
		t.Errorf("queues %+v, want late with %d waiting and no runner", queues, n)
	}

	startRunner(t, e.srv, echo(t, "late", nil))
	natstest.Eventually(t, 30*time.Second, func() bool { return rec.done() == 2*n }, "late jobs did not complete")
	e.checkAll(t, n, late)
	for i := range n {
		if res, _ := e.final(t, late(i)); res.Attempts != 1 {
			t.Errorf("job %s: %d attempts, want 1", late(i), res.Attempts)
		}
	}
}

// Input the job can never succeed with fails at once: a failed result with
// the reason, a dead letter, no retry.
func TestTerminalFailures(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		header   nats.Header
		code     int
		attempts int
		pointer  string // a violation expected at this pointer, if any
	}{
		{name: "schema violation", body: `{"n":"seven"}`, code: 400, pointer: "/n"},
		{name: "missing field", body: `{}`, code: 400, pointer: ""},
		{name: "malformed JSON", body: `{"n":`, code: 400},
		{name: "rejected by the algorithm", body: `{"n":-1}`, code: 422, attempts: 1},
		{name: "bad timeout header", body: `{"n":1}`, header: nats.Header{controller.HeaderTimeout: {"soon"}}, code: 400},
	}
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "echo", &calls))
	startController(t, e, fastConfig(t))
	sch := resultSchema(t)

	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := calls.Load()
			id := "bad-" + strconv.Itoa(i)
			msg := &nats.Msg{Subject: "jobs.echo", Data: []byte(tt.body), Header: nats.Header{}}
			for k, v := range tt.header {
				msg.Header[k] = v
			}
			// Published raw: Submit refuses malformed JSON up front.
			if _, err := e.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
			res := e.waitResult(t, id)
			if res.Status != controller.StatusFailed || res.Error == nil || res.Error.Code != tt.code {
				t.Fatalf("result %+v, want failed with code %d", res, tt.code)
			}
			if res.Attempts != tt.attempts {
				t.Errorf("attempts %d, want %d", res.Attempts, tt.attempts)
			}
			if tt.pointer != "" || tt.name == "missing field" {
				found := false
				for _, v := range res.Error.Violations {
					found = found || v.Pointer == tt.pointer
				}
				if !found {
					t.Errorf("violations %v, want one at %q", res.Error.Violations, tt.pointer)
				}
			}
			natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "job still in JOBS")
			if got := calls.Load() - before; got != int64(tt.attempts) {
				t.Errorf("runner called %d times, want %d (no retry)", got, tt.attempts)
			}
			if got := e.statuses(t, id); !slices.Equal(got, []string{"failed"}) {
				t.Errorf("records written %v, want just [failed]", got)
			}

			letters, err := e.store.DeadLetters(context.Background(), "echo")
			if err != nil {
				t.Fatal(err)
			}
			var dl *controller.DeadLetter
			for i := range letters {
				if letters[i].JobID == id {
					dl = &letters[i]
				}
			}
			if dl == nil {
				t.Fatalf("no dead letter for %s in %+v", id, letters)
			}
			if dl.Seq != res.DeadLetterSeq || dl.Code != tt.code || dl.Reason == "" || string(dl.Data) != tt.body || dl.Attempts != tt.attempts {
				t.Errorf("dead letter %+v does not match result %+v and body %s", dl, res, tt.body)
			}
			for k, v := range tt.header {
				if dl.Header.Get(k) != v[0] {
					t.Errorf("dead letter lost header %s", k)
				}
			}
			raw, err := e.store.Results().Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			checkSchema(t, sch, raw.Value())
		})
	}
}

// An algorithm that always fails with a 500 is retried up to the limit with
// growing waits, then dead-lettered; once fixed, replaying the dead letter
// succeeds under the same job id.
func TestRetriesThenDeadThenReplay(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var (
		broken atomic.Bool
		mu     sync.Mutex
		calls  []time.Time
	)
	broken.Store(true)
	startRunner(t, e.srv, newAlgorithm(t, "flaky", time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		mu.Lock()
		calls = append(calls, time.Now())
		mu.Unlock()
		if broken.Load() {
			return echoOut{}, protocol.Errorf(protocol.CodeInternal, "storage backend unreachable")
		}
		return echoOut{N: in.N}, nil
	}))
	cfg := fastConfig(t)
	cfg.MaxAttempts = 3
	cfg.RetryBackoff = 100 * time.Millisecond
	cfg.MaxRetryBackoff = time.Second
	startController(t, e, cfg)

	e.submit(t, "flaky", "f1", echoIn{N: 3})
	res := e.waitResult(t, "f1")
	if res.Status != controller.StatusFailed || res.Error.Code != 500 || res.Attempts != 3 {
		t.Fatalf("result %+v (error %v), want failed 500 after 3 attempts", res, res.Error)
	}
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("%d calls, want 3", len(got))
	}
	// Waits are 100 ms then 200 ms, ±20 % jitter: lower bounds only.
	for i, min := range []time.Duration{80 * time.Millisecond, 160 * time.Millisecond} {
		if gap := got[i+1].Sub(got[i]); gap < min {
			t.Errorf("wait before attempt %d was %s, want at least %s", i+2, gap, min)
		}
	}
	want := []string{"retrying", "retrying", "failed"}
	if s := e.statuses(t, "f1"); !slices.Equal(s, want) {
		t.Errorf("records written %v, want %v", s, want)
	}
	letters, err := e.store.DeadLetters(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].JobID != "f1" || letters[0].Attempts != 3 || letters[0].Code != 500 {
		t.Fatalf("dead letters %+v, want f1 after 3 attempts", letters)
	}

	broken.Store(false)
	if _, err := e.store.Replay(context.Background(), letters[0]); err != nil {
		t.Fatal(err)
	}
	res = e.waitResult(t, "f1")
	if res.Status != controller.StatusSucceeded || res.Attempts != 1 {
		t.Fatalf("after replay: %+v, want succeeded at the first attempt", res)
	}
	if letters, err := e.store.DeadLetters(context.Background(), ""); err != nil || len(letters) != 0 {
		t.Fatalf("dead letters after replay: %+v, %v; want none", letters, err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "JOBS not empty")
}

// The same job id submitted twice is one job with one result: inside the
// duplicate window JOBS stores it once; after it, the second copy runs but
// the first outcome stays.
func TestSameJobIDTwice(t *testing.T) {
	tests := []struct {
		name        string
		window      time.Duration
		afterWindow bool
	}{
		{name: "inside the duplicate window", window: time.Minute},
		{name: "after the duplicate window", window: 200 * time.Millisecond, afterWindow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, controller.StoreConfig{DuplicateWindow: tt.window})
			var calls atomic.Int64
			startRunner(t, e.srv, echo(t, "echo", &calls))
			startController(t, e, fastConfig(t))

			first := e.submit(t, "echo", "same", echoIn{N: 1})
			if !tt.afterWindow {
				if again := e.submit(t, "echo", "same", echoIn{N: 2}); !again.Duplicate || again.Seq != first.Seq {
					t.Fatalf("second submission %+v, want a duplicate of seq %d", again, first.Seq)
				}
			}
			res := e.waitResult(t, "same")
			if tt.afterWindow {
				// Submit again until JOBS no longer recognises the id.
				natstest.Eventually(t, 10*time.Second, func() bool {
					return !e.submit(t, "echo", "same", echoIn{N: 2}).Duplicate
				}, "duplicate window never passed")
				natstest.Eventually(t, 10*time.Second, func() bool { return calls.Load() == 2 }, "second copy not run")
			}
			natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "JOBS not empty")
			want := int64(1)
			if tt.afterWindow {
				want = 2
			}
			if calls.Load() != want {
				t.Errorf("runner called %d times, want %d", calls.Load(), want)
			}
			final, _ := e.final(t, "same")
			var out echoOut
			if err := json.Unmarshal(final.Output, &out); err != nil || out.N != 1 || res.Status != controller.StatusSucceeded {
				t.Errorf("result %+v, want the first submission's outcome", final)
			}
		})
	}
}

// A job that runs longer than AckWait is kept by progress heartbeats: it is
// delivered once and run once.
func TestLongJobNotRedelivered(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, newAlgorithm(t, "slow", 10*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		calls.Add(1)
		select {
		case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return echoOut{}, ctx.Err()
		}
		return echoOut{N: in.N}, nil
	}))
	cfg := fastConfig(t)
	cfg.AckWait = time.Second
	startController(t, e, cfg)

	e.submit(t, "slow", "long", echoIn{N: 1, SleepMS: 4000}) // 4 × AckWait
	res := e.waitResult(t, "long")
	if res.Status != controller.StatusSucceeded || res.Attempts != 1 {
		t.Fatalf("result %+v, want succeeded at the first attempt", res)
	}
	if calls.Load() != 1 {
		t.Errorf("job ran %d times, want 1", calls.Load())
	}
	cons, err := e.js.Consumer(context.Background(), controller.JobsStream, controller.ConsumerName("slow"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cons.CachedInfo().Delivered.Consumer; d != 1 {
		t.Errorf("job delivered %d times, want 1", d)
	}
}

// A NATS restart (same store) in the middle of a run loses no job and
// gives none two outcomes.
func TestNATSRestartMidRun(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	const n = 400
	id := jobID("restart")
	for i := range n {
		e.submit(t, "echo", id(i), echoIn{N: i, SleepMS: 5})
	}
	startRunner(t, e.srv, echo(t, "echo", nil))
	cfg := fastConfig(t)
	cfg.MaxInFlight = 8
	startController(t, e, cfg)
	natstest.Eventually(t, 30*time.Second, func() bool { return rec.done() >= 50 }, "no progress")
	e.srv.Restart()
	if e.jobsLeft(t) == 0 {
		t.Fatal("run finished before the restart; nothing was tested")
	}
	natstest.Eventually(t, 90*time.Second, func() bool {
		info, err := e.store.Jobs().Info(context.Background())
		return err == nil && info.State.Msgs == 0
	}, "JOBS not drained after restart")

	// The bucket's history, not the (reconnecting) watcher, is the proof.
	e.checkAll(t, n, id)
}

// A job published without any id (plain `nats pub`) is named after its
// stream sequence and stored time, and gets a result under that name.
func TestJobWithoutID(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	startRunner(t, e.srv, echo(t, "echo", nil))
	startController(t, e, fastConfig(t))
	ack, err := e.js.Publish(context.Background(), "jobs.echo", []byte(`{"n":5}`))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return rec.done() == 1 }, "no result")
	prefix := "auto-" + strconv.FormatUint(ack.Sequence, 10) + "-"
	keys, err := e.store.Results().ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for k := range keys.Keys() {
		key = k
	}
	if !strings.HasPrefix(key, prefix) || !controller.ValidJobID(key) {
		t.Fatalf("result key %q, want %s<stored unix ms>", key, prefix)
	}
	if res, _ := e.final(t, key); res.Status != controller.StatusSucceeded || res.JobID != key {
		t.Fatalf("result %+v", res)
	}
}

// The optional job headers: Pnp-Timeout shortens the algorithm's budget
// (the runner's 504 is retried, then final), Pnp-Notify receives the final
// record.
func TestJobHeaders(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "echo", nil))
	cfg := fastConfig(t)
	cfg.MaxAttempts = 2
	startController(t, e, cfg)

	notified, err := e.nc.SubscribeSync("notify.done.>")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		opts     controller.SubmitOptions
		in       echoIn
		status   controller.Status
		code     int
		attempts int
	}{
		{"notify", controller.SubmitOptions{ID: "h-notify", Notify: "notify.done.h-notify"}, echoIn{N: 1}, controller.StatusSucceeded, 0, 1},
		{"timeout shorter than the job", controller.SubmitOptions{ID: "h-timeout", Timeout: 50 * time.Millisecond, Notify: "notify.done.h-timeout"},
			echoIn{N: 1, SleepMS: 2000}, controller.StatusFailed, 504, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := json.Marshal(tt.in)
			if _, err := e.store.Submit(context.Background(), "echo", b, tt.opts); err != nil {
				t.Fatal(err)
			}
			msg, err := notified.NextMsg(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var res controller.Result
			if err := json.Unmarshal(msg.Data, &res); err != nil {
				t.Fatal(err)
			}
			if msg.Subject != tt.opts.Notify || res.JobID != tt.opts.ID || res.Status != tt.status || res.Attempts != tt.attempts ||
				(tt.code != 0 && (res.Error == nil || res.Error.Code != tt.code)) {
				t.Errorf("notification on %s: %+v (error %v), want %s after %d attempts", msg.Subject, res, res.Error, tt.status, tt.attempts)
			}
		})
	}
}

// A job id that cannot be a result key is dead-lettered with the reason,
// without a result.
func TestInvalidJobID(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "echo", &calls))
	startController(t, e, fastConfig(t))
	msg := &nats.Msg{Subject: "jobs.echo", Data: []byte(`{"n":1}`), Header: nats.Header{controller.HeaderMsgID: {"not a key"}}}
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	var letters []controller.DeadLetter
	natstest.Eventually(t, 10*time.Second, func() bool {
		var err error
		letters, err = e.store.DeadLetters(context.Background(), "echo")
		return err == nil && len(letters) == 1
	}, "no dead letter")
	if d := letters[0]; d.JobID != "not a key" || d.Code != 400 || !strings.Contains(d.Reason, "invalid job id") {
		t.Errorf("dead letter %+v", d)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "job still in JOBS")
	if st, err := e.store.Results().Status(context.Background()); err != nil || st.Values() != 0 || calls.Load() != 0 {
		t.Errorf("results %v (%v), runner calls %d; want none", st.Values(), err, calls.Load())
	}
}

// A controller bound to existing streams (credentials that may not create
// them) waits until someone provisions them, then works.
func TestBindWaitsForProvisioning(t *testing.T) {
	srv := natstest.Start(t)
	cfg := fastConfig(t)
	cfg.Bind = true
	c, err := controller.New(srv.Connect(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	nc := srv.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Ready():
		t.Fatal("controller ready without streams")
	default:
	}

	e := &env{srv: srv, nc: nc, js: js}
	if e.store, err = controller.Provision(context.Background(), js, controller.StoreConfig{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("controller not ready after provisioning")
	}
	startRunner(t, srv, echo(t, "echo", nil))
	e.submit(t, "echo", "bound", echoIn{N: 4})
	if res := e.waitResult(t, "bound"); res.Status != controller.StatusSucceeded {
		t.Fatalf("result %+v", res)
	}
}
