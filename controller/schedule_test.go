package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
)

// A delayed job is reported scheduled until its time, runs once then,
// and neither a restart of the controller nor one of NATS (file storage)
// before its time loses it.
func TestDelayedJobSurvivesRestarts(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "delayed", &calls))
	ctl := startController(t, e, fastConfig(t))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	notBefore := time.Now().Add(4 * time.Second)
	sub, err := e.store.Submit(ctx, "delayed", []byte(`{"n":7}`), jobs.SubmitOptions{ID: "later-1", NotBefore: notBefore})
	if err != nil {
		t.Fatal(err)
	}
	if sub.NotBefore.Before(notBefore) || sub.NotBefore.Sub(notBefore) > time.Second {
		t.Errorf("submission not before %s, want %s rounded up to the second", sub.NotBefore, notBefore)
	}
	r, err := e.store.Result(ctx, "later-1")
	if err != nil || r.Status != jobs.StatusScheduled || r.Algorithm != "delayed" || r.NotBefore == nil || !r.NotBefore.Equal(sub.NotBefore) {
		t.Fatalf("before its time: %+v, %v; want a scheduled record for %s", r, err, sub.NotBefore)
	}
	b, _ := json.Marshal(r)
	checkSchema(t, resultSchema(t), b)

	// Both restarts happen before the job's time.
	if err := ctl.stop(); err != nil {
		t.Fatal(err)
	}
	e.srv.Restart()
	natstest.Eventually(t, 10*time.Second, func() bool { return e.nc.IsConnected() }, "client did not reconnect")
	if time.Now().After(sub.NotBefore) {
		t.Fatalf("restarts took past the job's time (%s): make the delay longer", sub.NotBefore)
	}
	if r, err := e.store.Result(ctx, "later-1"); err != nil || r.Status != jobs.StatusScheduled {
		t.Fatalf("after the restart: %+v, %v; want still scheduled", r, err)
	}
	startController(t, e, fastConfig(t))

	r = e.waitResult(t, "later-1")
	if r.Status != jobs.StatusSucceeded || string(r.Output) != `{"n":7}` {
		t.Fatalf("result %+v, want succeeded with n 7", r)
	}
	if r.StartedAt.Before(sub.NotBefore) {
		t.Errorf("started at %s, before its time %s", r.StartedAt, sub.NotBefore)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("runner called %d times, want 1", n)
	}
	if st := e.statuses(t, "later-1"); len(st) != 1 {
		t.Errorf("record history %v, want one outcome", st)
	}
}

