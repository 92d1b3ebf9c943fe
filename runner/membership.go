package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
)

// LeaveGrace is how long an instance stays in the shared queue group on
// run.<algorithm> after a route change says it should leave. The version
// that joins does so at once, so during a change of stable version plain
// requests keep finding a responder.
const LeaveGrace = 250 * time.Millisecond

// subs holds an endpoint's request subscriptions: the pinned subject of its
// version, always, and run.<algorithm> while it belongs to the shared queue
// group.
type subs struct {
	mu       sync.Mutex
	pinned   *nats.Subscription
	plain    *nats.Subscription
	leaving  time.Time // when a wish to leave was first seen; zero: none
	stopping bool
	final    map[*nats.Subscription]bool // draining at shutdown, not yet closed
}

// subscribe subscribes the pinned subject, and the plain one when member.
func (e *endpoint) subscribe(member bool) error {
	s := &e.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	pinned, err := e.queueSubscribe(discovery.PinnedSubject(e.alg.spec.Name, e.alg.spec.Version))
	if err != nil {
		return err
	}
	s.pinned = pinned
	if member {
		if s.plain, err = e.queueSubscribe(e.alg.Subject()); err != nil {
			_ = pinned.Unsubscribe()
			s.pinned = nil
			return err
		}
	}
	return nil
}

func (e *endpoint) queueSubscribe(subject string) (*nats.Subscription, error) {
	sub, err := e.nc.QueueSubscribe(subject, e.rec.QueueGroup, e.handle)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// The closed handler of an async subscription runs after its last
	// callback returned: a drain at shutdown is complete when every
	// subscription drained then has closed. One left after a route change
	// (not in final) closes without effect.
	sub.SetClosedHandler(func(string) { e.subClosed(sub) })
	return sub, nil
}

func (e *endpoint) subClosed(sub *nats.Subscription) {
	s := &e.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.final[sub] {
		return
	}
	delete(s.final, sub)
	if len(s.final) == 0 {
		e.markDrained()
	}
}

// isPlainMember reports whether the instance is in the shared queue group.
func (e *endpoint) isPlainMember() bool {
	e.subs.mu.Lock()
	defer e.subs.mu.Unlock()
	return e.subs.plain != nil
}

// setPlain joins (at once) or leaves (once the wish to leave is LeaveGrace
// old) the shared queue group on run.<algorithm>. Leaving drains: requests
// already delivered are served. It reports when to look again (zero: no
// need).
func (e *endpoint) setPlain(member bool, now time.Time) (recheck time.Duration) {
	s := &e.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return 0
	}
	switch {
	case member:
		s.leaving = time.Time{}
		if s.plain == nil {
			sub, err := e.queueSubscribe(e.alg.Subject())
			if err != nil {
				e.log.Error().Err(err).Msg("joining the shared queue group failed; retrying")
				return time.Second
			}
			s.plain = sub
			e.log.Info().Str("subject", sub.Subject).Msg("joined the shared queue group")
		}
	case s.plain != nil:
		if s.leaving.IsZero() {
			s.leaving = now
		}
		if wait := LeaveGrace - now.Sub(s.leaving); wait > 0 {
			return wait
		}
		if err := s.plain.Drain(); err != nil {
			e.log.Debug().Err(err).Msg("drain plain subscription")
		}
		e.log.Info().Str("subject", s.plain.Subject).Msg("left the shared queue group (a route names another stable version)")
		s.plain, s.leaving = nil, time.Time{}
	}
	return 0
}

// drainSubs drains every request subscription at shutdown; markDrained
// follows when all have closed.
func (e *endpoint) drainSubs() {
	s := &e.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	s.final = map[*nats.Subscription]bool{}
	for _, sub := range []*nats.Subscription{s.pinned, s.plain} {
		if sub != nil {
			s.final[sub] = true
		}
	}
	if len(s.final) == 0 {
		e.markDrained()
		return
	}
	for sub := range s.final {
		if err := sub.Drain(); err != nil {
			e.log.Debug().Err(err).Msg("drain subscription")
			delete(s.final, sub)
		}
	}
	if len(s.final) == 0 {
		e.markDrained()
	}
}

// unsubscribeAll drops every request subscription (start-up failed).
func (e *endpoint) unsubscribeAll() {
	s := &e.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	for _, sub := range []*nats.Subscription{s.pinned, s.plain} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
}

// membership keeps every endpoint's place in the shared queue group in
// line with the routes and the live versions, until ctx ends.
type membership struct {
	eps   []*endpoint
	table *routeView
	cache *liveView
}

// want reports whether e belongs to the shared queue group now, and
// whether that is a fallback (its route's stable version has no live
// instance).
func (m *membership) want(e *endpoint) (member, fallback bool) {
	spec := e.alg.spec
	r, ok := m.table.Lookup(spec.Name)
	if !ok || r.Stable == spec.Version {
		return true, false
	}
	select {
	case <-m.cache.Ready():
	default:
		// The live instances are not read yet (the runner subscribes
		// before it reads them): a version the route does not make
		// stable stays out until it is known whether the stable one is
		// live, rather than take plain traffic against the route.
		return false, false
	}
	stableLive := false
	for _, reg := range m.cache.Lookup(spec.Name) {
		if reg.Version == r.Stable {
			stableLive = true
			break
		}
	}
	return rollout.PlainMember(r, ok, spec.Version, stableLive), !stableLive
}

