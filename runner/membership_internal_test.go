package runner

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/rollout"
)

// Before the first read of the live instances a runner does not know
// whether its route's stable version is live: a version the route does not
// name stays out of the shared queue group until it knows (it serves the
// algorithm's plain traffic as a fallback only when the stable version is
// known to have no live instance). A route that changes to another stable
// version while the runner starts must not draw plain traffic to it.
func TestMembershipNoFallbackBeforeLiveRead(t *testing.T) {
	table := &routeView{view: newView[rollout.Route]()}
	cache := newLiveView(nil, []string{"alg"}, "", zerolog.Nop())
	table.update(func(m map[string]rollout.Route) bool {
		m["alg"] = rollout.Route{Stable: "1.0.0"}
		return true
	})
	m := &membership{table: table, cache: cache}
	e := &endpoint{alg: &Algorithm{spec: Spec{Name: "alg", Version: "2.0.0"}}}
	if member, fallback := m.want(e); member || fallback {
		t.Fatalf("before the live instances are read: member %v, fallback %v; want neither", member, fallback)
	}
	// Read, and no instance of 1.0.0 is live: 2.0.0 falls back in.
	cache.markReady()
	if member, fallback := m.want(e); !member || !fallback {
		t.Fatalf("stable version not live: member %v, fallback %v; want both", member, fallback)
	}
	// The stable version itself is a member whatever the live instances.
	s := &endpoint{alg: &Algorithm{spec: Spec{Name: "alg", Version: "1.0.0"}}}
	cache2 := newLiveView(nil, []string{"alg"}, "", zerolog.Nop())
	if member, fallback := (&membership{table: table, cache: cache2}).want(s); !member || fallback {
		t.Fatalf("stable version: member %v, fallback %v", member, fallback)
	}
}
