package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

const alg = "ver_echo"

type echoIn struct {
	N int `json:"n"`
}
type echoOut struct {
	N       int    `json:"n"`
	Version string `json:"version"`
}

// serve runs one runner of ver_echo at version until the test ends (or
// the returned function is called) and waits until it is registered.
func serve(t *testing.T, s *natstest.Server, version string) context.CancelFunc {
	t.Helper()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: alg, Version: version,
		InputSchema:  []byte(`{"type":"object","properties":{"n":{"type":"integer"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["n","version"]}`),
		Timeout:      5 * time.Second,
	}, func(ctx context.Context, in echoIn) (echoOut, error) {
		return echoOut{N: in.N, Version: version}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(s.Connect(), []*runner.Algorithm{a},
		runner.WithLogger(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)), runner.WithDrainTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	select {
	case <-r.Started():
	case <-done:
		t.Fatal("runner stopped before it started")
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}
	return stop
}

func store(t *testing.T, nc *nats.Conn) *rollout.Store {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rollout.Provision(context.Background(), js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// versions sends n plain requests and counts the answering versions.
func versions(t *testing.T, nc *nats.Conn, subject string, n int, hdr nats.Header) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		m := &nats.Msg{Subject: subject, Data: fmt.Appendf(nil, `{"n":%d}`, i), Header: hdr}
		reply, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			got["error: "+err.Error()]++
			continue
		}
		if e := protocol.ReplyError(reply); e != nil {
			got[fmt.Sprintf("error %d", e.Code)]++
			continue
		}
		got[reply.Header.Get(protocol.HeaderVersion)]++
	}
	return got
}

func only(got map[string]int, version string, n int) bool { return len(got) == 1 && got[version] == n }

// Two versions side by side: without a route both take plain traffic;
// with a route only the stable one does, within moments of the change,
// while the pinned subject and the Pnp-Version header still reach the
// other; promote moves plain traffic; a route naming a version with no
// live instance falls back to every live version.
func TestRoutesSteerPlainTraffic(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	st := store(t, nc)
	serve(t, s, "1.0.0")
	serve(t, s, "2.0.0")
	ctx := context.Background()
	plain := discovery.RequestSubject(alg)

	natstest.Eventually(t, 10*time.Second, func() bool {
		got := versions(t, nc, plain, 50, nil)
		return got["1.0.0"] > 0 && got["2.0.0"] > 0
	}, "without a route both versions should answer plain requests")

	if err := st.Set(ctx, rollout.Route{Algorithm: alg, Stable: "1.0.0", Canary: "2.0.0", Percent: 10}); err != nil {
		t.Fatal(err)
	}
	// 2.0.0 leaves runner.LeaveGrace after it sees the route: replies that
	// happen to come from 1.0.0 prove nothing while both are members, so
	// wait until the server holds a single member, then check it is 1.0.0.
	natstest.Eventually(t, 5*time.Second, func() bool { return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 1 },
		"2.0.0 never left the shared queue group")
	if got := versions(t, nc, plain, 20, nil); !only(got, "1.0.0", 20) {
		t.Fatalf("the one member left is not the stable version: %v", got)
	}
	if got := versions(t, nc, plain, 200, nil); !only(got, "1.0.0", 200) {
		t.Fatalf("200 plain requests with stable 1.0.0: %v", got)
	}
	if got := versions(t, nc, discovery.PinnedSubject(alg, "2.0.0"), 20, nil); !only(got, "2.0.0", 20) {
		t.Fatalf("pinned to 2.0.0: %v", got)
	}
	if got := versions(t, nc, plain, 20, nats.Header{protocol.HeaderVersionWanted: {"2.0.0"}}); !only(got, "2.0.0", 20) {
		t.Fatalf("plain with %s: 2.0.0: %v", protocol.HeaderVersionWanted, got)
	}
	if got := versions(t, nc, plain, 3, nats.Header{protocol.HeaderVersionWanted: {"9.9.9"}}); !only(got, "error 404", 3) {
		t.Fatalf("plain asking for a version nobody serves: %v", got)
	}

	r, err := st.Promote(ctx, alg, "test")
	if err != nil || r.Stable != "2.0.0" || r.Canary != "" {
		t.Fatalf("promote: %+v %v", r, err)
	}
	changed := time.Now()
	natstest.Eventually(t, 5*time.Second, func() bool {
		return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 1 && only(versions(t, nc, plain, 20, nil), "2.0.0", 20)
	}, "plain traffic never moved to the promoted version alone")
	t.Logf("plain traffic moved to the promoted version %s after the change", time.Since(changed).Round(time.Millisecond))

	if err := st.Set(ctx, rollout.Route{Algorithm: alg, Stable: "3.0.0"}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		got := versions(t, nc, plain, 50, nil)
		return got["1.0.0"] > 0 && got["2.0.0"] > 0 && got["1.0.0"]+got["2.0.0"] == 50
	}, "a route to a version with no live instance should fall back to every live version")

	if err := st.Clear(ctx, alg); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, alg); !errors.Is(err, rollout.ErrNoRoute) {
		t.Fatalf("get after clear: %v", err)
	}
}