// needsLive reports whether deciding the membership of any of algs takes
// the live instances: a route of its algorithm names another stable
// version.
func (m *membership) needsLive(algs []*Algorithm) bool {
	for _, a := range algs {
		if r, ok := m.table.Lookup(a.spec.Name); ok && r.Stable != a.spec.Version {
			return true
		}
	}
	return false
}

func (m *membership) run(ctx context.Context) {
	fallback := map[*endpoint]bool{}
	// The first read of the live instances may find what was assumed
	// (none): it changes nothing, but decides the fallbacks.
	ready := m.cache.Ready()
	for {
		tableChanged, cacheChanged := m.table.Changed(), m.cache.Changed()
		var recheck time.Duration
		now := time.Now()
		for _, e := range m.eps {
			member, fb := m.want(e)
			if fb != fallback[e] {
				fallback[e] = fb
				if r, _ := m.table.Lookup(e.alg.spec.Name); fb {
					e.log.Warn().Str("stable", r.Stable).Msg("the route's stable version has no live instance: serving run.<algorithm> as a fallback")
				} else {
					e.log.Info().Msg("the route's stable version is live again")
				}
			}
			if d := e.setPlain(member, now); d > 0 && (recheck == 0 || d < recheck) {
				recheck = d
			}
		}
		var timer <-chan time.Time
		if recheck > 0 {
			timer = time.After(recheck)
		}
		select {
		case <-ctx.Done():
			return
		case <-tableChanged:
		case <-cacheChanged:
		case <-ready:
			ready = nil
		case <-timer:
		}
	}
}

// forward relays a request that asks for another version
// (HeaderVersionWanted) to that version's pinned subject, and reports
// whether it took care of the request.
//
// It relays rather than re-publishes with the caller's reply subject: when
// the caller is in another account (a runner team's own account in
// nats.conf), that reply subject is the server's response mapping, which
// only the instance the server delivered the request to may answer. A
// relay is admitted like a request (it counts against MaxConcurrency plus
// MaxPending, and a drain waits for it) but takes no worker: it waits on
// its own goroutine for the pinned instance's answer and passes it on,
// headers and body as they are.
func (e *endpoint) forward(m *nats.Msg, cache *liveView) bool {
	want := m.Header.Get(protocol.HeaderVersionWanted)
	spec := e.alg.spec
	if want == "" || want == spec.Version || m.Subject != e.alg.Subject() {
		return false
	}
	live := cache != nil && cache.hasVersion(spec.Name, want)
	// At start-up the runner serves before it has read the live
	// instances: a "not live" then waits for the first read, on the
	// relay's goroutine (handle must not block).
	unread := false
	if !live && cache != nil {
		select {
		case <-cache.Ready():
			live = cache.hasVersion(spec.Name, want)
		default:
			unread = true
		}
	}
	now := time.Now()
	if !live && !unread {
		e.replyError(m.Reply, m.Header, now, notLive(spec.Name, want))
		return true
	}
	deadline, ok, err := callerDeadline(m.Header, now)
	if err != nil {
		e.replyError(m.Reply, m.Header, now, &Error{Code: CodeInvalidInput, Message: err.Error(), NotStarted: true})
		return true
	}
	if !ok || deadline.After(now.Add(RelayTimeout)) {
		deadline = now.Add(RelayTimeout)
	}
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		e.replyError(m.Reply, m.Header, now, &Error{Code: CodeUnavailable, Message: "draining: runner is shutting down", NotStarted: true})
		return true
	case e.admitted >= e.limit:
		e.mu.Unlock()
		e.overloaded.Add(1)
		e.replyError(m.Reply, m.Header, now, &Error{Code: CodeUnavailable, Message: fmt.Sprintf("overloaded: %d requests running and %d waiting", spec.MaxConcurrency, spec.MaxPending), NotStarted: true})
		return true
	}
	e.admitted++
	e.mu.Unlock()
	go func() {
		defer e.done()
		if unread {
			select {
			case <-cache.Ready():
			case <-time.After(routesWait):
			}
			if !cache.hasVersion(spec.Name, want) {
				e.replyError(m.Reply, m.Header, now, notLive(spec.Name, want))
				return
			}
		}
		e.relay(m, discovery.PinnedSubject(spec.Name, want), now, deadline)
	}()
	return true
}

// RelayTimeout is the longest a runner waits for the version a request asked
// for (Pnp-Version) to answer, when the caller set no earlier deadline. It
// matches the RESPONSE_WINDOW of nats.conf: an answer later than that could
// not be passed on.
const RelayTimeout = 2 * time.Minute

// relay sends m to subject as a request and answers m with what comes back.
func (e *endpoint) relay(m *nats.Msg, subject string, received, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	resp, err := e.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Header: m.Header, Data: m.Data})
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// Gone since discovery last listed it: nothing was started.
		e.replyError(m.Reply, m.Header, received, notLive(e.alg.spec.Name, m.Header.Get(protocol.HeaderVersionWanted)))
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		e.replyError(m.Reply, m.Header, received, &Error{Code: CodeDeadline, Message: "the version asked for did not answer in time"})
		return
	case err != nil:
		e.replyError(m.Reply, m.Header, received, &Error{Code: CodeUnavailable, Message: "relaying to the version asked for failed", Err: err})
		return
	}
	if err := e.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: resp.Header, Data: resp.Data}); err != nil {
		e.log.Warn().Err(err).Str("subject", subject).Msg("passing on the answer of the version asked for")
	}
}

// notLive is the answer to a request for a version with no live instance.
func notLive(alg, version string) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("%s version %q has no live instance", alg, version), NotStarted: true}
}
