package controller_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/jobs"
)

// cancelJob cancels id, failing the test on an error.
func cancelJob(t *testing.T, e *env, id string) controller.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.store.Cancel(ctx, id)
	if err != nil {
		t.Fatalf("cancel %s: %v", id, err)
	}
	if r.Status != controller.StatusCancelled || r.JobID != id {
		t.Fatalf("cancel %s returned %+v", id, r)
	}
	return r
}

// waitEmpty waits until JOBS holds no job.
func waitEmpty(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for e.jobsLeft(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still in JOBS", e.jobsLeft(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCancelWaitingJobNeverRuns(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	ctx := context.Background()
	notes, err := e.nc.SubscribeSync("notify.cancel_test")
	if err != nil {
		t.Fatal(err)
	}
	// Two jobs wait while no runner exists: one named by the producer
	// (with a notification subject), one named by the controller's rule
	// for jobs without an id.
	if _, err := e.store.Submit(ctx, "echo", []byte(`{"n":1}`), controller.SubmitOptions{ID: "waiting-1", Notify: "notify.cancel_test"}); err != nil {
		t.Fatal(err)
	}
	ack, err := e.js.Publish(ctx, controller.JobsSubjectPrefix+"echo", []byte(`{"n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.store.Jobs().GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	autoID := fmt.Sprintf("auto-%d-%d", ack.Sequence, raw.Time.UnixMilli())

	cancelJob(t, e, "waiting-1")
	rec := cancelJob(t, e, autoID)
	if rec.Algorithm != "echo" || rec.Attempts != 0 || rec.FinishedAt == nil {
		t.Fatalf("cancelled record %+v", rec)
	}
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "echo", &calls))
	startController(t, e, fastConfig(t))
	e.submit(t, "echo", "after", echoIn{N: 3})
	if r := e.waitResult(t, "after"); r.Status != controller.StatusSucceeded {
		t.Fatalf("later job: %+v", r)
	}
	waitEmpty(t, e)
	if n := calls.Load(); n != 1 {
		t.Fatalf("the algorithm ran %d times, want 1 (only the job that was not cancelled)", n)
	}
	sch := resultSchema(t)
	for _, id := range []string{"waiting-1", autoID} {
		res, b := e.final(t, id)
		if res.Status != controller.StatusCancelled {
			t.Fatalf("job %s: final status %s", id, res.Status)
		}
		checkSchema(t, sch, b)
	}
	m, err := notes.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no notification of the cancelled job: %v", err)
	}
	n, err := controller.DecodeNotification(m)
	if err != nil || n.JobID != "waiting-1" || n.Status != controller.StatusCancelled {
		t.Fatalf("notification %+v, %v", n, err)
	}
}

func TestCancelRunningJobCancelsItsContext(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	started := make(chan struct{}, 10)
	stopped := make(chan error, 10)
	alg := newAlgorithm(t, "slow", 30*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		calls.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		stopped <- ctx.Err()
		return echoOut{}, ctx.Err()
	})
	startRunner(t, e.srv, alg)
	startController(t, e, fastConfig(t))
	e.submit(t, "slow", "running-1", echoIn{N: 1})
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the job did not start")
	}
	cancelJob(t, e, "running-1")
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the job's context ended with %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the running job's context was not cancelled")
	}
	waitEmpty(t, e)
	res, _ := e.final(t, "running-1")
	if res.Status != controller.StatusCancelled {
		t.Fatalf("final status %s", res.Status)
	}
	// Acked, not retried: one more job goes through and the cancelled
	// one never ran again.
	e.submit(t, "slow", "probe-after", echoIn{N: 2})
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the next job did not start")
	}
	cancelJob(t, e, "probe-after")
	waitEmpty(t, e)
	if n := calls.Load(); n != 2 {
		t.Fatalf("the algorithm ran %d times, want 2 (each job once)", n)
	}
	if got := e.statuses(t, "running-1"); len(got) != 1 {
		t.Fatalf("running-1 was written %v, want only its cancelled record", got)
	}
}

func TestCancelFinishedAndUnknown(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "echo", nil))
	startController(t, e, fastConfig(t))
	e.submit(t, "echo", "done-1", echoIn{N: 1})
	e.submit(t, "echo", "bad-1", echoIn{N: -1})
	e.waitResult(t, "done-1")
	e.waitResult(t, "bad-1")
	ctx := context.Background()
	for id, want := range map[string]controller.Status{"done-1": controller.StatusSucceeded, "bad-1": controller.StatusFailed} {
		_, err := e.store.Cancel(ctx, id)
		var fin *jobs.FinishedError
		if !errors.As(err, &fin) || !errors.Is(err, jobs.ErrFinished) || fin.Result.Status != want {
			t.Fatalf("cancel of finished %s: %v, want ErrFinished with status %s", id, err, want)
		}
	}
	cancelJob(t, e, func() string {
		// A waiting job of an algorithm nobody serves: cancelled once,
		// then it is finished too.
		e.submit(t, "nobody", "lonely", echoIn{N: 1})
		return "lonely"
	}())
	var fin *jobs.FinishedError
	if _, err := e.store.Cancel(ctx, "lonely"); !errors.As(err, &fin) || fin.Result.Status != controller.StatusCancelled {
		t.Fatalf("second cancel: %v, want ErrFinished (cancelled)", err)
	}
	if _, err := e.store.Cancel(ctx, "never-submitted"); !errors.Is(err, jobs.ErrUnknownJob) {
		t.Fatalf("cancel of an unknown job: %v, want ErrUnknownJob", err)
	}
	if _, err := e.store.Cancel(ctx, "bad id"); err == nil {
		t.Fatal("cancel of an invalid id succeeded")
	}
}

// TestCancelRacesCompletion cancels jobs while they finish: each job
// ends with exactly one final record, the one the winner wrote.
func TestCancelRacesCompletion(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "echo", nil))
	startController(t, e, fastConfig(t))
	const n = 40
	ids := jobID("race")
	for i := range n {
		e.submit(t, "echo", ids(i), echoIn{N: i, SleepMS: i % 7})
	}
	type outcome struct {
		cancelled bool
		status    controller.Status
	}
	got := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%9) * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := e.store.Cancel(ctx, ids(i))
			var fin *jobs.FinishedError
			switch {
			case err == nil:
				got[i] = outcome{cancelled: true}
			case errors.As(err, &fin):
				got[i] = outcome{status: fin.Result.Status}
			default:
				t.Errorf("cancel %s: %v", ids(i), err)
			}
		}()
	}
	wg.Wait()
	waitEmpty(t, e)
	var cancelled, succeeded int
	for i := range n {
		res, _ := e.final(t, ids(i))
		switch {
		case got[i].cancelled && res.Status != controller.StatusCancelled:
			t.Errorf("job %s: cancel succeeded but the final record is %s", ids(i), res.Status)
		case !got[i].cancelled && res.Status != got[i].status:
			t.Errorf("job %s: cancel saw %s but the final record is %s", ids(i), got[i].status, res.Status)
		case res.Status == controller.StatusCancelled:
			cancelled++
		case res.Status == controller.StatusSucceeded:
			succeeded++
		}
	}
	t.Logf("%d cancelled, %d succeeded first", cancelled, succeeded)
}

func TestPurgeDropsWaitingJobs(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	for i := range 5 {
		e.submit(t, "gone", fmt.Sprintf("p-%d", i), echoIn{N: i})
	}
	e.submit(t, "kept", "k-1", echoIn{N: 1})
	n, err := e.store.Purge(context.Background(), "gone")
	if err != nil || n != 5 {
		t.Fatalf("purge: %d, %v; want 5", n, err)
	}
	if left := e.jobsLeft(t); left != 1 {
		t.Fatalf("%d jobs left, want the other algorithm's 1", left)
	}
	if _, err := e.store.Cancel(context.Background(), "p-0"); !errors.Is(err, jobs.ErrUnknownJob) {
		t.Fatalf("a purged job: %v, want ErrUnknownJob", err)
	}
	if _, err := e.store.Purge(context.Background(), "Not-A-Name"); err == nil {
		t.Fatal("purge of an invalid name succeeded")
	}
}

// TestCancelReachesLateRequest: a runner that hears of the cancel before
// the job's request arrives refuses the request unrun.
func TestCancelReachesLateRequest(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "echo", &calls))
	// The cancel message first, then the request, as when the controller
	// read the record just before the cancel stored it.
	if err := e.nc.Publish("cancel.echo", []byte("late-1")); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: "run.echo", Data: []byte(`{"n":1}`), Header: nats.Header{"Pnp-Job-Id": {"late-1"}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := e.nc.RequestMsg(msg, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if reply.Header.Get("Nats-Service-Error-Code") == "503" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request of a cancelled job answered %q", reply.Data)
		}
		// The cancel message may not have reached the runner yet.
		time.Sleep(20 * time.Millisecond)
		calls.Store(0)
		if err := e.nc.Publish("cancel.echo", []byte("late-1")); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 0 {
		t.Fatalf("the cancelled job ran %d times", calls.Load())
	}
}

// Config.Declare and Config.KeepConsumers make algorithms known before any
// runner registers: jobs for them are accepted (scale from zero), and
// they do not expire as unserved.
func TestControllerDeclaresAlgorithms(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	ctx := context.Background()
	for _, alg := range []string{"declared_one", "kept_one"} {
		if err := e.store.CheckKnown(ctx, alg); !errors.Is(err, jobs.ErrUnknownAlgorithm) {
			t.Fatalf("%s before the controller: %v, want ErrUnknownAlgorithm", alg, err)
		}
	}
	cfg := fastConfig(t)
	cfg.Declare = []string{"declared_one"}
	cfg.KeepConsumers = []string{"kept_one"}
	startController(t, e, cfg)
	for _, alg := range []string{"declared_one", "kept_one"} {
		if err := e.store.CheckKnown(ctx, alg); err != nil {
			t.Fatalf("%s after the controller started: %v", alg, err)
		}
		if _, err := e.store.Submit(ctx, alg, []byte(`{"n":1}`), controller.SubmitOptions{ID: alg + "-job", RequireKnown: true}); err != nil {
			t.Fatalf("submit to %s: %v", alg, err)
		}
	}
	var unknown *jobs.UnknownAlgorithmError
	_, err := e.store.Submit(ctx, "kept_on", []byte(`{"n":1}`), controller.SubmitOptions{RequireKnown: true})
	if !errors.As(err, &unknown) || len(unknown.Suggestions) == 0 || unknown.Suggestions[0] != "kept_one" {
		t.Fatalf("submit to a typo: %v, want an UnknownAlgorithmError suggesting kept_one", err)
	}
}

// A job cancelled while a controller runs and no runner serves it is
// retired when a runner comes, not run: the controller heard the cancel
// mark (cancelwatch.go) and read the record. Jobs stored after the cancel
// run.
func TestCancelWhileControllerWaits(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startController(t, e, fastConfig(t))
	ctx := context.Background()
	for _, id := range []string{"held-1", "held-2"} {
		if _, err := e.store.Submit(ctx, "echo", []byte(`{"n":1}`), controller.SubmitOptions{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	cancelJob(t, e, "held-1")
	e.submit(t, "echo", "later-1", echoIn{N: 2})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "echo", &calls))
	for _, id := range []string{"held-2", "later-1"} {
		if r := e.waitResult(t, id); r.Status != controller.StatusSucceeded {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	waitEmpty(t, e)
	if n := calls.Load(); n != 2 {
		t.Fatalf("the algorithm ran %d times, want 2 (not the cancelled job)", n)
	}
	if got := e.statuses(t, "held-1"); len(got) != 1 || got[0] != string(controller.StatusCancelled) {
		t.Fatalf("held-1 was written %v, want only its cancelled record", got)
	}
}

// A waiting job of any priority is found and cancelled, and purge drops
// every priority's waiting jobs.
func TestCancelAndPurgeEveryPriority(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	ctx := context.Background()
	for _, p := range jobs.Priorities {
		for i := range 2 {
			id := fmt.Sprintf("%s-%d", p, i)
			if _, err := e.store.Submit(ctx, "echo", []byte(`{"n":1}`), controller.SubmitOptions{ID: id, Priority: p}); err != nil {
				t.Fatal(err)
			}
		}
		if rec := cancelJob(t, e, string(p)+"-0"); rec.Algorithm != "echo" {
			t.Fatalf("cancelled %s-0: %+v", p, rec)
		}
	}
	n, err := e.store.Purge(ctx, "echo")
	if err != nil || n != 6 {
		t.Fatalf("purge: %d, %v; want the 6 waiting jobs of every priority", n, err)
	}
	if left := e.jobsLeft(t); left != 0 {
		t.Fatalf("%d jobs left in JOBS", left)
	}
}
