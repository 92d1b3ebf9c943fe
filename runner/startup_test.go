package runner_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

// A runner subscribes before it has provisioned its buckets, but never
// before it knows its route: when Started is closed, version 2.0.0 is in
// the shared queue group on run.<algorithm> exactly when the route that
// was there before it started lets it in. A wrong first decision would show
// here, since leaving takes runner.LeaveGrace while the check is at once.
func TestFirstSubscriptionFollowsTheRoute(t *testing.T) {
	cases := []struct {
		name string
		// route is stored before 2.0.0 starts: nil none, a route, or
		// "deleted" / "invalid".
		route   *rollout.Route
		special string
		// stableLive starts a 1.0.0 runner first.
		stableLive bool
		members    int // in the shared queue group once 2.0.0 started
	}{
		{name: "no route", stableLive: true, members: 2},
		{name: "route names this version", route: &rollout.Route{Stable: "2.0.0"}, stableLive: true, members: 2},
		{name: "route names another live version", route: &rollout.Route{Stable: "1.0.0"}, stableLive: true, members: 1},
		{name: "canary of another live version", route: &rollout.Route{Stable: "1.0.0", Canary: "2.0.0", Percent: 50}, stableLive: true, members: 1},
		{name: "route names a version with no live instance", route: &rollout.Route{Stable: "1.0.0"}, members: 1},
		{name: "route deleted", special: "deleted", stableLive: true, members: 2},
		{name: "invalid route", special: "invalid", stableLive: true, members: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			nc := s.Connect()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			routes, err := rollout.Provision(ctx, js, rollout.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.stableLive {
				start(t, s.Connect(), []*runner.Algorithm{wordCount(t, nil)})
			}
			switch {
			case tc.route != nil:
				r := *tc.route
				r.Algorithm = "word_count"
				if err := routes.Set(ctx, r); err != nil {
					t.Fatal(err)
				}
			case tc.special == "deleted":
				if err := routes.Set(ctx, rollout.Route{Algorithm: "word_count", Stable: "1.0.0"}); err != nil {
					t.Fatal(err)
				}
				if err := routes.Clear(ctx, "word_count"); err != nil {
					t.Fatal(err)
				}
			case tc.special == "invalid":
				if _, err := routes.KeyValue().Put(ctx, "word_count", []byte(`{"stable": 42}`)); err != nil {
					t.Fatal(err)
				}
			}
			start(t, s.Connect(), []*runner.Algorithm{wordCount(t, func(sp *runner.Spec) { sp.Version = "2.0.0" })})
			plain := discovery.RequestSubject("word_count")
			if got := s.QueueSubscribers(plain, runner.DefaultQueueGroup); got != tc.members {
				t.Fatalf("%d members of the shared queue group once 2.0.0 started, want %d", got, tc.members)
			}
			want := "2.0.0"
			if tc.members == 1 && tc.stableLive {
				want = "1.0.0"
			}
			if got := answers(t, nc, plain, "", 5); tc.members == 1 && got[want] != 5 {
				t.Fatalf("plain requests: %v, want %s only", got, want)
			}
		})
	}
}

// A runner on a server with no buckets yet makes them while it serves,
// and follows the routes bucket it made: a route set afterwards moves it
// out of the shared queue group without waiting for the next look for a
// missing bucket.
func TestStartOnAnEmptyServer(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, s.Connect(), []*runner.Algorithm{wordCount(t, func(sp *runner.Spec) { sp.Version = "2.0.0" })})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, bucket := range []string{discovery.Bucket, rollout.Bucket} {
		if _, err := js.KeyValue(ctx, bucket); err != nil {
			t.Fatalf("bucket %s once the runner started: %v", bucket, err)
		}
	}
	if _, err := js.ObjectStore(ctx, objref.OutputsBucketFor("word_count")); err != nil {
		t.Fatalf("outputs bucket once the runner started: %v", err)
	}
	plain := discovery.RequestSubject("word_count")
	if got := answers(t, nc, plain, "", 3); got["2.0.0"] != 3 {
		t.Fatalf("plain requests without a route: %v", got)
	}
	start(t, s.Connect(), []*runner.Algorithm{wordCount(t, nil)})
	routes, err := rollout.Open(ctx, js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := routes.Set(ctx, rollout.Route{Algorithm: "word_count", Stable: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	// The routes are read every 0.5 s; a missing bucket is looked for
	// again only every 5 s. 4 s tells them apart on a busy machine.
	natstest.Eventually(t, 4*time.Second, func() bool { return s.QueueSubscribers(plain, runner.DefaultQueueGroup) == 1 },
		"2.0.0 never left the shared queue group")
}
