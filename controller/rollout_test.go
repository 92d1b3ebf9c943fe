package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"pnpworker/controller"
	"pnpworker/internal/natstest"
	"pnpworker/rollout"
	"pnpworker/runner"
)

// versioned is the echo algorithm at version.
func versioned(t testing.TB, version string) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "echo", Version: version,
		InputSchema: []byte(echoInputSchema), OutputSchema: []byte(echoOutputSchema),
		Timeout: 5 * time.Second, MaxConcurrency: 32,
	}, func(ctx context.Context, in echoIn) (echoOut, error) { return echoOut{N: in.N}, nil })
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func setRoute(t *testing.T, e *env, r rollout.Route) {
	t.Helper()
	st, err := rollout.Provision(context.Background(), e.js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Set(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// A canary route sends its share of jobs to the canary version: with 30 %
// over 1000 jobs, between 20 % and 40 % of the results say the canary
// produced them (the expected spread is about 1.5 %), the rest the stable
// version, and every job succeeds.
func TestCanaryShareOfJobs(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "1.0.0", Canary: "2.0.0", Percent: 30})
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	startRunner(t, e.srv, versioned(t, "2.0.0"))
	cfg := fastConfig(t)
	cfg.MaxInFlight = 32
	startController(t, e, cfg)

	const n = 1000
	id := jobID("canary")
	for i := range n {
		e.submit(t, "echo", id(i), echoIn{N: i})
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return rec.done() == n }, "%d of %d results", rec.done(), n)
	e.checkAll(t, n, id)
	byVersion := map[string]int{}
	for i := range n {
		res, _ := e.final(t, id(i))
		if res.Status != controller.StatusSucceeded {
			t.Errorf("job %s: %s", id(i), res.Status)
		}
		byVersion[res.Version]++
	}
	t.Logf("jobs by version: %v", byVersion)
	if c := byVersion["2.0.0"]; c < n*20/100 || c > n*40/100 || byVersion["1.0.0"]+c != n {
		t.Fatalf("canary 30%%: %v, want 200..400 of %d on 2.0.0 and the rest on 1.0.0", byVersion, n)
	}
}

// A route whose versions have no live instance does not stop jobs: they
// go to any live version.
func TestRouteWithoutLiveVersionFallsBack(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "9.0.0", Canary: "9.1.0", Percent: 50})
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	startController(t, e, fastConfig(t))
	for i := range 20 {
		e.submit(t, "echo", fmt.Sprintf("fb-%d", i), echoIn{N: i})
	}
	for i := range 20 {
		if r := e.waitResult(t, fmt.Sprintf("fb-%d", i)); r.Status != controller.StatusSucceeded || r.Version != "1.0.0" {
			t.Fatalf("job %d: %s by %q, want succeeded by 1.0.0", i, r.Status, r.Version)
		}
	}
}
