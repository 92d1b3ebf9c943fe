package controller_test

import (
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
)

// A running record counts the attempt in flight. An attempt that ends
// without an outcome (here a controller stopping past its drain timeout
// hands the job back) is not an attempt: the next delivery must not count
// it because it had reported progress.
func TestProgressHandBackIsNotAnAttempt(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	started, release := make(chan string, 4), make(chan struct{})
	startRunner(t, e.srv, progressAlgorithm(t, "slow", started, release))
	cfg := fastConfig(t)
	cfg.DrainTimeout = 100 * time.Millisecond
	h := startController(t, e, cfg)
	e.submit(t, "slow", "handback-1", echoIn{N: 3})
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("job did not start")
	}
	waitRecord(t, e, "handback-1", func(r controller.Result) bool { return r.Status == controller.StatusRunning })
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
	res := e.waitResult(t, "handback-1")
	if res.Status != controller.StatusSucceeded || res.Attempts != 1 {
		t.Fatalf("final record: status %s, attempts %d; want succeeded after 1 attempt (writes %v)", res.Status, res.Attempts, e.statuses(t, "handback-1"))
	}
}
