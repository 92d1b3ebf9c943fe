package rollout_test

import (
	"math"
	"slices"
	"testing"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/rollout"
)

// Pick against fixed draws: a job goes to the canary exactly when its
// draw u is below Percent/100 and the canary is live, to the stable
// version otherwise while it is live, and to any live version
// (run.<algorithm>, Fallback) when the version it would go to is not.
func TestPick(t *testing.T) {
	below := func(x float64) float64 { return math.Nextafter(x, 0) }
	above := func(x float64) float64 { return math.Nextafter(x, 1) }
	canary30 := rollout.Route{Algorithm: alg, Stable: "1.0.0", Canary: "2.0.0", Percent: 30}
	with := func(r rollout.Route, percent float64) rollout.Route { r.Percent = percent; return r }
	both := map[string]bool{"1.0.0": true, "2.0.0": true}
	stableOnly := map[string]bool{"1.0.0": true}
	canaryOnly := map[string]bool{"2.0.0": true}
	stable := rollout.Choice{Version: "1.0.0"}
	canary := rollout.Choice{Version: "2.0.0", Canary: true}
	fallback := rollout.Choice{Fallback: true}
	for _, tc := range []struct {
		name string
		r    rollout.Route
		ok   bool
		u    float64
		live map[string]bool
		want rollout.Choice
		subj string
	}{
		{"no route", rollout.Route{}, false, 0, both, rollout.Choice{}, ""},
		{"no route, nothing live", rollout.Route{}, false, 0.5, nil, rollout.Choice{}, ""},
		{"stable only", rollout.Route{Algorithm: alg, Stable: "1.0.0"}, true, 0, both, stable, "1.0.0"},
		{"stable only, not live", rollout.Route{Algorithm: alg, Stable: "1.0.0"}, true, 0, canaryOnly, fallback, ""},
		{"shadow is never picked", rollout.Route{Algorithm: alg, Stable: "1.0.0", Shadow: "2.0.0"}, true, 0, both, stable, "1.0.0"},
		{"30%, u 0", canary30, true, 0, both, canary, "2.0.0"},
		{"30%, u just below 0.3", canary30, true, below(0.3), both, canary, "2.0.0"},
		{"30%, u 0.3", canary30, true, 0.3, both, stable, "1.0.0"},
		{"30%, u just above 0.3", canary30, true, above(0.3), both, stable, "1.0.0"},
		{"30%, u just below 1", canary30, true, below(1), both, stable, "1.0.0"},
		{"12.5%, u just below 0.125", with(canary30, 12.5), true, below(0.125), both, canary, "2.0.0"},
		{"12.5%, u 0.125", with(canary30, 12.5), true, 0.125, both, stable, "1.0.0"},
		{"0%, u 0", with(canary30, 0), true, 0, both, stable, "1.0.0"},
		{"100%, u 0", with(canary30, 100), true, 0, both, canary, "2.0.0"},
		{"100%, u just below 1", with(canary30, 100), true, below(1), both, canary, "2.0.0"},
		{"canary not live, u in its share", canary30, true, 0.1, stableOnly, stable, "1.0.0"},
		{"100%, canary not live", with(canary30, 100), true, 0.1, stableOnly, stable, "1.0.0"},
		{"stable not live, u in the canary's share", canary30, true, 0.1, canaryOnly, canary, "2.0.0"},
		{"stable not live, u past the canary's share", canary30, true, 0.5, canaryOnly, fallback, ""},
		{"neither live", canary30, true, 0.1, nil, fallback, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rollout.Pick(tc.r, tc.ok, tc.u, func(v string) bool { return tc.live[v] })
			if got != tc.want {
				t.Fatalf("Pick(u=%v) = %+v, want %+v", tc.u, got, tc.want)
			}
			want := tc.subj
			switch want {
			case "":
				want = discovery.RequestSubject(alg)
			case "1.0.0", "2.0.0":
				want = discovery.PinnedSubject(alg, want)
			}
			if s := got.Subject(alg); s != want {
				t.Fatalf("subject %s, want %s", s, want)
			}
		})
	}
}

func TestRole(t *testing.T) {
	r := rollout.Route{Algorithm: "a", Stable: "1", Canary: "2", Percent: 12.5, Shadow: "3"}
	for _, tc := range []struct {
		name       string
		route      rollout.Route
		ok         bool
		version    string
		stableLive bool
		want       string
	}{
		{"no route", rollout.Route{}, false, "1", false, "any"},
		{"stable", r, true, "1", true, "stable"},
		{"canary with its share", r, true, "2", true, "canary:12.5%"},
		{"shadow", r, true, "3", true, "shadow"},
		{"another version", r, true, "4", true, "unrouted"},
		{"the canary while the stable version is down", r, true, "2", false, "fallback"},
		{"another version while the stable version is down", r, true, "4", false, "fallback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rollout.Role(tc.route, tc.ok, tc.version, tc.stableLive); got != tc.want {
				t.Errorf("Role = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRouteNotLive(t *testing.T) {
	regs := []discovery.Registration{{Algorithm: alg, Version: "1"}, {Algorithm: alg, Version: "1"}, {Algorithm: alg, Version: "3"}}
	for _, tc := range []struct {
		name  string
		route rollout.Route
		want  []string
	}{
		{"every version live", rollout.Route{Algorithm: alg, Stable: "1", Shadow: "3"}, nil},
		{"a canary not started", rollout.Route{Algorithm: alg, Stable: "1", Canary: "2", Percent: 10}, []string{"2"}},
		{"all named, in order", rollout.Route{Algorithm: alg, Stable: "4", Canary: "5", Percent: 10, Shadow: "6"}, []string{"4", "5", "6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.route.NotLive(regs); !slices.Equal(got, tc.want) {
				t.Errorf("NotLive = %v, want %v", got, tc.want)
			}
		})
	}
	if got := (rollout.Route{Algorithm: alg, Stable: "1"}).NotLive(nil); !slices.Equal(got, []string{"1"}) {
		t.Errorf("NotLive without instances = %v, want [1]", got)
	}
}
