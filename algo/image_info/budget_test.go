package imageinfo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/internal/imagefetch/imagetest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// serve runs image_info with fetcher f on a fresh embedded NATS server.
func serve(t *testing.T, f *imagefetch.Fetcher) *natstest.Server {
	t.Helper()
	s := natstest.Start(t)
	alg, err := New(Config{Fetcher: f})
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(s.Connect(), []*runner.Algorithm{alg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-r.Started():
	case err := <-done:
		t.Fatalf("runner: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("runner did not start")
	}
	return s
}

// A full decode budget answers 503 with Pnp-Not-Started, without
// decoding; once the picture holding the budget is released (and
// collected), the same request succeeds, and a job refused that way is
// retried by the controller without counting an attempt.
func TestDecodeBudgetAdmission(t *testing.T) {
	// 16-bit RGBA 1024×1024: 8 MiB decoded; the budget holds one.
	png := imagetest.PNG(imagetest.PNGSpec{W: 1024, H: 1024, ColorType: imagetest.RGBA, Depth: 16})
	url := "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)
	budget, err := imagefetch.NewBudget(12 << 20)
	if err != nil {
		t.Fatal(err)
	}
	f, err := imagefetch.New(imagefetch.Config{Budget: budget, DecodeWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, f)
	nc := s.Connect()
	body, _ := json.Marshal(Input{ImageURL: url})

	held, err := f.Fetch(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request("run.image_info", body, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rerr := protocol.ReplyError(msg)
	if rerr == nil || rerr.Code != runner.CodeUnavailable || !rerr.NotStarted || msg.Header.Get(protocol.HeaderNotStarted) != "true" || !strings.Contains(rerr.Message, "busy") {
		t.Fatalf("with the budget full: reply %v (headers %v), want 503 busy with Pnp-Not-Started", rerr, msg.Header)
	}

	// The same request as a job: refused while the budget is held (each
	// refusal is a new request on run.image_info), then run once it is
	// free.
	requests := atomic.Int32{}
	if _, err := nc.Subscribe("run.image_info", func(*nats.Msg) { requests.Add(1) }); err != nil {
		t.Fatal(err)
	}
	ctl, err := controller.New(s.Connect(), controller.Config{RetryBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- ctl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ctlDone })
	<-ctl.Ready()
	js, _ := jetstream.New(nc)
	store, err := controller.OpenStore(ctx, js, controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Submit(ctx, Name, body, controller.SubmitOptions{ID: "held-back"}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return requests.Load() >= 3 }, "the job refused and retried")
	held.Release()
	held = nil
	runtime.GC()
	res, err := store.WaitResult(ctx, "held-back", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != controller.StatusSucceeded || res.Attempts != 1 {
		t.Fatalf("job: %s after %d attempts (%+v), want succeeded at the first counted attempt", res.Status, res.Attempts, res.Error)
	}
	// The job's own picture is released; it may await collection.
	natstest.Eventually(t, 10*time.Second, func() bool { runtime.GC(); return budget.InUse() == 0 }, "the budget to empty")
}
