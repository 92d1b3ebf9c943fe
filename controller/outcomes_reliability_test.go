package controller_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// newEnvWith is newEnv on a server started with opts.
func newEnvWith(t *testing.T, cfg controller.StoreConfig, opts ...natstest.Option) *env {
	t.Helper()
	cfg.ResultHistory = 64
	srv := natstest.Start(t, opts...)
	nc := srv.Connect(errorsTo(t, "test client"))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := controller.Provision(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, nc: nc, js: js, cfg: cfg, store: store}
}

// publish stores a job as any producer can, bypassing Submit's checks.
func (e *env) publish(t *testing.T, alg, id string, body []byte, h nats.Header) {
	t.Helper()
	msg := &nats.Msg{Subject: controller.JobsSubjectPrefix + alg, Data: body, Header: nats.Header{}}
	for k, v := range h {
		msg.Header[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
}

// waitFinal waits a bounded time for the job's final record; a job that
// never reaches one fails the test.
func (e *env) waitFinal(t *testing.T, id string, within time.Duration) controller.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	r, err := e.store.WaitResult(ctx, id, nil)
	if err != nil {
		t.Fatalf("job %s has no outcome within %s: %v", id, within, err)
	}
	return r
}

// deadOf returns the dead letters of algorithm alg by job id.
func (e *env) deadOf(t *testing.T, alg string) map[string][]controller.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	letters, err := e.store.DeadLetters(ctx, alg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]controller.DeadLetter{}
	for _, d := range letters {
		out[d.JobID] = append(out[d.JobID], d)
	}
	return out
}

