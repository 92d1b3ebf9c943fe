package controller_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
)

// With a backlog of low jobs waiting, high jobs submitted after it start
// before most of the backlog, and low jobs still start meanwhile: about 1
// of every 10 dispatches while both wait (jobs.DispatchWeights; the
// normal turns go to high, as no normal job waits).
func TestHighJobsOvertakeLowBacklog(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var (
		mu    sync.Mutex
		order []int // input n of each job, in the order the runner starts them
	)
	alg := newAlgorithm(t, "prio", 10*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		mu.Lock()
		order = append(order, in.N)
		mu.Unlock()
		select {
		case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return echoOut{}, ctx.Err()
		}
		return echoOut{N: in.N}, nil
	})
	startRunner(t, e.srv, alg)
	cfg := fastConfig(t)
	cfg.MaxInFlight = 2
	startController(t, e, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	submit := func(id string, n int, p jobs.Priority) {
		t.Helper()
		body := fmt.Appendf(nil, `{"n":%d,"sleep_ms":40}`, n)
		if _, err := e.store.Submit(ctx, "prio", body, jobs.SubmitOptions{ID: id, Priority: p}); err != nil {
			t.Fatal(err)
		}
	}
	// One high and one low job first, so that the controller has their
	// consumers (made when the first such job is seen) before the
	// measurement.
	for _, p := range []jobs.Priority{jobs.PriorityHigh, jobs.PriorityLow} {
		submit("warm-"+string(p), -1, p)
		if r := e.waitResult(t, "warm-"+string(p)); r.Status != jobs.StatusSucceeded {
			t.Fatalf("warm-up: %+v", r)
		}
	}
	const lows, highs = 200, 40
	for i := range lows {
		submit(fmt.Sprintf("low-%d", i), i, jobs.PriorityLow)
	}
	for i := range highs {
		submit(fmt.Sprintf("high-%d", i), 1000+i, jobs.PriorityHigh)
	}
	for i := range highs {
		if r := e.waitResult(t, fmt.Sprintf("high-%d", i)); r.Status != jobs.StatusSucceeded {
			t.Fatalf("high-%d: %+v", i, r)
		}
	}
	mu.Lock()
	seen := append([]int(nil), order...)
	mu.Unlock()
	// From the first high job started to the last: how many low ones
	// started among them.
	first, last := -1, -1
	lowsBefore := 0
	for i, n := range seen {
		if n >= 1000 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	for _, n := range seen[2:first] { // the warm-up jobs first
		if n >= 0 && n < 1000 {
			lowsBefore++
		}
	}
	lowsAmong := 0
	for _, n := range seen[first : last+1] {
		if n >= 0 && n < 1000 {
			lowsAmong++
		}
	}
	lowsDone := lowsBefore + lowsAmong
	share := float64(lowsAmong) / float64(last-first+1)
	t.Logf("%d low jobs started before the first high one, %d among the %d dispatches until the last high one: low share %.2f (weights 7/2/1 give 0.10); %d of the %d low jobs started before every high job had",
		lowsBefore, lowsAmong, last-first+1, share, lowsDone, lows)
	if lowsDone > lows/2 {
		t.Errorf("%d of %d low jobs started before the last high one: the high ones did not go first", lowsDone, lows)
	}
	if lowsAmong == 0 {
		t.Errorf("no low job started while high ones waited: low jobs starve")
	}
	if share > 0.35 {
		t.Errorf("low share %.2f while high jobs waited, want about 0.10", share)
	}
	// And the backlog drains.
	natstest.Eventually(t, 60*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "the low backlog did not drain")
	if r := e.waitResult(t, fmt.Sprintf("low-%d", lows-1)); r.Status != jobs.StatusSucceeded {
		t.Errorf("last low job: %+v", r)
	}
}

// The backlog of each priority is visible where KEDA reads it, on the
// consumer of that priority (jobs.PriorityConsumerName), from the first
// job of an algorithm no runner has served; the consumers of a kept
// algorithm exist for every priority with no job at all, so that no
// trigger of its ScaledObject reads the stream's last sequence.
func TestBacklogVisiblePerPriorityReliability(t *testing.T) {
	t.Cleanup(controller.SetBacklogPeriod(100 * time.Millisecond))
	e := newEnvWith(t, controller.StoreConfig{}, natstest.Monitor())
	cfg := fastConfig(t)
	cfg.ConsumerInactiveThreshold = time.Second
	cfg.KeepConsumers = []string{"kept"}
	startController(t, e, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const alg = "scale_prio"
	want := map[jobs.Priority]int{jobs.PriorityHigh: 3, jobs.PriorityLow: 2}
	for p, n := range want {
		for i := range n {
			if _, err := e.store.Submit(ctx, alg, []byte(`{"n":1}`), jobs.SubmitOptions{ID: fmt.Sprintf("%s-%d", p, i), Priority: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for p, n := range want {
		name := jobs.PriorityConsumerName(alg, p)
		natstest.Eventually(t, 10*time.Second, func() bool { return readConsumerLag(t, e, name).ConsumerFound }, "no consumer "+name+" for the waiting jobs")
		if r := readConsumerLag(t, e, name); r.Lag != int64(n) {
			t.Errorf("%s: lag %+v, want %d", name, r, n)
		}
	}
	// No normal job waits: no consumer for them is made.
	if r := readLag(t, e, alg); r.ConsumerFound {
		t.Errorf("consumer of normal jobs made with none waiting: %+v", r)
	}
	for _, p := range jobs.Priorities {
		name := jobs.PriorityConsumerName("kept", p)
		natstest.Eventually(t, 10*time.Second, func() bool { return readConsumerLag(t, e, name).ConsumerFound }, "kept consumer "+name+" not created")
		if r := readConsumerLag(t, e, name); r.Lag != 0 {
			t.Errorf("kept %s: %+v, want lag 0", name, r)
		}
	}
}
