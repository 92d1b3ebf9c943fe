package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
)

// Under nats.conf's roles, a controller run as the Kubernetes base runs
// it (--no-provision --keep-consumers …) declares the algorithms it keeps
// consumers for: before any of their runners has ever registered, the
// producer's jobs for them are accepted with the typo check on, while a
// misspelt name is refused naming the kept one. No role hits a permission
// violation.
func TestKeptAlgorithmsAreKnownUnderNatsConf(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	if _, err := controller.Provision(ctx, admin.js(t), controller.StoreConfig{}); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	producer := connect(t, url, "producer")
	store, err := controller.OpenStore(ctx, producer.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const alg = "language_detection"
	in := []byte(`{"text":"Guten Morgen, wie geht es dir heute?"}`)
	if _, err := store.Submit(ctx, alg, in, controller.SubmitOptions{ID: "early", RequireKnown: true}); !errors.Is(err, jobs.ErrUnknownAlgorithm) {
		t.Fatalf("before any controller declared it: %v, want %v", err, jobs.ErrUnknownAlgorithm)
	}

	ctlC := connect(t, url, "controller")
	ctl, err := controller.New(ctlC.Conn, controller.Config{Bind: true, KeepConsumers: []string{alg, "meme_classifier"}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
		ctlC.expectClean(t)
	}()
	select {
	case <-ctl.Ready():
	case err := <-done:
		t.Fatalf("controller stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("controller not ready")
	}
	if _, err := store.Submit(ctx, alg, in, controller.SubmitOptions{ID: "kept-1", RequireKnown: true}); err != nil {
		t.Fatalf("submit to a kept algorithm with no runner: %v", err)
	}
	var unknown *jobs.UnknownAlgorithmError
	_, err = store.Submit(ctx, "meme_clasifier", in, controller.SubmitOptions{RequireKnown: true})
	if !errors.As(err, &unknown) || len(unknown.Suggestions) == 0 || unknown.Suggestions[0] != "meme_classifier" {
		t.Fatalf("submit to a misspelt algorithm: %v, want a refusal suggesting meme_classifier", err)
	}
	producer.expectClean(t)
	admin.expectClean(t)
}

// Under nats.conf, runners live in their team's account: a cancel the
// admin publishes in APP (cancel.<algorithm>, a service the team exports)
// reaches the team's runner, which cancels the running job's context.
func TestCancelReachesTeamRunner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	started := make(chan struct{}, 1)
	stopped := make(chan error, 1)
	slow, err := runner.NewRawAlgorithm(runner.Spec{Name: "language_detection", Version: "1.0.0", Timeout: time.Minute,
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`)},
		func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			started <- struct{}{}
			<-ctx.Done()
			stopped <- ctx.Err()
			return nil, ctx.Err()
		})
	if err != nil {
		t.Fatal(err)
	}
	rc, stopRunner := runUnder(t, url, "text_runner", slow)
	defer stopRunner()

	ctlC := connect(t, url, "controller")
	ctl, err := controller.New(ctlC.Conn, controller.Config{Bind: true})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
		ctlC.expectClean(t)
	}()
	producer := connect(t, url, "producer")
	ps, err := controller.OpenStore(ctx, producer.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Submit(ctx, "language_detection", []byte(`{"text":"hallo"}`), controller.SubmitOptions{ID: "team-cancel"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the job did not start")
	}
	as, err := controller.OpenStore(ctx, admin.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.Cancel(ctx, "team-cancel"); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the job's context ended with %v, want context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("the cancel did not reach the runner in the team's account")
	}
	res, err := ps.WaitResult(ctx, "team-cancel", nil)
	if err != nil || res.Status != controller.StatusCancelled {
		t.Fatalf("result %+v, %v; want cancelled", res, err)
	}
	rc.expectClean(t)
	admin.expectClean(t)
	producer.expectClean(t)
}
