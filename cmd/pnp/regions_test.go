package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
)

// region is one cluster of the test's supercluster.
type region struct {
	servers []*natsProc
	proxies []*tcpProxy // in front of each server's gateway port
}

func (r *region) urls() string {
	var u []string
	for _, s := range r.servers {
		u = append(u, s.url)
	}
	return strings.Join(u, ",")
}

// cut cuts every gateway connection into the region (and so out of it:
// the other region's gateways reach it only through these proxies).
func (r *region) cut() {
	for _, p := range r.proxies {
		p.Cut()
	}
}

func (r *region) restore() {
	for _, p := range r.proxies {
		p.Restore()
	}
}

// startSupercluster starts region A (servers a1, a2, routed) and region B
// (server b1) with JetStream, joined by gateways. Each server advertises
// its gateway through a proxy, so cutting region B's and A's proxies
// partitions the regions. The JetStream meta group has three peers, two
// of them in A: A keeps a meta leader when cut off from B, B does not.
func startSupercluster(t *testing.T) (a, b *region) {
	t.Helper()
	type node struct {
		name, cluster string
		route, gw     int
		proxy         *tcpProxy
	}
	var nodes []*node
	for _, n := range []struct{ name, cluster string }{{"a1", "A"}, {"a2", "A"}, {"b1", "B"}} {
		_, route := freeLoopbackAddr(t)
		gwAddr, gw := freeLoopbackAddr(t)
		nodes = append(nodes, &node{name: n.name, cluster: n.cluster, route: route, gw: gw, proxy: startProxy(t, gwAddr)})
	}
	gatewayURLs := func(cluster string) string {
		var u []string
		for _, n := range nodes {
			if n.cluster == cluster {
				u = append(u, fmt.Sprintf("%q", "nats://"+n.proxy.addr()))
			}
		}
		return strings.Join(u, ", ")
	}
	routes := func(cluster string) string {
		var u []string
		for _, n := range nodes {
			if n.cluster == cluster {
				u = append(u, fmt.Sprintf(`"nats-route://127.0.0.1:%d"`, n.route))
			}
		}
		return strings.Join(u, ", ")
	}
	a, b = &region{}, &region{}
	for _, n := range nodes {
		other, r := "B", a
		if n.cluster == "B" {
			other, r = "A", b
		}
		body := fmt.Sprintf(`jetstream { store_dir: %q }
cluster { name: %s, listen: "127.0.0.1:%d", routes: [%s], no_advertise: true }
gateway {
  name: %s
  listen: "127.0.0.1:%d"
  advertise: %q
  gateways: [ { name: %s, urls: [%s] } ]
}`, t.TempDir(), n.cluster, n.route, routes(n.cluster), n.cluster, n.gw, n.proxy.addr(), other, gatewayURLs(other))
		r.servers = append(r.servers, startNATS(t, n.name, body))
		r.proxies = append(r.proxies, n.proxy)
	}
	return a, b
}

// streamCluster returns the cluster stream name is placed in.
func streamCluster(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) string {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream %s: %v %+v", name, err, info)
	}
	return info.Cluster.Name
}

// tally sends n requests to run.<alg> over nc and counts the answers by
// region.
func tally(t *testing.T, nc *nats.Conn, alg string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		got[answeredBy(t, nc, alg, fmt.Sprintf("%s-%d", nc.Opts.Name, i))]++
	}
	return got
}

// awaitAnsweredBy polls until a request to run.<alg> over nc is answered
// by region want: a subscription made or dropped on one server reaches the
// other servers of its cluster, and the other region, a moment later.
func awaitAnsweredBy(t *testing.T, nc *nats.Conn, alg, want string) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, func() bool {
		msg, err := nc.Request("run."+alg, []byte(`{"id":"probe"}`), 2*time.Second)
		return err == nil && strings.Contains(string(msg.Data), fmt.Sprintf(`"by":%q`, want))
	}, "requests to run.%s over %s are not answered by region %s", alg, nc.Opts.Name, want)
}

