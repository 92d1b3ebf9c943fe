package controller_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/jsz"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
)

// readLag reads alg's backlog from the server's /jsz as KEDA's
// nats-jetstream scaler does, with the embedded server's account "$G".
func readLag(t *testing.T, e *env, alg string) jsz.Reading {
	t.Helper()
	return readConsumerLag(t, e, jobs.ConsumerName(alg))
}

// readConsumerLag reads the lag of the consumer of JOBS named consumer as
// readLag does.
func readConsumerLag(t *testing.T, e *env, consumer string) jsz.Reading {
	t.Helper()
	u, err := url.Parse(e.srv.MonitorURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := jsz.Read(ctx, nil, jsz.Target{Account: "$G", Stream: jobs.JobsStream, Consumer: consumer}, u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// consumerThreshold returns the inactive threshold of alg's consumer, and
// false when there is none.
func consumerThreshold(t *testing.T, e *env, alg string) (time.Duration, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.js.Consumer(ctx, jobs.JobsStream, jobs.ConsumerName(alg))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.CachedInfo().Config.InactiveThreshold, true
}

// The backlog of an algorithm no runner has ever served is visible where
// KEDA's nats-jetstream scaler reads it, from its first job: its consumer
// exists with num_pending 5 for 5 jobs (not the stream's last sequence,
// which the scaler reads when the consumer is missing), and stays while
// the jobs wait however long nobody pulls. A runner starting drains it,
// the lag goes to 0, and once no job waits and no runner is live the
// consumer expires as before.
func TestBacklogVisibleFromZeroReliability(t *testing.T) {
	t.Cleanup(controller.SetBacklogPeriod(100 * time.Millisecond))
	e := newEnvWith(t, controller.StoreConfig{}, natstest.Monitor())
	cfg := fastConfig(t)
	cfg.ConsumerInactiveThreshold = time.Second
	startController(t, e, cfg)

	// Jobs of a served algorithm first, so that the stream's last
	// sequence (8) is not the backlog (5).
	startRunner(t, e.srv, echo(t, "other", nil))
	for i := range 3 {
		e.submit(t, "other", fmt.Sprintf("other-%d", i), echoIn{N: i})
	}
	for i := range 3 {
		e.waitResult(t, fmt.Sprintf("other-%d", i))
	}
	const alg = "scale_me"
	for i := range 5 {
		e.submit(t, alg, fmt.Sprintf("job-%d", i), echoIn{N: i})
	}
	eventually(t, 10*time.Second, func() bool { return readLag(t, e, alg).ConsumerFound }, "no consumer for the waiting jobs")
	if r := readLag(t, e, alg); r.Lag != 5 || !r.Active(0) || r.Active(5) {
		t.Fatalf("lag %+v, want 5, active above activationLagThreshold 0 and not above 5", r)
	}
	if th, _ := consumerThreshold(t, e, alg); th != 0 {
		t.Fatalf("consumer of waiting jobs has inactive threshold %s, want none", th)
	}
	// Several times the configured threshold without a pull: still there.
	deadline := time.Now().Add(4 * cfg.ConsumerInactiveThreshold)
	for time.Now().Before(deadline) {
		if r := readLag(t, e, alg); !r.ConsumerFound || r.Lag != 5 {
			t.Fatalf("while jobs wait: %+v, want the consumer with lag 5", r)
		}
		time.Sleep(100 * time.Millisecond)
	}

	rh := startRunner(t, e.srv, echo(t, alg, nil))
	for i := range 5 {
		if r := e.waitResult(t, fmt.Sprintf("job-%d", i)); r.Status != controller.StatusSucceeded {
			t.Fatalf("job-%d: %s", i, r.Status)
		}
	}
	eventually(t, 10*time.Second, func() bool { r := readLag(t, e, alg); return r.ConsumerFound && r.Lag == 0 }, "lag not 0 after the runner drained it")
	if readLag(t, e, alg).Active(0) {
		t.Fatal("scaler active with nothing waiting")
	}

	rh.stop()
	eventually(t, 10*time.Second, func() bool { th, ok := consumerThreshold(t, e, alg); return !ok || th == cfg.ConsumerInactiveThreshold },
		"drained consumer did not get its inactive threshold back")
	eventually(t, 15*time.Second, func() bool { _, ok := consumerThreshold(t, e, alg); return !ok }, "drained consumer without runner not deleted")
}

// Config.KeepConsumers: the consumer of a listed algorithm exists from the
// controller's start, with no job and no runner ever, and stays; with no
// consumer the scaler would read the stream's last sequence as backlog.
func TestKeepConsumersReliability(t *testing.T) {
	t.Cleanup(controller.SetBacklogPeriod(100 * time.Millisecond))
	e := newEnvWith(t, controller.StoreConfig{}, natstest.Monitor())
	e.submit(t, "elsewhere", "j1", echoIn{N: 1}) // last sequence 1
	if r := readLag(t, e, "kept"); r.ConsumerFound || r.Lag != 1 {
		t.Fatalf("before the controller: %+v, want no consumer and the last sequence 1", r)
	}
	cfg := fastConfig(t)
	cfg.ConsumerInactiveThreshold = time.Second
	cfg.KeepConsumers = []string{"kept"}
	startController(t, e, cfg)
	eventually(t, 10*time.Second, func() bool { return readLag(t, e, "kept").ConsumerFound }, "kept consumer not created")
	deadline := time.Now().Add(3 * cfg.ConsumerInactiveThreshold)
	for time.Now().Before(deadline) {
		if r := readLag(t, e, "kept"); !r.ConsumerFound || r.Lag != 0 || r.Active(0) {
			t.Fatalf("kept consumer: %+v, want it with lag 0", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if th, _ := consumerThreshold(t, e, "kept"); th != 0 {
		t.Fatalf("kept consumer has inactive threshold %s", th)
	}
}

// A flood of jobs for many names nobody serves does not create more
// consumers than MaxAlgorithms.
func TestBacklogConsumersBoundedReliability(t *testing.T) {
	t.Cleanup(controller.SetBacklogPeriod(100 * time.Millisecond))
	e := newEnv(t, controller.StoreConfig{})
	cfg := fastConfig(t)
	cfg.MaxAlgorithms = 4
	var logs lineLog
	cfg.Logger = cfg.Logger.Output(&logs)
	startController(t, e, cfg)
	for i := range 10 {
		e.submit(t, fmt.Sprintf("flood_%02d", i), fmt.Sprintf("f%d", i), echoIn{N: i})
	}
	eventually(t, 10*time.Second, func() bool { return logs.contains(`"without_consumer":6`) }, "no warning about the algorithms left without a consumer")
	if got := consumerNames(t, e); len(got) != cfg.MaxAlgorithms {
		t.Fatalf("%d consumers, want %d: %v", len(got), cfg.MaxAlgorithms, got)
	}
}