// A delayed job removed before its time never runs.
func TestUnscheduleDelayedJob(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "delayed", &calls))
	startController(t, e, fastConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.store.Submit(ctx, "delayed", []byte(`{"n":1}`), jobs.SubmitOptions{ID: "gone", NotBefore: time.Now().Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.Unschedule(ctx, "gone"); !ok || err != nil {
		t.Fatalf("unschedule: %v, %v; want true", ok, err)
	}
	if ok, err := e.store.Unschedule(ctx, "gone"); ok || err != nil {
		t.Fatalf("second unschedule: %v, %v; want false", ok, err)
	}
	// A marker job submitted after the removed one's time has run: the
	// removed one would have run before it.
	if _, err := e.store.Submit(ctx, "delayed", []byte(`{"n":2}`), jobs.SubmitOptions{ID: "marker", NotBefore: time.Now().Add(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	e.waitResult(t, "marker")
	if _, err := e.store.Result(ctx, "gone"); !errors.Is(err, jobs.ErrNoResult) {
		t.Errorf("removed delayed job: %v, want ErrNoResult", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("runner called %d times, want 1 (the marker)", n)
	}
}

// A periodic schedule fires runs with ids <name>-<time>, each run once,
// survives a restart of NATS, is listed with its next run, and stops when
// removed.
func TestPeriodicSchedule(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "tick", &calls))
	startController(t, e, fastConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sch := jobs.Schedule{Name: "every-second", Algorithm: "tick", Every: time.Second, Input: json.RawMessage(`{"n":3}`)}
	if err := e.store.AddSchedule(ctx, sch); err != nil {
		t.Fatal(err)
	}
	list, err := e.store.ListSchedules(ctx)
	if err != nil || len(list) != 1 || list[0].Name != sch.Name || list[0].Every != time.Second || list[0].Algorithm != "tick" ||
		!list[0].NextRun.After(time.Now().Add(-time.Second)) || string(list[0].Input) != `{"n":3}` {
		t.Fatalf("list: %+v, %v", list, err)
	}
	runs := func() map[string]jobs.Result {
		out := map[string]jobs.Result{}
		keys, err := e.store.Results().ListKeys(ctx)
		if err != nil {
			return out
		}
		for k := range keys.Keys() {
			if strings.HasPrefix(k, sch.Name+"-") {
				if r, err := e.store.Result(ctx, k); err == nil && r.Status.Final() {
					out[k] = r
				}
			}
		}
		return out
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return len(runs()) >= 2 }, "no two runs")
	e.srv.Restart()
	natstest.Eventually(t, 10*time.Second, func() bool { return e.nc.IsConnected() }, "client did not reconnect")
	before := len(runs())
	natstest.Eventually(t, 30*time.Second, func() bool { return len(runs()) >= before+2 }, "no runs after the restart")
	if err := e.store.RemoveSchedule(ctx, sch.Name); err != nil {
		t.Fatal(err)
	}
	if err := e.store.RemoveSchedule(ctx, sch.Name); !errors.Is(err, jobs.ErrNoSchedule) {
		t.Errorf("second removal: %v, want ErrNoSchedule", err)
	}
	// Runs already fired finish; then the count stays.
	var settled int
	natstest.Eventually(t, 20*time.Second, func() bool {
		info, err := e.store.Jobs().Info(ctx)
		if err != nil || info.State.Msgs != 0 {
			return false
		}
		settled = len(runs())
		return true
	}, "fired runs did not finish")
	for id, r := range runs() {
		if r.Status != jobs.StatusSucceeded || string(r.Output) != `{"n":3}` {
			t.Errorf("run %s: %+v", id, r)
		}
		if _, err := time.Parse("20060102T150405Z", strings.TrimPrefix(id, sch.Name+"-")); err != nil {
			t.Errorf("run id %s: want %s-<time>", id, sch.Name)
		}
	}
	if n := calls.Load(); n != int64(settled) {
		t.Errorf("runner called %d times for %d runs: a run ran twice or had no record", n, settled)
	}
	if list, err := e.store.ListSchedules(ctx); err != nil || len(list) != 0 {
		t.Errorf("list after removal: %+v, %v", list, err)
	}
}

// Cancelling a delayed job before its time stores status cancelled and
// takes it out of SCHEDULES: it never runs, a second cancel reports it
// finished, and a job due after it still runs.
func TestCancelDelayedJob(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "delayed", &calls))
	startController(t, e, fastConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.store.Submit(ctx, "delayed", []byte(`{"n":1}`), jobs.SubmitOptions{ID: "later", NotBefore: time.Now().Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.store.Result(ctx, "later"); err != nil || r.Status != jobs.StatusScheduled {
		t.Fatalf("before the cancel: %+v, %v; want status scheduled", r, err)
	}
	r, err := e.store.Cancel(ctx, "later")
	if err != nil || r.Status != jobs.StatusCancelled || r.Algorithm != "delayed" {
		t.Fatalf("cancel: %+v, %v; want status cancelled of algorithm delayed", r, err)
	}
	if _, err := e.store.Scheduled(ctx, "later"); !errors.Is(err, jobs.ErrNoResult) {
		t.Errorf("the cancelled job is still in SCHEDULES: %v", err)
	}
	if _, err := e.store.Cancel(ctx, "later"); !errors.Is(err, jobs.ErrFinished) {
		t.Errorf("second cancel: %v, want ErrFinished", err)
	}
	if _, err := e.store.Submit(ctx, "delayed", []byte(`{"n":2}`), jobs.SubmitOptions{ID: "after", NotBefore: time.Now().Add(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	e.waitResult(t, "after")
	if r, err := e.store.Result(ctx, "later"); err != nil || r.Status != jobs.StatusCancelled {
		t.Errorf("after its time: %+v, %v; want status cancelled", r, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("runner called %d times, want 1 (the later job)", n)
	}
}
