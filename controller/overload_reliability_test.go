package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/runner"
)

// A burst of jobs ten times the runners' capacity must wait, not fail: a
// runner that answers "503 overloaded" did not start the job, so the
// answer is back-pressure and must not use up the job's attempts. Before
// the fix, jobs of a healthy algorithm were dead-lettered with "overloaded"
// whenever MaxInFlight exceeded the runners' capacity for long enough.
func TestOverloadIsNotAnAttemptReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	alg, err := runner.NewAlgorithm(runner.Spec{
		Name:           "narrow",
		Version:        "1.0.0",
		InputSchema:    []byte(echoInputSchema),
		OutputSchema:   []byte(echoOutputSchema),
		Timeout:        5 * time.Second,
		MaxConcurrency: 1,
		MaxPending:     1,
	}, func(ctx context.Context, in echoIn) (echoOut, error) {
		select {
		case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return echoOut{}, ctx.Err()
		}
		return echoOut{N: in.N}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, e.srv, alg)
	cfg := fastConfig(t)
	cfg.MaxInFlight = 16
	cfg.MaxAttempts = 3
	startController(t, e, cfg)

	const burst = 20 // capacity 2 (1 running + 1 waiting)
	for i := range burst {
		e.submit(t, "narrow", fmt.Sprintf("burst-%d", i), echoIn{N: i, SleepMS: 50})
	}
	failed := 0
	for i := range burst {
		r := e.waitResult(t, fmt.Sprintf("burst-%d", i))
		if r.Status != controller.StatusSucceeded {
			failed++
			t.Logf("burst-%d: %s after %d attempts: %v", i, r.Status, r.Attempts, r.Error)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d jobs failed although the runner was only busy", failed, burst)
	}
}