// Defect class: a header the producer sets directs the controller's writes.
// Pnp-Notify naming another job's result key, the dead letter stream or
// the jobs stream must not write there; the job fails with 400 instead,
// and its dead letter carries none of the producer's Pnp-Dead-* headers.
// A notification inside notify.> is still delivered.
func TestNotifyCannotDirectWritesReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "nt", nil))
	startController(t, e, fastConfig(t))

	// A job nobody serves: pending, without a result, for as long as the
	// test runs.
	e.submit(t, "ghost", "victim", echoIn{N: 1})
	got := make(chan *nats.Msg, 4)
	sub, err := e.nc.ChanSubscribe("notify.test.>", got)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	forged := nats.Header{"Pnp-Dead-Body-Omitted": []string{"forged"}, "Pnp-Dead-Code": []string{"200"}}
	attacks := map[string]string{
		"atk-result":   "$KV.results.victim",
		"atk-dead":     "dead.nt",
		"atk-jobs":     "jobs.nt",
		"atk-wildcard": "notify.>",
		"atk-kv-api":   "$JS.API.STREAM.PURGE.JOBS",
	}
	for id, subj := range attacks {
		h := nats.Header{controller.HeaderNotify: []string{subj}}
		for k, v := range forged {
			h[k] = v
		}
		e.publish(t, "nt", id, []byte(`{"n":1}`), h)
	}
	e.publish(t, "nt", "ok-notify", []byte(`{"n":2}`), nats.Header{controller.HeaderNotify: []string{"notify.test.ok"}})

	for id, subj := range attacks {
		r := e.waitFinal(t, id, 20*time.Second)
		if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != 400 || !strings.Contains(r.Error.Message, controller.HeaderNotify) {
			t.Errorf("job %s with %s %q: %s %+v, want failed with 400 naming the header", id, controller.HeaderNotify, subj, r.Status, r.Error)
		}
	}
	if r := e.waitFinal(t, "ok-notify", 20*time.Second); r.Status != controller.StatusSucceeded {
		t.Fatalf("ok-notify: %s %v", r.Status, r.Error)
	}
	select {
	case m := <-got:
		if m.Subject != "notify.test.ok" || !strings.Contains(string(m.Data), `"job_id":"ok-notify"`) {
			t.Errorf("notification on %s: %s", m.Subject, m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Error("no notification on notify.test.ok")
	}

	if r, err := e.store.Result(context.Background(), "victim"); !errors.Is(err, controller.ErrNoResult) {
		t.Errorf("the pending job has a result written by another job: %+v, %v", r, err)
	}
	dead := e.deadOf(t, "nt")
	for id, letters := range dead {
		if _, ok := attacks[id]; !ok || len(letters) != 1 {
			t.Errorf("dead letters of job %q: %d, not one written by the controller for a failed job", id, len(letters))
			continue
		}
		d := letters[0]
		if d.Code != 400 || d.Header.Get("Pnp-Dead-Body-Omitted") != "" {
			t.Errorf("dead letter of %s: code %d, headers %v: the producer's Pnp-Dead-* headers were kept", id, d.Code, d.Header)
		}
	}
	if len(dead) != len(attacks) {
		t.Errorf("%d jobs dead-lettered, want %d", len(dead), len(attacks))
	}
}

// Defect class: readers take whatever is stored under a key for that job's
// result. A record whose job_id is not its key is corruption, an error;
// WaitResult waits past it for the record the controller stores when the
// job runs, and reports it when its context ends first.
func TestResultOfAnotherJobIsCorruptionReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, id := range []string{"victim", "pending"} {
		rec := fmt.Sprintf(`{"job_id":"someone-else","algorithm":"echo","status":"succeeded","output":{"n":99},"attempts":1,"submitted_at":%q,"started_at":%q}`, now, now)
		if _, err := e.store.Results().Put(ctx, id, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := e.store.Result(ctx, "victim"); !errors.Is(err, controller.ErrCorruptResult) {
		t.Errorf("Result: %+v, %v; want an error wrapping ErrCorruptResult", r, err)
	}
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if r, err := e.store.WaitResult(short, "victim", nil); !errors.Is(err, controller.ErrCorruptResult) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitResult: %+v, %v; want an error wrapping ErrCorruptResult and the deadline", r, err)
	}
	// A record that stays corrupt past the grace is reported, not waited
	// on for ever: jobs's TestWaitResultReportsLastingCorruption.

	startRunner(t, e.srv, echo(t, "echo", nil))
	startController(t, e, fastConfig(t))
	e.submit(t, "echo", "pending", echoIn{N: 7})
	r, err := e.store.WaitResult(ctx, "pending", nil)
	if err != nil || r.Status != controller.StatusSucceeded || string(r.Output) != `{"n":7}` {
		t.Errorf("WaitResult of a job whose key held a corrupt record: %+v, %v; want its own result", r, err)
	}
}

// Defect class: a job too large for the pipeline's own messages never
// ends. Submit refuses it up front; when one arrives anyway, a
// schema-invalid one is dead-lettered with a dead letter that fits (no
// body, or no producer headers, with markers), and a valid one too large
// for the request to a runner fails with 413 naming the limit. Other jobs
// keep flowing.
func TestOversizeJobsEndReliability(t *testing.T) {
	const limit = 32 << 10
	e := newEnvWith(t, controller.StoreConfig{}, natstest.MaxPayload(limit))
	startRunner(t, e.srv, echo(t, "big", nil))
	startController(t, e, fastConfig(t))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	padded := func(prefix string, size int) []byte {
		b := []byte(prefix)
		for len(b) < size-1 {
			b = append(b, ' ')
		}
		return append(b, '}')
	}
	_, err := e.store.Submit(ctx, "big", padded(`{"n":1`, limit-100), controller.SubmitOptions{ID: "refused"})
	if !errors.Is(err, controller.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
		t.Errorf("Submit of a job that cannot fit: %v; want ErrTooLarge naming the limit %d", err, limit)
	}

	invalid := []byte(`{"n":"` + strings.Repeat("x", limit-200) + `"}`)
	e.publish(t, "big", "big-invalid", invalid, nil)
	e.publish(t, "big", "big-headers", []byte(`{"n":"x"}`), nats.Header{"X-Pad": []string{strings.Repeat("p", limit-400)}})
	// Fits JOBS next to its Nats-Msg-Id, not the request next to the
	// job id and time budget.
	e.publish(t, "big", "big-valid", padded(`{"n":7`, limit-40), nil)
	e.submit(t, "big", "small", echoIn{N: 3})

	for id, code := range map[string]int{"big-invalid": 400, "big-headers": 400, "big-valid": 413} {
		r := e.waitFinal(t, id, 20*time.Second)
		if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != code {
			t.Errorf("%s: %s %+v, want failed with %d", id, r.Status, r.Error, code)
			continue
		}
		if code == 413 && !strings.Contains(r.Error.Message, fmt.Sprint(limit)) {
			t.Errorf("%s: message %q does not name the limit %d", id, r.Error.Message, limit)
		}
		if r.DeadLetterSeq == 0 {
			t.Errorf("%s: no dead letter", id)
		}
	}
	if r := e.waitFinal(t, "small", 20*time.Second); r.Status != controller.StatusSucceeded {
		t.Errorf("small: %s %v", r.Status, r.Error)
	}
	dead := e.deadOf(t, "big")
	if d := dead["big-invalid"]; len(d) != 1 || d[0].Header.Get(controller.HeaderDeadBodyOmitted) == "" || len(d[0].Data) != 0 || d[0].Header.Get(controller.HeaderJobSeq) == "" {
		t.Errorf("dead letter of big-invalid: %+v; want one, without body, with %s and %s", d, controller.HeaderDeadBodyOmitted, controller.HeaderJobSeq)
	}
	if d := dead["big-headers"]; len(d) != 1 || d[0].Header.Get(controller.HeaderDeadHeadersOmitted) == "" || d[0].Header.Get("X-Pad") != "" || string(d[0].Data) != `{"n":"x"}` {
		t.Errorf("dead letter of big-headers: %d letters; want one with its body, without X-Pad, with %s", len(d), controller.HeaderDeadHeadersOmitted)
	}
	if d := dead["big-valid"]; len(d) != 1 || d[0].Code != 413 {
		t.Errorf("dead letter of big-valid: %+v", d)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, err := e.store.Replay(ctx2, dead["big-invalid"][0]); err == nil {
		t.Error("replayed a dead letter whose body was omitted")
	}
}

// Defect class: refusals that are never counted. A runner that refuses
// every delivery before starting it (503 with Pnp-Not-Started, as when
// always overloaded) is back-pressure, not an attempt; past MaxNotStarted
// deliveries the job fails with the refusal. (A job whose own budget
// cannot suffice no longer gets that far: see
// TestOwnBudgetTooShortEndsPromptlyReliability.)
func TestNotStartedRefusalsEndReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	refusals := refuser(t, e, "ns", protocol.CodeUnavailable)
	startRunner(t, e.srv, echo(t, "ns_ok", nil))
	cfg := fastConfig(t)
	cfg.MaxNotStarted = 5
	startController(t, e, cfg)
	e.submit(t, "ns", "ns-refused", echoIn{N: 1})
	e.submit(t, "ns_ok", "ns-ok", echoIn{N: 1})
	r := e.waitFinal(t, "ns-refused", 20*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != 503 || r.Attempts != 0 {
		t.Fatalf("ns-refused: %s %+v after %d attempts, want failed with the refusal's 503 and no attempt", r.Status, r.Error, r.Attempts)
	}
	if got := refusals.Load(); got != int64(cfg.MaxNotStarted)+1 {
		t.Errorf("refused %d times, want %d (MaxNotStarted, then the final refusal)", got, cfg.MaxNotStarted+1)
	}
	if d := e.deadOf(t, "ns")["ns-refused"]; len(d) != 1 {
		t.Errorf("ns-refused: %d dead letters, want 1", len(d))
	}
	if r := e.waitFinal(t, "ns-ok", 20*time.Second); r.Status != controller.StatusSucceeded {
		t.Errorf("ns-ok: %s %v", r.Status, r.Error)
	}
}

// Defect class: jobs that wait forever. A job of an algorithm nobody
// serves (so its jobs are never pulled) and a job of a served algorithm
// that keeps being refused both fail as expired once older than
// MaxJobAge, with a dead letter.
func TestJobsExpireReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	cfg := fastConfig(t)
	cfg.MaxJobAge = 2 * time.Second
	e.submit(t, "nobody", "exp-1", echoIn{N: 1})
	e.submit(t, "nobody", "exp-2", echoIn{N: 2})
	startController(t, e, cfg)
	for _, id := range []string{"exp-1", "exp-2"} {
		r := e.waitFinal(t, id, 20*time.Second)
		if r.Status != controller.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, "expired") {
			t.Errorf("%s: %s %+v, want failed as expired", id, r.Status, r.Error)
		}
	}
	dead := e.deadOf(t, "nobody")
	if len(dead["exp-1"]) != 1 || len(dead["exp-2"]) != 1 {
		t.Errorf("dead letters: %v, want one per expired job", dead)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "expired jobs still in JOBS")

	// A served job that keeps being refused without starting expires
	// too, in the puller's path.
	refuser(t, e, "served", protocol.CodeUnavailable)
	e.submit(t, "served", "exp-served", echoIn{N: 1})
	r := e.waitFinal(t, "exp-served", 20*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, "expired") {
		t.Errorf("exp-served: %s %+v, want failed as expired", r.Status, r.Error)
	}
}

