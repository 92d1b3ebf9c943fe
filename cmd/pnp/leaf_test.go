package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
)

// leafHub starts a hub nats-server with JetStream in domain "hub" that
// accepts leaf nodes as user leaf, and returns it with its leaf port. It
// does not advertise its leaf URL: leaf nodes would otherwise learn it
// and connect around the test's proxy.
func leafHub(t *testing.T) (*natsProc, int) {
	t.Helper()
	_, leafPort := freeLoopbackAddr(t)
	hub := startNATS(t, "hub", fmt.Sprintf(`jetstream { store_dir: %q, domain: hub }
leafnodes { listen: "127.0.0.1:%d", no_advertise: true, authorization { user: leaf, password: s3cret } }`, t.TempDir(), leafPort))
	return hub, leafPort
}

// startLeaf starts a nats-server without JetStream connected as a leaf
// node to remote (host:port) with password.
func startLeaf(t *testing.T, name, remote, password string) *natsProc {
	t.Helper()
	return startNATS(t, name, fmt.Sprintf(`leafnodes { reconnect: "250ms", remotes: [ { url: "nats-leaf://leaf:%s@%s" } ] }`, password, remote))
}

// hubReachable reports whether a client of nc reaches the JetStream of
// domain hub.
func hubReachable(nc *nats.Conn) bool {
	js, err := jetstream.NewWithDomain(nc, "hub")
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err == nil
}

