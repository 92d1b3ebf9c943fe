package controller_test

import (
	"context"
	"fmt"
	"maps"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
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
// go to any live version, and pnp_controller_route_fallback says so
// until the stable version is live again.
func TestRouteWithoutLiveVersionFallsBack(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "9.0.0", Canary: "9.1.0", Percent: 50})
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	reg := prometheus.NewRegistry()
	cfg := fastConfig(t)
	cfg.Metrics = reg
	startController(t, e, cfg)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	fallback := func() float64 {
		return metricstest.Scrape(t, srv.URL).Value(t, "pnp_controller_route_fallback", "algorithm=echo")
	}
	for i := range 20 {
		e.submit(t, "echo", fmt.Sprintf("fb-%d", i), echoIn{N: i})
	}
	for i := range 20 {
		if r := e.waitResult(t, fmt.Sprintf("fb-%d", i)); r.Status != controller.StatusSucceeded || r.Version != "1.0.0" {
			t.Fatalf("job %d: %s by %q, want succeeded by 1.0.0", i, r.Status, r.Version)
		}
	}
	if got := fallback(); got != 1 {
		t.Fatalf("route_fallback{echo} = %g while the stable version has no instance, want 1", got)
	}
	startRunner(t, e.srv, versioned(t, "9.0.0"))
	i := 20
	natstest.Eventually(t, 20*time.Second, func() bool {
		id := fmt.Sprintf("fb-%d", i)
		i++
		e.submit(t, "echo", id, echoIn{N: i})
		r := e.waitResult(t, id)
		return r.Version != "1.0.0" && fallback() == 0
	}, "jobs never went to the routed versions again, or route_fallback{echo} stayed %g", fallback())
}

// candidate is the echo algorithm at version whose answer fn decides.
func candidate(t testing.TB, version string, timeout time.Duration, fn func(ctx context.Context, in echoIn) (echoOut, error)) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "echo", Version: version,
		InputSchema: []byte(echoInputSchema), OutputSchema: []byte(echoOutputSchema),
		Timeout: timeout, MaxConcurrency: 32,
	}, fn)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A shadow route: every result comes from the stable version; the shadow
// runs the same inputs, and at low load every job has exactly one
// comparison in COMPARE, which says exactly whether it differs (n%10 == 0:
// /n differs) or fails on the shadow (n%10 == 5).
func TestShadowComparesWithoutTouchingResults(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "1.0.0", Shadow: "2.0.0"})
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	startRunner(t, e.srv, candidate(t, "2.0.0", 5*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		switch in.N % 10 {
		case 0:
			return echoOut{N: in.N + 1}, nil
		case 5:
			return echoOut{}, protocol.Reject("not this one")
		}
		return echoOut{N: in.N}, nil
	}))
	cfg := fastConfig(t)
	cfg.MaxInFlight = 4
	// Low load: waves of 10 jobs, each submitted once the last wave's
	// results and comparisons are stored. A shadow's slot is freed just
	// after its comparison is counted, so at most two waves hold slots:
	// with 20, every job finds one, none is dropped and every job has its
	// comparison.
	const wave = 10
	cfg.Shadow.Concurrency = 2 * wave
	ctl := startController(t, e, cfg)

	const n = 200
	id := jobID("shadow")
	for w := 0; w < n; w += wave {
		for i := w; i < w+wave; i++ {
			e.submit(t, "echo", id(i), echoIn{N: i})
		}
		natstest.Eventually(t, 30*time.Second, func() bool { return rec.done() == w+wave }, "%d of %d results", rec.done(), w+wave)
		natstest.Eventually(t, 30*time.Second, func() bool {
			st := ctl.c.ShadowStats()
			return st.Compared+st.Dropped+st.NoInstance+st.StoreFailed+st.NotCompared >= int64(w+wave)
		}, "shadow runs of %d jobs not all ended: %+v", w+wave, ctl.c.ShadowStats())
	}
	for i := range n {
		res, _ := e.final(t, id(i))
		if res.Status != controller.StatusSucceeded || res.Version != "1.0.0" || string(res.Output) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("job %d: %s by %s: %s; want the stable version's output", i, res.Status, res.Version, res.Output)
		}
	}
	if st := ctl.c.ShadowStats(); st.Started != n || st.Compared != n || st.Dropped != 0 || st.NoInstance != 0 || st.StoreFailed != 0 || st.NotCompared != 0 {
		t.Fatalf("shadow stats %+v: want all %d jobs started and compared, none dropped or failed", st, n)
	}
	var cs []rollout.Comparison
	natstest.Eventually(t, 20*time.Second, func() bool {
		var err error
		cs, err = rollout.ReadComparisons(context.Background(), e.js, "echo", time.Time{}, 0)
		return err == nil && len(cs) >= n
	}, "comparisons for %d of %d jobs (%+v)", len(cs), n, ctl.c.ShadowStats())
	t.Logf("comparisons: %d of %d jobs; %+v", len(cs), n, ctl.c.ShadowStats())
	compared := map[string]bool{}
	for _, c := range cs {
		compared[c.JobID] = true
	}
	if len(cs) != n || len(compared) != n {
		t.Fatalf("%d comparisons of %d distinct jobs, want one for each of the %d jobs", len(cs), len(compared), n)
	}
	for _, c := range cs {
		var k int
		if _, err := fmt.Sscanf(c.JobID, "shadow-%d", &k); err != nil {
			t.Fatalf("comparison for job %q", c.JobID)
		}
		wantEqual := k%10 != 0 && k%10 != 5
		if c.Equal != wantEqual || c.StableVersion != "1.0.0" || c.CandidateVersion != "2.0.0" || c.Source != rollout.SourceShadow {
			t.Errorf("job %d: %+v", k, c)
		}
		switch k % 10 {
		case 0:
			if len(c.Diffs) != 1 || c.Diffs[0].Pointer != "/n" {
				t.Errorf("job %d: diffs %+v, want /n", k, c.Diffs)
			}
		case 5:
			if c.CandidateError == "" || c.StableError != "" {
				t.Errorf("job %d: errors %q %q, want the candidate's only", k, c.StableError, c.CandidateError)
			}
		}
	}
	rep := rollout.Summarize("echo", cs)
	if len(rep.Fields) != 1 || rep.Fields[0].Pointer != "/n" {
		t.Errorf("report fields %+v", rep.Fields)
	}
}

