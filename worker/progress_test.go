package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/worker"
)

// A Python worker's pnpworker.progress reaches the job's record through
// the worker protocol, the runner and the controller; broken progress
// lines are logged and dropped, and the request goes on to its outcome.
func TestPythonProgressShowsInTheRecord(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	logs := startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/progress.py")})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, store := provisionJobs(t, ctx, nc)
	runController(t, nc, 0)

	if _, err := store.Submit(ctx, "steps", []byte(`{"ms":4000}`), controller.SubmitOptions{ID: "py.steps"}); err != nil {
		t.Fatal(err)
	}
	var running controller.Result
	natstest.Eventually(t, 30*time.Second, func() bool {
		e, err := store.Results().Get(ctx, "py.steps")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(e.Value(), &running); err != nil {
			t.Fatal(err)
		}
		return true
	}, "no record while the job runs")
	if running.Status != controller.StatusRunning || running.Progress == nil || running.Progress.Fraction != 0.5 || running.Progress.Message != "half way" {
		t.Fatalf("record while running: %+v (progress %+v)", running, running.Progress)
	}
	res, err := store.WaitResult(ctx, "py.steps", nil)
	if err != nil || res.Status != controller.StatusSucceeded || res.Attempts != 1 {
		t.Fatalf("result: %+v, %v", res, err)
	}
	if n := len(logs.lines(map[string]string{"message": "worker sent a bad progress report; ignored"})); n != 4 {
		t.Fatalf("%d bad progress reports logged, want 4", n)
	}
}
