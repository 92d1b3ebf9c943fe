package controller_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// progressAlgorithm reports progress 0.25 "loading", tells started, waits
// for release, then reports 0.75 (folded by the runner's interval) and
// answers.
func progressAlgorithm(t *testing.T, name string, started chan<- string, release <-chan struct{}) *runner.Algorithm {
	return newAlgorithm(t, name, 20*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		if err := runner.Progress(ctx, 0.25, "loading"); err != nil {
			return echoOut{}, err
		}
		started <- runner.JobID(ctx)
		select {
		case <-release:
		case <-ctx.Done():
			return echoOut{}, ctx.Err()
		}
		if err := runner.Progress(ctx, 0.75, "almost"); err != nil {
			return echoOut{}, err
		}
		return echoOut{N: in.N}, nil
	})
}

// waitRecord polls id's record until ok accepts it.
func waitRecord(t *testing.T, e *env, id string, ok func(controller.Result) bool) (controller.Result, []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if en, err := e.store.Results().Get(context.Background(), id); err == nil {
			var r controller.Result
			if err := json.Unmarshal(en.Value(), &r); err != nil {
				t.Fatalf("record %s: %v", id, err)
			}
			if ok(r) {
				return r, en.Value()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("record of %s never as wanted (writes: %v)", id, e.statuses(t, id))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func publishProgress(t *testing.T, e *env, alg string, p protocol.Progress) {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Publish(protocol.ProgressSubject(alg), b); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestProgressShowsInTheRunningRecord(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	started, release := make(chan string, 1), make(chan struct{})
	r := startRunner(t, e.srv, progressAlgorithm(t, "slow", started, release), echo(t, "other", nil))
	startController(t, e, fastConfig(t))
	e.submit(t, "slow", "job.with.dots-1", echoIn{N: 7})
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("job did not start")
	}
	rec, raw := waitRecord(t, e, "job.with.dots-1", func(r controller.Result) bool { return r.Status == controller.StatusRunning })
	if rec.Progress == nil || rec.Progress.Fraction != 0.25 || rec.Progress.Message != "loading" || rec.Progress.UpdatedAt.IsZero() ||
		rec.Instance != r.instance() || rec.Attempts != 1 || rec.Algorithm != "slow" || rec.FinishedAt != nil {
		t.Fatalf("running record %s", raw)
	}
	checkSchema(t, resultSchema(t), raw)

	// A running record is not an outcome: a wait goes on.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	var seen []controller.Result
	_, err := e.store.WaitResult(ctx, "job.with.dots-1", func(r controller.Result) { seen = append(seen, r) })
	cancel()
	if err == nil || len(seen) == 0 || seen[0].Status != controller.StatusRunning {
		t.Fatalf("WaitResult while running: %v, saw %+v", err, seen)
	}

	// Reports the controller must drop: malformed, out of range, on
	// another algorithm's subject, for a job it does not hold.
	if err := e.nc.Publish(protocol.ProgressSubject("slow"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		alg string
		p   protocol.Progress
	}{
		{"slow", protocol.Progress{JobID: "job.with.dots-1", Fraction: 1.5, Message: "over"}},
		{"slow", protocol.Progress{JobID: "job.with.dots-1", Fraction: 0.5, Message: "\x1b[2Jescape"}},
		{"other", protocol.Progress{JobID: "job.with.dots-1", Fraction: 0.9, Message: "forged"}},
		{"slow", protocol.Progress{JobID: "not-held", Fraction: 0.9, Message: "forged"}},
	} {
		publishProgress(t, e, bad.alg, bad.p)
	}
	// A valid report after them is stored: they were read and dropped.
	publishProgress(t, e, "slow", protocol.Progress{JobID: "job.with.dots-1", Fraction: 0.5, Message: "half", Instance: r.instance()})
	rec, _ = waitRecord(t, e, "job.with.dots-1", func(r controller.Result) bool { return r.Progress != nil && r.Progress.Fraction == 0.5 })
	if rec.Progress.Message != "half" {
		t.Fatalf("progress %+v", rec.Progress)
	}
	if _, err := e.store.Results().Get(context.Background(), "not-held"); err == nil {
		t.Fatal("a report for a job no controller holds made a record")
	}

	close(release)
	res := e.waitResult(t, "job.with.dots-1")
	if res.Status != controller.StatusSucceeded || res.Progress != nil {
		t.Fatalf("final record %+v", res)
	}
	final, rawFinal := e.final(t, "job.with.dots-1")
	checkSchema(t, resultSchema(t), rawFinal)
	writes := e.statuses(t, "job.with.dots-1")
	if writes[len(writes)-1] != string(controller.StatusSucceeded) || !slices.Contains(writes, string(controller.StatusRunning)) {
		t.Fatalf("writes %v", writes)
	}

	// A report arriving after the outcome changes nothing.
	publishProgress(t, e, "slow", protocol.Progress{JobID: "job.with.dots-1", Fraction: 0.9, Message: "late"})
	e.submit(t, "other", "after", echoIn{N: 1})
	e.waitResult(t, "after")
	if again, _ := e.final(t, "job.with.dots-1"); again.Status != final.Status || len(e.statuses(t, "job.with.dots-1")) != len(writes) {
		t.Fatalf("late report changed the record: writes %v", e.statuses(t, "job.with.dots-1"))
	}
}

// A job that reports no progress gets no running record: its only write
// is its outcome.
func TestNoProgressNoExtraWrite(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "echo", nil))
	startController(t, e, fastConfig(t))
	e.submit(t, "echo", "quiet", echoIn{N: 1, SleepMS: 300})
	e.waitResult(t, "quiet")
	if w := e.statuses(t, "quiet"); !slices.Equal(w, []string{string(jobs.StatusSucceeded)}) {
		t.Fatalf("writes %v, want only the outcome", w)
	}
}

// A controller that restarts while a job reports progress leaves a
// running record; the job is redelivered, runs again and ends with one
// final record.
func TestProgressSurvivesControllerRestart(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	started, release := make(chan string, 4), make(chan struct{})
	startRunner(t, e.srv, progressAlgorithm(t, "slow", started, release))
	cfg := fastConfig(t)
	cfg.DrainTimeout = 100 * time.Millisecond
	h := startController(t, e, cfg)
	e.submit(t, "slow", "restart-1", echoIn{N: 3})
	<-started
	waitRecord(t, e, "restart-1", func(r controller.Result) bool { return r.Status == controller.StatusRunning })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	startController(t, e, fastConfig(t))
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("job not redelivered")
	}
	close(release)
	res := e.waitResult(t, "restart-1")
	if res.Status != controller.StatusSucceeded {
		t.Fatalf("final %+v", res)
	}
	e.final(t, "restart-1")
}
