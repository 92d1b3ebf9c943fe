package runner_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

// The runner follows routes and live instances without consumers, and
// still sees an instance that dies without deregistering: its key expires
// after the bucket's max age, which is published on no subject, and the
// other version joins the shared queue group as the fallback.
func TestDeadStableFallsBackWithoutConsumers(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ttl := 3 * time.Second
	if _, err := discovery.Provision(ctx, js, discovery.Config{TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	routes, err := rollout.Provision(ctx, js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stableConn := s.Connect()
	start(t, stableConn, []*runner.Algorithm{wordCount(t, nil)})
	start(t, s.Connect(), []*runner.Algorithm{wordCount(t, func(sp *runner.Spec) { sp.Version = "2.0.0" })})
	if err := routes.Set(ctx, rollout.Route{Algorithm: "word_count", Stable: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	plain := discovery.RequestSubject("word_count")
	natstest.Eventually(t, 10*time.Second, func() bool { return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 1 },
		"2.0.0 never left the shared queue group")
	if got := answers(t, nc, plain, "", 10); got["1.0.0"] != 10 {
		t.Fatalf("the member left is not the stable version: %v", got)
	}
	for _, name := range []string{"KV_discovery", "KV_routes"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.CachedInfo().State.Consumers; n != 0 {
			t.Errorf("%s has %d consumers; the runners must create none", name, n)
		}
	}

	// The stable instance dies: its connection goes, its key stays until
	// the max age.
	stableConn.Close()
	died := time.Now()
	// Once the server has dropped the dead connection's subscriptions
	// nobody serves plain traffic, until 2.0.0 sees the key expire.
	natstest.Eventually(t, 10*time.Second, func() bool { return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 0 },
		"the server kept the dead instance's subscription")
	natstest.Eventually(t, 4*ttl, func() bool {
		return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 1 && answers(t, nc, plain, "", 1)["2.0.0"] == 1
	}, "2.0.0 never took over plain traffic after the stable instance died")
	t.Logf("2.0.0 serves plain traffic %s after the stable instance died (max age %s)", time.Since(died).Round(100*time.Millisecond), ttl)
}