// Defect class: concurrent replays of one dead letter. Three replays at
// once, from three connections, make one new job and one result: none of
// them fails, the runner runs the job once more, and the new outcome is
// kept (here the job fails again, so it has a new dead letter).
func TestConcurrentReplayIsIdempotentReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "rp", &calls))
	startController(t, e, fastConfig(t))
	stores := make([]*controller.Store, 3)
	for i := range stores {
		js, err := jetstream.New(e.srv.Connect())
		if err != nil {
			t.Fatal(err)
		}
		if stores[i], err = controller.OpenStore(context.Background(), js, controller.StoreConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	const trials = 8
	for trial := range trials {
		id := fmt.Sprintf("rp-%d", trial)
		before := calls.Load()
		e.submit(t, "rp", id, echoIn{N: -1}) // rejected with 422: final
		first := e.waitFinal(t, id, 20*time.Second)
		letters := e.deadOf(t, "rp")[id]
		if first.Status != controller.StatusFailed || len(letters) != 1 {
			t.Fatalf("%s: %s with %d dead letters", id, first.Status, len(letters))
		}
		var wg sync.WaitGroup
		errs := make([]error, len(stores))
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, errs[i] = s.Replay(ctx, letters[0])
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: replay %d: %v", id, i, err)
			}
		}
		var again controller.Result
		natstest.Eventually(t, 20*time.Second, func() bool {
			r, err := e.store.Result(context.Background(), id)
			again = r
			return err == nil && r.Status.Final() && r.DeadLetterSeq != first.DeadLetterSeq
		}, "%s: replayed job has no new outcome (result lost)", id)
		natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "jobs left")
		if n := calls.Load() - before; n != 2 {
			t.Errorf("%s: runner called %d times, want 2 (the job, one replay)", id, n)
		}
		if d := e.deadOf(t, "rp")[id]; len(d) != 1 || d[0].Seq != again.DeadLetterSeq {
			t.Errorf("%s: dead letters %d, want the new one only", id, len(d))
		}
	}
}