// A shadow that hangs neither slows nor fails the real jobs: every job is
// done while the first shadow calls still hang, and the jobs that find
// every shadow slot busy are dropped and counted.
func TestHangingShadowDoesNotDelayJobs(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "1.0.0", Shadow: "2.0.0"})
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	startRunner(t, e.srv, candidate(t, "2.0.0", 60*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		<-ctx.Done() // hangs until cancelled
		return echoOut{}, ctx.Err()
	}))
	cfg := fastConfig(t)
	cfg.MaxInFlight = 16
	cfg.Shadow.Concurrency = 2
	ctl := startController(t, e, cfg)

	const n = 300
	id := jobID("hang")
	for i := range n {
		e.submit(t, "echo", id(i), echoIn{N: i})
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return rec.done() == n }, "%d of %d results", rec.done(), n)
	st := ctl.c.ShadowStats()
	t.Logf("shadow stats when every job was done: %+v", st)
	for i := range n {
		if res, _ := e.final(t, id(i)); res.Status != controller.StatusSucceeded || res.Version != "1.0.0" {
			t.Fatalf("job %d: %s by %s", i, res.Status, res.Version)
		}
	}
	if st.Started != 2 || st.Compared != 0 || st.Dropped != n-2 {
		t.Fatalf("shadow stats %+v: want 2 started and still hanging, %d dropped", st, n-2)
	}
}

