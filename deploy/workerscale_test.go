package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

// syncBuffer is a log a worker writes from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A runner user of nats.conf may not read consumer info, so a worker with
// --worker-procs MIN:MAX cannot see the JOBS backlog: the read is denied,
// logged once, and the worker scales on what the runner's admission shows
// — jobs the controller dispatched and that wait in the process. Every
// job succeeds once; the consumer info reads are the user's only denied
// actions.
func TestWorkerScalesUnderRunnerRole(t *testing.T) {
	setPasswords(t)
	py := python.Find(t)
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c := connect(t, d.url, "py_runner")
	notes := filepath.Join(t.TempDir(), "executions")
	logs := &syncBuffer{}
	js := c.js(t)
	w, err := worker.New(c.Conn, worker.Config{
		Command:       []string{py, "../sdk/python/pnpworker.py", "../worker/testdata/scaling.py"},
		Env:           []string{"SCALING_LOG=" + notes, "SCALING_NAME=text_stats"},
		Procs:         1,
		MaxProcs:      2,
		ScaleInterval: 100 * time.Millisecond,
		ScaleIdle:     time.Hour,
		Backlog:       func(ctx context.Context, alg string) (int, error) { return jobs.Waiting(ctx, js, alg) },
		Logger:        zerolog.New(logs),
		RunnerOptions: c.runnerOptions(runner.WithoutProvisioning()),
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	}()

	const n = 8
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprint("scale-", i)
		if _, err := d.store.Submit(ctx, "text_stats", fmt.Appendf(nil, `{"token":%q,"ms":600}`, ids[i]), controller.SubmitOptions{ID: ids[i]}); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return strings.Contains(logs.String(), "worker scaled up") },
		"the worker did not scale up on the runner's admission")
	if !strings.Contains(logs.String(), "cannot read the jobs backlog") {
		t.Error("the denied JOBS backlog read is not logged")
	}
	c.expectDenied(t, appAPIPrefix+".CONSUMER.INFO.JOBS."+jobs.ConsumerName("text_stats"))
	for _, id := range ids {
		r, err := d.store.WaitResult(ctx, id, nil)
		if err != nil || r.Status != controller.StatusSucceeded {
			t.Fatalf("job %s: %+v, %v", id, r, err)
		}
	}
	b, err := os.ReadFile(notes)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if k := strings.Count(string(b), "start "+id+" "); k != 1 {
			t.Errorf("job %s ran %d times", id, k)
		}
	}
	for _, v := range c.violations() {
		if !strings.Contains(v, `"`+appAPIPrefix+`.CONSUMER.INFO.JOBS.`) {
			t.Errorf("py_runner: unexpected permission violation: %s", v)
		}
	}
}
