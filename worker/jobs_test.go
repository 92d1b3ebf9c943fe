package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/worker"
)

// Jobs through the controller lose nothing when the worker process is
// killed with -9 while it holds some of them: each job ends succeeded,
// retried onto the restarted process.
func TestJobsSurviveKill9(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py")})
	old := pid(t, nc)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := controller.Provision(ctx, js, controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := controller.New(nc, controller.Config{
		AckWait: 2 * time.Second, RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond,
		NoRunnerDelay: 50 * time.Millisecond, MaxAttempts: 10,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctlCtx, stopCtl := context.WithCancel(context.Background())
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- ctl.Run(ctlCtx) }()
	t.Cleanup(func() { stopCtl(); <-ctlDone })

	const jobs = 40
	ids := make([]string, jobs)
	for i := range jobs {
		sub, err := store.Submit(ctx, "sleep", fmt.Appendf(nil, `{"ms":%d}`, 50+i%5*20), controller.SubmitOptions{ID: fmt.Sprintf("job-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = sub.ID
	}
	// Kill the process once it is busy with some of the jobs.
	natstest.Eventually(t, 20*time.Second, func() bool {
		m, err := nc.Request("$SRV.STATS.sleep", nil, time.Second)
		return err == nil && !strings.Contains(string(m.Data), `"in_flight":0`)
	}, "no job reached the worker")
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := store.WaitResult(ctx, id, nil)
			if err != nil {
				t.Errorf("job %s: %v", id, err)
				return
			}
			if r.Status != controller.StatusSucceeded {
				t.Errorf("job %s: %s %v", id, r.Status, r.Error)
			}
		}()
	}
	wg.Wait()
	if p := pid(t, nc); p == old {
		t.Fatalf("the worker process was not replaced")
	}
}

// A cancelled job stops in the worker process: the runner cancels the
// request, the worker protocol's cancel reaches the process, which
// answers and keeps serving; the job's record is the cancelled one.
func TestCancelledJobStopsInTheWorker(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	logs := startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py")})
	first := pid(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, store := provisionJobs(t, ctx, nc)
	runController(t, nc, 0)

	if _, err := store.Submit(ctx, "sleep", []byte(`{"ms":20000}`), controller.SubmitOptions{ID: "long-sleep"}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		m, err := nc.Request("$SRV.STATS.sleep", nil, time.Second)
		return err == nil && strings.Contains(string(m.Data), `"in_flight":1`)
	}, "the job did not start")
	if r, err := store.Cancel(ctx, "long-sleep"); err != nil || r.Status != controller.StatusCancelled {
		t.Fatalf("cancel: %+v, %v", r, err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines(map[string]string{"message": "cancelled request answered", "algorithm": "sleep"})) == 1
	}, "the worker process did not answer the cancel")
	res, err := store.WaitResult(ctx, "long-sleep", nil)
	if err != nil || res.Status != controller.StatusCancelled {
		t.Fatalf("result: %+v, %v", res, err)
	}
	if p := pid(t, nc); p != first {
		t.Fatalf("the worker was restarted (pid %d -> %d)", first, p)
	}
}