// When the stable version's last instance goes, the others join the
// shared queue group instead of leaving plain requests unanswered.
func TestStableGoneFallsBack(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	st := store(t, nc)
	stop1 := serve(t, s, "1.0.0")
	serve(t, s, "2.0.0")
	if err := st.Set(context.Background(), rollout.Route{Algorithm: alg, Stable: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	plain := discovery.RequestSubject(alg)
	// Only once 2.0.0 has left does its coming back prove the fallback.
	natstest.Eventually(t, 5*time.Second, func() bool {
		return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 1 && only(versions(t, nc, plain, 20, nil), "1.0.0", 20)
	}, "stable never took over alone")
	stop1() // deregisters first
	natstest.Eventually(t, 5*time.Second, func() bool { return only(versions(t, nc, plain, 20, nil), "2.0.0", 20) },
		"with the stable version gone, the other should serve plain traffic")
}

// Routes are validated: schema, key, and the rules between fields.
func TestRouteValidation(t *testing.T) {
	c, err := rollout.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for name, r := range map[string]rollout.Route{
		"no stable":          {Algorithm: alg, UpdatedAt: now},
		"bad version":        {Algorithm: alg, Stable: "v1", UpdatedAt: now},
		"canary is stable":   {Algorithm: alg, Stable: "1.0.0", Canary: "1.0.0", Percent: 5, UpdatedAt: now},
		"shadow is stable":   {Algorithm: alg, Stable: "1.0.0", Shadow: "1.0.0", UpdatedAt: now},
		"canary w/o percent": {Algorithm: alg, Stable: "1.0.0", Canary: "2.0.0", UpdatedAt: now},
		"percent over 100":   {Algorithm: alg, Stable: "1.0.0", Canary: "2.0.0", Percent: 101, UpdatedAt: now},
		"bad algorithm":      {Algorithm: "Bad.Name", Stable: "1.0.0", UpdatedAt: now},
	} {
		if _, err := c.Encode(r); !errors.Is(err, rollout.ErrInvalidRoute) {
			t.Errorf("%s: %v, want ErrInvalidRoute", name, err)
		}
	}
	b, err := c.Encode(rollout.Route{Algorithm: alg, Stable: "1.0.0", Canary: "2.0.0-rc.1", Percent: 30, Shadow: "3.0.0", UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decode("other", b); !errors.Is(err, rollout.ErrInvalidRoute) {
		t.Fatalf("route stored under another key: %v", err)
	}
}

// A table started before the routes bucket exists is ready at once (no
// routes) and picks the bucket up once it is created (pnp route set
// creates it), instead of giving up on it.
func TestTableWaitsForTheBucket(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	tbl := rollout.NewTable(js, rollout.Config{}, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tbl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-tbl.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("table not ready without a bucket")
	}
	st := store(t, nc)
	if err := st.Set(context.Background(), rollout.Route{Algorithm: alg, Stable: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 15*time.Second, func() bool { r, ok := tbl.Lookup(alg); return ok && r.Stable == "1.0.0" },
		"the table never saw the bucket created after it started")
}
