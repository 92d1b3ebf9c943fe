package deploy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
)

// The controller's expiry sweep works under its nats.conf permissions: a
// job for an algorithm nobody serves fails as expired, its dead letter is
// stored, it leaves JOBS, and no role hits a permission violation. The
// producer's runner check (`pnp submit`) works under its role too.
func TestExpirySweepUnderRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	url := startServer(t)
	admin := connect(t, url, "admin")
	if _, err := controller.Provision(ctx, admin.js(t), controller.StoreConfig{}); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	ctlC := connect(t, url, "controller")
	ctl, err := controller.New(ctlC.Conn, controller.Config{Bind: true, MaxJobAge: time.Second})
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
	store, err := controller.OpenStore(ctx, producer.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := store.RegisteredRunners(ctx, "nobody"); err != nil || n != 0 {
		t.Errorf("producer's runner check: %d, %v; want 0 runners", n, err)
	}
	if _, err := store.Submit(ctx, "nobody", []byte(`{}`), controller.SubmitOptions{ID: "sweep-1"}); err != nil {
		t.Fatal(err)
	}
	r, err := store.WaitResult(ctx, "sweep-1", nil)
	if err != nil {
		t.Fatalf("no outcome for the job of an unserved algorithm: %v", err)
	}
	if r.Status != controller.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, "expired") || r.DeadLetterSeq == 0 {
		t.Errorf("sweep-1: %s %+v dead letter %d; want failed as expired, dead-lettered", r.Status, r.Error, r.DeadLetterSeq)
	}
	info, err := admin.js(t).Stream(ctx, controller.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); info.CachedInfo().State.Msgs != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the expired job is still in JOBS")
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := info.Info(ctx); err != nil {
			t.Fatal(err)
		}
	}
	producer.expectClean(t)
}