// Replay: 500 jobs recorded from the stable version, re-run on a candidate
// that differs on a known subset (n%7 == 0: /n; n%11 == 0: rejected),
// report exactly that subset's agreement, field and errors.
func TestReplayReportsTheKnownSubset(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	cfg := fastConfig(t)
	cfg.MaxInFlight = 32
	cfg.History.Rate = 1
	ctl := startController(t, e, cfg)
	const n = 500
	id := jobID("replay")
	for i := range n {
		e.submit(t, "echo", id(i), echoIn{N: i})
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return rec.done() == n }, "%d of %d results", rec.done(), n)
	natstest.Eventually(t, 10*time.Second, func() bool {
		h, err := rollout.ReadHistory(context.Background(), e.js, "echo", time.Time{}, 0)
		return err == nil && len(h) == n
	}, "history does not hold the %d jobs: %+v", n, ctl.c.ShadowStats())

	var candidateCalls atomic.Int64
	startRunner(t, e.srv, candidate(t, "2.0.0", 5*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		candidateCalls.Add(1)
		switch {
		case in.N%11 == 0:
			return echoOut{}, protocol.Reject("no")
		case in.N%7 == 0:
			return echoOut{N: -in.N}, nil
		}
		return echoOut{N: in.N}, nil
	}))
	// Replay touches no job: nothing is published to JOBS or to
	// run.echo (where the stable version would take it), and no job
	// stream or record changes.
	published := make(chan *nats.Msg, 4*n)
	for _, subject := range []string{controller.JobsSubjectPrefix + ">", discovery.RequestSubject("echo")} {
		sub, err := e.nc.ChanSubscribe(subject, published)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := jobStreams(t, e)
	cs, err := rollout.Replay(context.Background(), e.nc, e.js, rollout.ReplayConfig{Algorithm: "echo", Version: "2.0.0", Last: n, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(published) != 0 {
		m := <-published
		t.Fatalf("replay published %d messages on job or plain subjects, the first on %s", len(published)+1, m.Subject)
	}
	if after := jobStreams(t, e); !maps.Equal(after, before) {
		t.Fatalf("job streams changed during replay: before %v, after %v", before, after)
	}
	if c := candidateCalls.Load(); c != n {
		t.Fatalf("the candidate was called %d times, want once per recorded job (%d)", c, n)
	}
	for i := range n {
		if res, _ := e.final(t, id(i)); res.Status != controller.StatusSucceeded || res.Version != "1.0.0" || string(res.Output) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("job %d after replay: %s by %s: %s; want the stable version's result", i, res.Status, res.Version, res.Output)
		}
	}
	wantDiff, wantErr := map[string]bool{}, map[string]bool{}
	for i := range n {
		switch {
		case i%11 == 0:
			wantErr[id(i)] = true
		case i%7 == 0:
			wantDiff[id(i)] = true
		}
	}
	if len(cs) != n {
		t.Fatalf("%d comparisons, want %d", len(cs), n)
	}
	for _, c := range cs {
		switch {
		case wantErr[c.JobID]:
			if c.Equal || c.CandidateError == "" || !strings.HasPrefix(c.CandidateError, "422") {
				t.Errorf("%s: %+v, want a 422 from the candidate", c.JobID, c)
			}
		case wantDiff[c.JobID]:
			if c.Equal || len(c.Diffs) != 1 || c.Diffs[0].Pointer != "/n" {
				t.Errorf("%s: %+v, want /n to differ", c.JobID, c)
			}
		default:
			if !c.Equal {
				t.Errorf("%s: %+v, want equal", c.JobID, c)
			}
		}
	}
	rep := rollout.Summarize("echo", cs)
	wantAgree := n - len(wantDiff) - len(wantErr)
	if rep.Agree != wantAgree || len(rep.Fields) != 1 || rep.Fields[0].Pointer != "/n" || rep.Fields[0].Count != len(wantDiff) {
		t.Fatalf("report %+v, want %d agreeing and /n differing in %d", rep, wantAgree, len(wantDiff))
	}
	for _, v := range rep.Versions {
		if v.Version == "2.0.0" && v.Errors != len(wantErr) || v.Version == "1.0.0" && v.Errors != 0 {
			t.Errorf("version report %+v", v)
		}
	}
	t.Logf("agreement %.3f (%d of %d), /n differs in %d, candidate errors %d", rep.Agreement, rep.Agree, rep.Total, rep.Fields[0].Count, len(wantErr))
}

// jobStreams is the last sequence of the streams that hold jobs, their
// records and dead letters.
func jobStreams(t *testing.T, e *env) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, name := range []string{controller.JobsStream, controller.DeadStream, "KV_" + controller.ResultsBucket} {
		st, err := e.js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info.State.LastSeq
	}
	return out
}

// A canary whose input schema rejects what the stable version accepts
// never fails a job: the job goes to the stable version (counted).
func TestCanaryRejectingInputGoesToStable(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	setRoute(t, e, rollout.Route{Algorithm: "echo", Stable: "1.0.0", Canary: "2.0.0", Percent: 100})
	startRunner(t, e.srv, versioned(t, "1.0.0"))
	strict, err := runner.NewAlgorithm(runner.Spec{
		Name: "echo", Version: "2.0.0",
		InputSchema:  []byte(`{"type":"object","required":["n","m"],"properties":{"n":{"type":"integer"},"m":{"type":"integer"}}}`),
		OutputSchema: []byte(echoOutputSchema), Timeout: 5 * time.Second,
	}, func(ctx context.Context, in echoIn) (echoOut, error) { return echoOut{N: in.N}, nil })
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, e.srv, strict)
	ctl := startController(t, e, fastConfig(t))
	const n = 20
	for i := range n {
		e.submit(t, "echo", fmt.Sprintf("strict-%d", i), echoIn{N: i})
	}
	for i := range n {
		if r := e.waitResult(t, fmt.Sprintf("strict-%d", i)); r.Status != controller.StatusSucceeded || r.Version != "1.0.0" {
			t.Fatalf("job %d: %s by %q, want succeeded by the stable version", i, r.Status, r.Version)
		}
	}
	if got := ctl.c.ShadowStats().CanaryRejected; got != n {
		t.Errorf("canary rejections counted: %d, want %d", got, n)
	}
}