// TestRegions runs a supercluster of two regions joined by gateways.
// pnp provision --placement-cluster A, run in region B, puts every stream
// and bucket in A. A request is answered by a runner of the requester's
// region while it has one, by the other region's when it has none. Cut
// off, region B still answers its own requests but cannot take jobs; A
// goes on; joined again, B takes jobs again.
func TestRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes")
	}
	isolateEnv(t)
	a, b := startSupercluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	bc := connectNATS(t, b.urls(), nats.Name("b"))
	bjs := mustJetStream(t, bc)
	// Without a placement, a stream goes to the cluster of the server the
	// client is connected to.
	natstest.Eventually(t, 60*time.Second, func() bool {
		// Without a meta leader yet, the request is not answered at all.
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		defer pcancel()
		_, err := bjs.CreateOrUpdateStream(pctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Storage: jetstream.MemoryStorage})
		return err == nil
	}, "JetStream of the supercluster not ready")
	if c := streamCluster(ctx, t, bjs, "PROBE"); c != "B" {
		t.Fatalf("a stream created from region B without placement is in %q, want B", c)
	}
	if code, stdout, stderr := runPnp(t, "provision", "--server", b.urls(), "--placement-cluster", "A", "--output-algorithms", "region_count", "--wait", "60s"); code != 0 {
		t.Fatalf("pnp provision: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, s := range []string{jobs.JobsStream, jobs.SchedulesStream, jobs.DeadStream, "KV_" + jobs.ResultsBucket, "KV_discovery", "KV_" + jobs.ServedBucket, "KV_routes", "OBJ_" + jobs.InputsBucket, "OBJ_outputs_region_count", "HISTORY", "COMPARE"} {
		if c := streamCluster(ctx, t, bjs, s); c != "A" {
			t.Errorf("stream %s is in %q, want A", s, c)
		}
	}
	ctl := startPnp(t, "controller", "--server", a.urls(), "--placement-cluster", "A", "--no-runner-delay", "200ms")
	ctl.waitStderr(t, "controller started")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", tail(ctl.stderr.String(), 40))
		}
	})

	ac := connectNATS(t, a.urls(), nats.Name("a"))
	ac2 := connectNATS(t, a.servers[1].url)
	algA, countA := newCountingAlgorithm(t, "region_count", "A")
	stopA := runRunner(t, ac2, []*runner.Algorithm{algA})
	algB, countB := newCountingAlgorithm(t, "region_count", "B")
	runRunner(t, connectNATS(t, b.urls()), []*runner.Algorithm{algB})
	// Each runner's interest must have reached the servers of both
	// regions before the tallies.
	awaitAnsweredBy(t, bc, "region_count", "B")
	awaitAnsweredBy(t, ac, "region_count", "A")

	if got := tally(t, ac, "region_count", 20); got["A"] != 20 {
		t.Errorf("requests made in A answered by %v, want all by A", got)
	}
	if got := tally(t, bc, "region_count", 20); got["B"] != 20 {
		t.Errorf("requests made in B answered by %v, want all by B", got)
	}

	// A producer in B submits; JOBS (in A) holds the job and A's
	// controller runs it on A's runner.
	bstore, err := jobs.OpenStore(ctx, bjs, jobs.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	runJob := func(id string) string {
		t.Helper()
		if _, err := bstore.Submit(ctx, "region_count", []byte(fmt.Sprintf(`{"id":%q}`, id)), jobs.SubmitOptions{ID: id}); err != nil {
			t.Fatalf("submit %s from B: %v", id, err)
		}
		res, err := bstore.WaitResult(ctx, id, nil)
		if err != nil || res.Status != jobs.StatusSucceeded {
			t.Fatalf("job %s: %v %+v", id, err, res)
		}
		switch {
		case countA.count(id) == 1 && countB.count(id) == 0:
			return "A"
		case countB.count(id) == 1 && countA.count(id) == 0:
			return "B"
		}
		t.Fatalf("job %s ran %d times in A, %d in B", id, countA.count(id), countB.count(id))
		return ""
	}
	if by := runJob("job-1"); by != "A" {
		t.Errorf("a job dispatched in A ran in %s while A has a runner", by)
	}

	// A without runners: its requests and jobs go to B.
	stopA()
	awaitAnsweredBy(t, ac, "region_count", "B")
	if got := tally(t, ac, "region_count", 10); got["B"] != 10 {
		t.Errorf("requests made in A with no runner in A answered by %v, want all by B", got)
	}
	if by := runJob("job-2"); by != "B" {
		t.Errorf("a job ran in %s while only B has a runner", by)
	}
	algA2, countA2 := newCountingAlgorithm(t, "region_count", "A")
	runRunner(t, ac2, []*runner.Algorithm{algA2})
	countA = countA2
	awaitAnsweredBy(t, ac, "region_count", "A")

	// Cut B off. B answers its own requests; it cannot take jobs (JOBS
	// is in A); A takes and runs jobs.
	b.cut()
	a.cut()
	natstest.Eventually(t, 30*time.Second, func() bool {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		_, err := bstore.Submit(sctx, "region_count", []byte(`{"id":"probe-cut"}`), jobs.SubmitOptions{ID: "probe-cut"})
		return err != nil
	}, "region B still takes jobs after the cut")
	if got := tally(t, bc, "region_count", 10); got["B"] != 10 {
		t.Errorf("requests made in B while cut off answered by %v, want all by B", got)
	}
	if got := tally(t, ac, "region_count", 10); got["A"] != 10 {
		t.Errorf("requests made in A while cut off answered by %v, want all by A", got)
	}
	astore, err := jobs.OpenStore(ctx, mustJetStream(t, ac), jobs.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := astore.Submit(ctx, "region_count", []byte(`{"id":"job-3"}`), jobs.SubmitOptions{ID: "job-3"}); err != nil {
		t.Fatalf("submit in A while B is cut off: %v", err)
	}
	if res, err := astore.WaitResult(ctx, "job-3", nil); err != nil || res.Status != jobs.StatusSucceeded || countA.count("job-3") != 1 {
		t.Fatalf("job-3 in A while B is cut off: %v %+v, ran %d times in A", err, res, countA.count("job-3"))
	}
	// A holds the meta group's majority: it creates streams, B cannot.
	createProbe := func(js jetstream.JetStream, name string) error {
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		defer pcancel()
		_, err := js.CreateOrUpdateStream(pctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name)}, Storage: jetstream.MemoryStorage})
		return err
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return createProbe(mustJetStream(t, ac), "PROBE_A") == nil }, "region A cannot create a stream while B is cut off")
	if err := createProbe(bjs, "PROBE_B"); err == nil {
		t.Error("region B created a stream while cut off from the meta group's majority")
	}
	// A runner started in B while cut off cannot reach discovery: Run
	// fails at start-up, after JetStream's request timeout, as pnp runner
	// does (its supervisor starts it again).
	late, err := runner.New(connectNATS(t, b.urls()), []*runner.Algorithm{algB}, runner.WithoutProvisioning())
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background()) // no deadline, as pnp runner's
	defer rcancel()
	ran := make(chan error, 1)
	go func() { ran <- late.Run(rctx) }()
	select {
	case err := <-ran:
		if err == nil {
			t.Error("a runner started in B while cut off started")
		}
	case <-late.Started():
		rcancel()
		t.Errorf("a runner started in B while cut off started: %v", <-ran)
	case <-time.After(60 * time.Second):
		rcancel()
		t.Errorf("a runner started in B while cut off neither started nor failed within 60s: %v", <-ran)
	}

	// Joined again, B takes jobs again once it is back in the meta group.
	a.restore()
	b.restore()
	natstest.Eventually(t, 60*time.Second, func() bool {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		defer acancel()
		_, err := bjs.AccountInfo(actx)
		return err == nil
	}, "region B's JetStream does not answer after the link is back")
	natstest.Eventually(t, 60*time.Second, func() bool {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		_, err := bstore.Submit(sctx, "region_count", []byte(`{"id":"job-4"}`), jobs.SubmitOptions{ID: "job-4"})
		return err == nil
	}, "region B does not take jobs after the link is back")
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if res, err := bstore.WaitResult(wctx, "job-4", nil); err != nil || res.Status != jobs.StatusSucceeded {
		q, qerr := astore.Queues(ctx)
		r, rerr := astore.Result(ctx, "job-4")
		t.Fatalf("job-4: %v %+v\nqueues %v %+v\nresult in A %v %+v", err, res, qerr, q, rerr, r)
	}
	if n := countA.count("job-4") + countB.count("job-4"); n != 1 {
		t.Errorf("job-4 ran %d times", n)
	}
}