// TestLeafNodeRunner runs runners behind a leaf node without JetStream:
// a library runner with runner.WithJetStreamDomain and `pnp runner
// --js-domain hub`. They register in the hub's discovery, answer requests
// made at the hub and run the jobs the hub's controller dispatches. When
// the link is cut their registrations expire, new jobs wait in JOBS,
// neither failed nor dead-lettered, and the runners still serve the
// leaf's own clients; once it is back every job runs, each exactly once.
func TestLeafNodeRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server processes")
	}
	isolateEnv(t)
	hub, leafPort := leafHub(t)
	proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", leafPort))
	leaf := startLeaf(t, "leaf", proxy.addr(), "s3cret")

	// A short discovery TTL so that the cut shows within seconds.
	if code, _, stderr := runPnp(t, "provision", "--server", hub.url, "--discovery-ttl", "3s", "--wait", "30s"); code != 0 {
		t.Fatalf("pnp provision: exit %d: %s", code, stderr)
	}
	startPnp(t, "controller", "--server", hub.url, "--no-runner-delay", "200ms", "--retry-backoff", "200ms").waitStderr(t, "controller started")

	lc := connectNATS(t, leaf.url)
	natstest.Eventually(t, 30*time.Second, func() bool { return hubReachable(lc) }, "the leaf does not reach the hub's JetStream")
	count, counts := newCountingAlgorithm(t, "edge_count", "leaf")
	runRunner(t, lc, []*runner.Algorithm{count}, runner.WithJetStreamDomain("hub"), runner.WithHost("edge-site"))
	startPnp(t, "runner", "--server", leaf.url, "--js-domain", "hub", "--algorithms", "language_detection")

	hc := connectNATS(t, hub.url)
	hjs := mustJetStream(t, hc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reg, err := discovery.Open(ctx, hjs, discovery.Config{})
	if err != nil {
		t.Fatal(err)
	}
	live := func(alg string) int {
		regs, err := reg.Lookup(ctx, alg)
		if err != nil {
			return -1
		}
		return len(regs)
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return live("edge_count") == 1 && live("language_detection") == 1 }, "the leaf's runners are not registered in the hub's discovery")
	if regs, _ := reg.Lookup(ctx, "edge_count"); regs[0].Host != "edge-site" {
		t.Errorf("registration host %q, want edge-site", regs[0].Host)
	}

	// Requests made at the hub reach the runners behind the leaf.
	if by := answeredBy(t, hc, "edge_count", "request-1"); by != "leaf" {
		t.Errorf("answered by %q", by)
	}
	msg, err := hc.Request("run.language_detection", []byte(`{"text":"Le renard brun saute par-dessus le chien paresseux"}`), 10*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"fr"`) {
		t.Fatalf("run.language_detection from the hub: %v %q", err, msgData(msg))
	}
	// A producer at the edge submits through the leaf with --js-domain.
	if code, stdout, stderr := runPnp(t, "submit", "--server", leaf.url, "--js-domain", "hub", "--wait", "edge_count", `{"id":"edge-submit"}`); code != 0 || !strings.Contains(stdout, "leaf") {
		t.Fatalf("pnp submit --js-domain hub on the leaf: exit %d\n%s\n%s", code, stdout, stderr)
	}

	store, err := jobs.OpenStore(ctx, hjs, jobs.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	submit := func(prefix string, n int) []string {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if _, err := store.Submit(ctx, "edge_count", []byte(fmt.Sprintf(`{"id":%q}`, id)), jobs.SubmitOptions{ID: id}); err != nil {
				t.Fatalf("submit %s: %v", id, err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	waitSucceeded := func(ids []string) {
		t.Helper()
		for _, id := range ids {
			res, err := store.WaitResult(ctx, id, nil)
			if err != nil || res.Status != jobs.StatusSucceeded {
				t.Fatalf("job %s: %v %+v", id, err, res)
			}
		}
	}
	before := submit("before", 20)
	waitSucceeded(before)

	// Cut the link: the leaf's registrations expire at the hub.
	proxy.Cut()
	natstest.Eventually(t, 30*time.Second, func() bool { return live("edge_count") == 0 && live("language_detection") == 0 }, "registrations behind the cut leaf did not expire")
	if _, err := hc.Request("run.edge_count", []byte(`{"id":"cut"}`), 2*time.Second); err == nil {
		t.Fatal("a request from the hub was answered across the cut link")
	}
	// Behind the leaf the runner still serves the leaf's own clients.
	if by := answeredBy(t, lc, "edge_count", "at-the-leaf"); by != "leaf" {
		t.Errorf("a request made at the cut leaf answered by %q", by)
	}
	during := submit("during", 20)
	// The jobs wait: for several no-runner delays none gets an outcome
	// or dies.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, id := range during {
			if res, err := store.Result(ctx, id); err == nil {
				t.Fatalf("job %s has an outcome while no runner is reachable: %+v", id, res)
			}
		}
	}
	queues, err := store.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if q.Algorithm == "edge_count" && (q.Waiting+q.InFlight != uint64(len(during)) || q.Dead != 0 || q.Runners != 0) {
			t.Fatalf("during the cut: %+v, want %d waiting or held, none dead, no runners", q, len(during))
		}
	}

	// Restore: the runners register again and every job runs once.
	proxy.Restore()
	natstest.Eventually(t, 30*time.Second, func() bool { return live("edge_count") == 1 }, "the runner did not register again after the link came back")
	waitSucceeded(during)
	for _, id := range append(append(before, during...), "request-1", "edge-submit", "at-the-leaf") {
		if n := counts.count(id); n != 1 {
			t.Errorf("%s ran %d times, want once", id, n)
		}
	}
	dead, err := store.DeadLetters(ctx, "edge_count")
	if err != nil || len(dead) != 0 {
		t.Errorf("dead letters: %v %v", err, dead)
	}
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// TestUpAcceptsLeafNodes runs pnp up as the hub: a leaf node with the
// password reaches its JetStream in the domain named by --js-domain, one
// with another password does not, and --leaf-listen without a password
// is refused.
func TestUpAcceptsLeafNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server processes")
	}
	isolateEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--leaf-listen", "127.0.0.1:0", "--data", t.TempDir()}, "--leaf-listen needs --leaf-user and --leaf-password"},
		{[]string{"up", "--js-domain", "a.b", "--data", t.TempDir()}, `--js-domain (NATS_JS_DOMAIN) "a.b"`},
		{[]string{"runner", "--js-domain", "hub*"}, `--js-domain (NATS_JS_DOMAIN) "hub*"`},
		{[]string{"jobs", "--js-domain", "two words"}, `--js-domain (NATS_JS_DOMAIN) "two words"`},
		{[]string{"provision", "--placement-cluster", "a.b"}, `--placement-cluster (PNP_PLACEMENT_CLUSTER) "a.b"`},
	} {
		code, _, stderr := runPnp(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("pnp %s: exit %d, stderr %q; want 2 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}

	addr, _ := freeLoopbackAddr(t)
	leafAddr, _ := freeLoopbackAddr(t)
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--js-domain", "hub",
		"--leaf-listen", leafAddr, "--leaf-password", "s3cret", "--algorithms", "language_detection")
	up.waitOutput(t, "pnp is up")
	if want := "nats-leaf://leaf:PASSWORD@" + leafAddr; !strings.Contains(up.stdout.String(), want) {
		t.Errorf("banner does not name %s:\n%s", want, up.stdout.String())
	}
	good := startLeaf(t, "good", leafAddr, "s3cret")
	bad := startLeaf(t, "bad", leafAddr, "wrong")
	gc := connectNATS(t, good.url)
	natstest.Eventually(t, 30*time.Second, func() bool { return hubReachable(gc) }, "the leaf with the password does not reach pnp up's JetStream")
	code, stdout, stderr := runPnp(t, "algorithms", "--server", good.url, "--js-domain", "hub")
	if code != 0 || !strings.Contains(stdout, "language_detection") {
		t.Errorf("pnp algorithms through the leaf: exit %d\n%s\n%s", code, stdout, stderr)
	}
	bc := connectNATS(t, bad.url)
	for range 3 {
		if hubReachable(bc) {
			t.Fatal("a leaf with the wrong password reaches pnp up's JetStream")
		}
	}
	if _, err := bc.Request("run.language_detection", []byte(`{"text":"hello"}`), time.Second); err == nil {
		t.Fatal("a leaf with the wrong password reaches pnp up's runner")
	}
}

// TestLeafWithOwnJetStream runs `pnp runner --js-domain hub` on a leaf
// node that has JetStream of its own in domain edge: the runner's
// registration goes to the hub's discovery, not the edge's, and requests
// made at the hub reach it; the edge's own JetStream stays apart.
func TestLeafWithOwnJetStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server processes")
	}
	isolateEnv(t)
	hub, leafPort := leafHub(t)
	edge := startNATS(t, "edge", fmt.Sprintf(`jetstream { store_dir: %q, domain: edge }
leafnodes { reconnect: "250ms", remotes: [ { url: "nats-leaf://leaf:s3cret@127.0.0.1:%d" } ] }`, t.TempDir(), leafPort))
	ec := connectNATS(t, edge.url)
	natstest.Eventually(t, 30*time.Second, func() bool { return hubReachable(ec) }, "the edge does not reach the hub's JetStream")
	if code, _, stderr := runPnp(t, "provision", "--server", edge.url, "--js-domain", "hub", "--wait", "30s"); code != 0 {
		t.Fatalf("pnp provision --js-domain hub from the edge: exit %d: %s", code, stderr)
	}
	startPnp(t, "runner", "--server", edge.url, "--js-domain", "hub", "--algorithms", "language_detection")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := connectNATS(t, hub.url)
	hubReg, err := discovery.Open(ctx, mustJetStream(t, hc), discovery.Config{})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		regs, err := hubReg.Lookup(ctx, "language_detection")
		return err == nil && len(regs) == 1
	}, "the edge runner is not registered in the hub's discovery")
	msg, err := hc.Request("run.language_detection", []byte(`{"text":"Le renard brun saute par-dessus le chien paresseux"}`), 10*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"fr"`) {
		t.Fatalf("run.language_detection from the hub: %v %q", err, msgData(msg))
	}
	// pnp gateway on the edge with --js-domain hub lists the hub's
	// algorithms and puts jobs into the hub's JOBS.
	gw := startPnp(t, "gateway", "--server", edge.url, "--js-domain", "hub", "--http", "127.0.0.1:0", "--log-level", "warn")
	gw.waitOutput(t, "gateway on http://")
	m := regexp.MustCompile(`gateway on (http://[0-9.:]+)/`).FindStringSubmatch(gw.stdout.String())
	if m == nil {
		t.Fatalf("no address in %q", gw.stdout.String())
	}
	hc2 := &http.Client{Timeout: 30 * time.Second}
	var listed string
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(listed, "language_detection"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/algorithms through the edge: %s\ngateway log:\n%s", listed, gw.stderr.String())
		}
		resp, err := hc2.Get(m[1] + "/v1/algorithms")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		listed = fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	resp, err := hc2.Post(m[1]+"/v1/algorithms/language_detection/jobs", "application/json", strings.NewReader(`{"text":"Der schnelle braune Fuchs springt über den faulen Hund"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST a job through the edge's gateway: %d %s", resp.StatusCode, body)
	}
	hubJobs, err := mustJetStream(t, hc).Stream(ctx, jobs.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := hubJobs.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("the hub's JOBS after a job posted at the edge: %v %+v", err, info)
	}
	// The edge's own JetStream (domain edge) holds no discovery bucket.
	info, err := mustJetStream(t, ec).AccountInfo(ctx)
	if err != nil || info.Domain != "edge" {
		t.Fatalf("edge JetStream: %v %+v", err, info)
	}
	if _, err := mustJetStream(t, ec).KeyValue(ctx, discovery.Bucket); err == nil {
		t.Error("the runner made a discovery bucket in the edge's own JetStream")
	}
}
