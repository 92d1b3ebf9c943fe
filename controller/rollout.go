package controller

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/rollout"
)

// rolloutState remembers, per algorithm, whether its route currently falls
// back (names a stable version with no live instance), so the change is
// logged once rather than for every job.
type rolloutState struct {
	mu       sync.Mutex
	fallback map[string]bool
	// canaryRejected counts jobs picked for the canary whose input its
	// schema rejects, sent to the stable version instead.
	canaryRejected atomic.Int64
}

// chooseVersion picks the version of one job of alg from its route:
// the canary for the route's share of jobs, else the stable version, each
// on its pinned subject; with no route, or when the route's versions have
// no live instance, run.<alg> (any version). It returns the subject and
// the registrations of the instances that may answer, which the input is
// validated against and the time budget taken from. A job picked for the
// canary whose input the canary's schema rejects goes to the stable
// version instead: a candidate must never fail a job the stable version
// accepts.
func (c *Controller) chooseVersion(alg string, regs []discovery.Registration, body []byte) (string, []discovery.Registration) {
	if c.routes == nil {
		return discovery.RequestSubject(alg), regs
	}
	r, ok := c.routes.Lookup(alg)
	if !ok {
		return discovery.RequestSubject(alg), regs
	}
	live := func(v string) bool {
		for _, x := range regs {
			if x.Version == v {
				return true
			}
		}
		return false
	}
	choice := rollout.Pick(r, ok, rand.Float64(), live)
	c.noteFallback(alg, r, choice.Fallback)
	if choice.Version == "" {
		return choice.Subject(alg), regs
	}
	of := ofVersion(regs, choice.Version)
	if choice.Canary && c.schemas.Validate(of, body) != nil && live(r.Stable) {
		c.rollout.canaryRejected.Add(1)
		return discovery.PinnedSubject(alg, r.Stable), ofVersion(regs, r.Stable)
	}
	return choice.Subject(alg), of
}

func ofVersion(regs []discovery.Registration, version string) []discovery.Registration {
	var of []discovery.Registration
	for _, x := range regs {
		if x.Version == version {
			of = append(of, x)
		}
	}
	return of
}

func (c *Controller) noteFallback(alg string, r rollout.Route, fallback bool) {
	s := &c.rollout
	s.mu.Lock()
	if s.fallback == nil {
		s.fallback = map[string]bool{}
	}
	was := s.fallback[alg]
	s.fallback[alg] = fallback
	s.mu.Unlock()
	switch {
	case fallback && !was:
		c.log.Warn().Str("algorithm", alg).Str("stable", r.Stable).
			Msg("the route's stable version has no live instance: jobs go to any live version")
	case !fallback && was:
		c.log.Info().Str("algorithm", alg).Str("stable", r.Stable).Msg("the route's stable version is live again")
	}
}