// Defect class: a store write retried forever without a word. With the
// DEAD stream gone, a job that must be dead-lettered still ends: the
// write gives up after bounded tries, the job is handed back a bounded
// number of times, then it fails without a dead letter.
func TestDeadLetterStoreFailureEndsReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "nodead", nil))
	cfg := fastConfig(t)
	cfg.Bind = true // so that nothing provisions DEAD again
	startController(t, e, cfg)
	if err := e.js.DeleteStream(context.Background(), controller.DeadStream); err != nil {
		t.Fatal(err)
	}
	e.submit(t, "nodead", "nd-1", map[string]any{"n": "not a number"})
	r := e.waitFinal(t, "nd-1", 40*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != 400 || r.DeadLetterSeq != 0 {
		t.Fatalf("nd-1: %s %+v dead letter %d, want failed with 400 and no dead letter", r.Status, r.Error, r.DeadLetterSeq)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "the job is still in JOBS")
}

// Provision refuses to run while a stream captures the notification
// namespace: a Pnp-Notify there would make the controller write into it.
func TestProvisionRefusesNotifyCaptureReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SPY", Subjects: []string{"notify.orders.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Provision(ctx, e.js, controller.StoreConfig{}); !errors.Is(err, controller.ErrNotifyCaptured) || !strings.Contains(err.Error(), "SPY") {
		t.Fatalf("Provision with stream SPY on notify.orders.>: %v; want ErrNotifyCaptured naming SPY", err)
	}
}

// Defect class: a sweep whose cost grows with the subjects of JOBS, which
// a producer chooses (jobs.<any name>). Past a bound on the subjects it
// lists, the sweep walks the jobs in stream order, a bounded number per
// round: jobs of unserved algorithms still expire, jobs on invalid names
// still fail at once, and jobs of served algorithms are left to their
// puller and succeed.
func TestSweepWalksPastTooManySubjectsReliability(t *testing.T) {
	defer controller.SetSweepMaxSubjects(8)()
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "served", &calls))
	const unserved = 30
	for i := range unserved {
		e.submit(t, fmt.Sprintf("nobody_%d", i), fmt.Sprintf("walk-%d", i), echoIn{N: i})
	}
	for i := range 5 {
		e.publish(t, fmt.Sprintf("Bad-Name-%d", i), fmt.Sprintf("walk-bad-%d", i), []byte(`{"n":1}`), nil)
	}
	for i := range 5 {
		e.submit(t, "served", fmt.Sprintf("walk-served-%d", i), echoIn{N: i})
	}
	cfg := fastConfig(t)
	cfg.MaxJobAge = 2 * time.Second
	startController(t, e, cfg)
	for i := range 5 {
		if r := e.waitFinal(t, fmt.Sprintf("walk-served-%d", i), 20*time.Second); r.Status != controller.StatusSucceeded {
			t.Errorf("walk-served-%d: %s %+v, want succeeded", i, r.Status, r.Error)
		}
	}
	for i := range unserved {
		id := fmt.Sprintf("walk-%d", i)
		if r := e.waitFinal(t, id, 30*time.Second); r.Status != controller.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, "expired") {
			t.Errorf("%s: %s %+v, want failed as expired", id, r.Status, r.Error)
		}
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "jobs still in JOBS")
	dead, err := e.store.DeadLetters(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, d := range dead {
		if strings.HasPrefix(d.JobID, "walk-bad-") && d.Code == 400 {
			bad++
		}
	}
	if bad != 5 {
		t.Errorf("%d jobs on invalid names dead-lettered with 400, want 5", bad)
	}
}