// blobVersion is an algorithm at version whose output (about size bytes,
// changed by alter when set) is larger than a message for large sizes.
func blobVersion(t testing.TB, version string, alter func(in blobIn, s string) string) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "blob", Version: version,
		InputSchema:  []byte(`{"type":"object","required":["size"],"properties":{"size":{"type":"integer"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["data"],"properties":{"data":{"type":"string"}}}`),
		Timeout:      10 * time.Second, MaxConcurrency: 4,
	}, func(_ context.Context, in blobIn) (blobOut, error) {
		s := strings.Repeat("0123456789", in.Size/10)
		if alter != nil {
			s = alter(in, s)
		}
		return blobOut{Data: s}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Outputs stored by reference are compared by what they hold, not by
// where they were stored: in the shadow's comparisons and in a replay, a
// candidate that answers the same large output agrees, and one that
// answers a different one differs at /data.
func TestShadowAndReplayCompareOutputsByReference(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	rec := record(t, e)
	setRoute(t, e, rollout.Route{Algorithm: "blob", Stable: "1.0.0", Shadow: "2.0.0"})
	startRunner(t, e.srv, blobVersion(t, "1.0.0", nil))
	// Sizes ending in 10 get a different output from the candidate.
	startRunner(t, e.srv, blobVersion(t, "2.0.0", func(in blobIn, s string) string {
		if in.Size%100 == 10 {
			return "X" + s[1:]
		}
		return s
	}))
	cfg := fastConfig(t)
	cfg.History.Rate = 1
	ctl := startController(t, e, cfg)

	big := 3 * int(e.nc.MaxPayload()) / 100 * 100
	sizes := map[string]int{"same-big": big, "other-big": big + 10, "same-small": 100, "other-small": 110}
	for id, size := range sizes {
		e.submit(t, "blob", id, blobIn{Size: size})
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return rec.done() == len(sizes) }, "%d of %d results", rec.done(), len(sizes))
	for id := range sizes {
		r, _ := e.final(t, id)
		if r.Status != controller.StatusSucceeded || r.Version != "1.0.0" || strings.HasSuffix(id, "big") != (r.OutputRef != "") {
			t.Fatalf("job %s: %s by %s, output_ref %q", id, r.Status, r.Version, r.OutputRef)
		}
	}
	check := func(source string, cs []rollout.Comparison) {
		t.Helper()
		if len(cs) != len(sizes) {
			t.Fatalf("%s: %d comparisons, want %d: %+v", source, len(cs), len(sizes), cs)
		}
		for _, c := range cs {
			differs := strings.HasPrefix(c.JobID, "other")
			if c.StableError != "" || c.CandidateError != "" || c.Equal == differs {
				t.Errorf("%s %s: equal %v, errors %q %q; want equal %v", source, c.JobID, c.Equal, c.StableError, c.CandidateError, !differs)
			}
			if differs && (len(c.Diffs) != 1 || c.Diffs[0].Pointer != "/data") {
				t.Errorf("%s %s: diffs %+v, want /data", source, c.JobID, c.Diffs)
			}
		}
	}
	var cs []rollout.Comparison
	natstest.Eventually(t, 20*time.Second, func() bool {
		var err error
		cs, err = rollout.ReadComparisons(context.Background(), e.js, "blob", time.Time{}, 0)
		return err == nil && len(cs) == len(sizes)
	}, "%d comparisons, want %d (%+v)", len(cs), len(sizes), ctl.c.ShadowStats())
	check("shadow", cs)

	natstest.Eventually(t, 10*time.Second, func() bool {
		h, err := rollout.ReadHistory(context.Background(), e.js, "blob", time.Time{}, 0)
		return err == nil && len(h) == len(sizes)
	}, "history does not hold the %d jobs: %+v", len(sizes), ctl.c.ShadowStats())
	cs, err := rollout.Replay(context.Background(), e.nc, e.js, rollout.ReplayConfig{Algorithm: "blob", Version: "2.0.0", Last: len(sizes)})
	if err != nil {
		t.Fatal(err)
	}
	check("replay", cs)
}
