package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/rollout"
)

// A runner runs foreign code, so it creates no JetStream consumer: the
// server does not check a consumer's deliver subject against its creator's
// permissions, so whoever may create one can make the server deliver
// stream data into any subject (run.<other algorithm>, notify.<x>), again
// and again, after it has gone. The runner reads the routes and the live
// instances of its own algorithms with direct gets instead, polled, which
// nats.conf can confine to those algorithms' keys.

// routePoll is how often the runner reads the routes of its algorithms: a
// route change takes effect within it (plus LeaveGrace for a version that
// leaves).
const routePoll = 500 * time.Millisecond

// livePollDivisor sets how often the runner reads the live instances of
// its algorithms: every discovery TTL / livePollDivisor (3 s at the
// default 15 s), so an instance that died without deregistering is seen
// gone within TTL plus that. Registrations and deregistrations are seen at
// once through a core subscription on the algorithms' keys: a delete
// takes its key out, the put of an unknown key puts its record in. The
// direct gets are the truth (an expiry is not published on the key's
// subject).
const livePollDivisor = 5

// kvOperationHeader marks a delete or purge on a key's subject.
const kvOperationHeader = "KV-Operation"

// view is a lock-free per-algorithm snapshot with a change signal, like
// discovery.Cache and rollout.Table.
type view[V any] struct {
	cur       atomic.Pointer[map[string]V]
	readyOnce sync.Once
	ready     chan struct{}
	mu        sync.Mutex
	changed   chan struct{}
}

func newView[V any]() *view[V] {
	v := &view[V]{ready: make(chan struct{}), changed: make(chan struct{})}
	v.cur.Store(&map[string]V{})
	return v
}

func (v *view[V]) get(alg string) (V, bool) {
	x, ok := (*v.cur.Load())[alg]
	return x, ok
}

// Ready is closed after the first read, successful or not.
func (v *view[V]) Ready() <-chan struct{} { return v.ready }

func (v *view[V]) markReady() { v.readyOnce.Do(func() { close(v.ready) }) }

// Changed returns a channel closed at the next change.
func (v *view[V]) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// update applies f to a copy of the snapshot and publishes it when f
// reports a change.
func (v *view[V]) update(f func(m map[string]V) bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := make(map[string]V, len(*v.cur.Load()))
	for k, x := range *v.cur.Load() {
		m[k] = x
	}
	if !f(m) {
		return
	}
	v.cur.Store(&m)
	close(v.changed)
	v.changed = make(chan struct{})
}

// routeView follows the routes of the runner's algorithms.
type routeView struct {
	*view[rollout.Route]
	js   jetstream.JetStream
	cfg  rollout.Config
	algs []string
	log  zerolog.Logger
	// provisioned is closed once the routes bucket has been provisioned
	// (or is not the runner's to make): a bucket missing before then is
	// looked for again as soon as it is.
	provisioned <-chan struct{}
	// nc and apiPrefix are what firstRead reads the routes through
	// before run binds the bucket.
	nc        *nats.Conn
	apiPrefix string
	// tried is closed once firstRead returned, successful or not.
	tried chan struct{}
	// codec is compiled at the first route read, not at start-up (used
	// by run's goroutine only).
	codec *rollout.Codec
	// invalid is the revision of each algorithm's route last found
	// invalid, so that it is logged once (used by run's goroutine only).
	invalid map[string]uint64
}

func newRouteView(nc *nats.Conn, apiPrefix string, js jetstream.JetStream, cfg rollout.Config, algs []string, provisioned <-chan struct{}, log zerolog.Logger) *routeView {
	return &routeView{view: newView[rollout.Route](), nc: nc, apiPrefix: apiPrefix, js: js, cfg: cfg, algs: algs, provisioned: provisioned, tried: make(chan struct{}), log: log, invalid: map[string]uint64{}}
}

// Lookup returns the route of algorithm, and whether there is one.
func (v *routeView) Lookup(alg string) (rollout.Route, bool) { return v.get(alg) }

// missingRoutesPoll is how often the runner looks for a routes bucket that
// does not exist.
const missingRoutesPoll = 5 * time.Second

// run reads the routes every routePoll until ctx ends. The bucket does not
// have to exist: without it there is no route, and it is looked for every
// missingRoutesPoll.
func (v *routeView) run(ctx context.Context) {
	if v.firstRead(ctx) {
		v.markReady()
	}
	close(v.tried)
	var kv jetstream.KeyValue
	missing := false
	var lookedFor time.Time
	poll(ctx, v.log, routePoll, "routes", v.markReady, func() error {
		if kv == nil {
			if missing && time.Since(lookedFor) < missingRoutesPoll {
				return nil
			}
			lookedFor = time.Now()
			// Bound directly: the store's codec is not needed to read.
			bucket := cmp.Or(v.cfg.Bucket, rollout.Bucket)
			b, err := v.js.KeyValue(ctx, bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) && v.waitProvisioned(ctx) {
				// Made by this runner's own provisioning meanwhile.
				b, err = v.js.KeyValue(ctx, bucket)
			}
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				if !missing {
					v.log.Info().Str("bucket", bucket).Msg("no routes bucket yet: every version serves run.<algorithm>; looking for it every 5s")
				}
				missing = true
				v.update(func(m map[string]rollout.Route) bool { had := len(m) > 0; clear(m); return had })
				return nil
			}
			if err != nil {
				return fmt.Errorf("routes bucket %s: %w", bucket, err)
			}
			kv, missing = b, false
		}
		for _, alg := range v.algs {
			if err := v.read(ctx, kv, alg); err != nil {
				kv = nil // bind again: the bucket may have been re-created
				return err
			}
		}
		return nil
	})
}

// waitProvisioned waits, once, for the runner's provisioning of the routes
// bucket, and reports whether it waited.
func (v *routeView) waitProvisioned(ctx context.Context) bool {
	if v.provisioned == nil {
		return false
	}
	select {
	case <-v.provisioned:
	case <-ctx.Done():
	}
	v.provisioned = nil
	return ctx.Err() == nil
}

func (v *routeView) read(ctx context.Context, kv jetstream.KeyValue, alg string) error {
	e, err := kv.Get(ctx, alg)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return v.apply(alg, nil, 0)
	case err != nil:
		return err
	}
	return v.apply(alg, e.Value(), e.Revision())
}

// firstRead reads the route of every algorithm with one direct get each
// ($JS.API.DIRECT.GET.KV_routes.$KV.routes.<algorithm>, as nats.conf
// grants), without binding the bucket first (a stream info, one more
// round trip through the server's JetStream API queue): the routes are
// what the runner must know before it subscribes, and Run starts
// provisioning only once this returned. It reports false when it could
// not read them all (no responder: no bucket, or one without direct gets;
// anything else), and the ordinary reads of run decide.
func (v *routeView) firstRead(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, routesWait)
	defer cancel()
	bucket := cmp.Or(v.cfg.Bucket, rollout.Bucket)
	for _, alg := range v.algs {
		m, err := v.nc.RequestWithContext(ctx, cmp.Or(v.apiPrefix, "$JS.API")+".DIRECT.GET.KV_"+bucket+".$KV."+bucket+"."+alg, nil)
		if err != nil {
			return false
		}
		var value []byte
		var rev uint64
		switch status := m.Header.Get("Status"); {
		case status == "404":
		case status != "":
			return false
		case m.Header.Get(kvOperationHeader) != "": // deleted or purged
		default:
			value = m.Data
			if rev, err = strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64); err != nil {
				return false
			}
		}
		if err := v.apply(alg, value, rev); err != nil {
			return false
		}
	}
	return true
}

// apply makes value (nil: none) the route of alg; revision is its
// revision in the bucket.
func (v *routeView) apply(alg string, value []byte, revision uint64) error {
	var r rollout.Route
	ok := false
	if value != nil {
		if v.codec == nil {
			var err error
			if v.codec, err = rollout.NewCodec(); err != nil {
				return err
			}
		}
		var err error
		if r, err = v.codec.Decode(alg, value); err != nil {
			if v.invalid[alg] != revision {
				v.invalid[alg] = revision
				v.log.Warn().Err(err).Str("key", alg).Msg("ignoring invalid route")
			}
		} else {
			ok = true
		}
	}
	v.update(func(m map[string]rollout.Route) bool {
		old, had := m[alg]
		if !ok {
			delete(m, alg)
			return had
		}
		m[alg] = r
		return !had || !sameRoute(old, r)
	})
	return nil
}

func sameRoute(a, b rollout.Route) bool {
	return a.Stable == b.Stable && a.Canary == b.Canary && a.Percent == b.Percent && a.Shadow == b.Shadow && a.UpdatedAt.Equal(b.UpdatedAt)
}

// liveView follows the live instances of the runner's algorithms.
type liveView struct {
	*view[[]discovery.Registration]
	nc *nats.Conn
	// reg is set before run is called: the view is made before the
	// discovery bucket is provisioned, and answers "none live" until run
	// has read it.
	reg  *discovery.Registry
	algs []string
	log  zerolog.Logger
	// putPrefix is what the runner's connection puts keys under: "" for
	// its account's own JetStream, "<API prefix>." when it reaches another
	// account's (WithJetStreamAPIPrefix).
	putPrefix string

	keysMu sync.Mutex
	// gone holds keys whose delete was seen on the key's subject, fresh
	// keys whose first put was: a read that raced with either (it listed
	// the bucket before the stream stored the message) must not undo it.
	// A put again of a key that was gone (the same instance registering
	// anew) takes it out of gone.
	gone, fresh map[string]time.Time
}

// freshMargin is how long before a read started a put seen on a key's
// subject may have been, for the read to be trusted to include it.
const freshMargin = time.Second

func newLiveView(nc *nats.Conn, algs []string, putPrefix string, log zerolog.Logger) *liveView {
	return &liveView{view: newView[[]discovery.Registration](), nc: nc, algs: algs, putPrefix: putPrefix, log: log,
		gone: map[string]time.Time{}, fresh: map[string]time.Time{}}
}

// Lookup returns the live instances of algorithm, sorted by key. The slice
// is shared: do not modify it.
func (v *liveView) Lookup(alg string) []discovery.Registration {
	regs, _ := v.get(alg)
	return regs
}

// hasVersion reports whether a live instance of algorithm has version.
func (v *liveView) hasVersion(alg, version string) bool {
	return slices.ContainsFunc(v.Lookup(alg), func(r discovery.Registration) bool { return r.Version == version })
}

// run reads the live instances every TTL/livePollDivisor until ctx ends,
// and applies the registrations and deregistrations of the algorithms seen
// on their keys' subjects in between. Those are the subjects the runners
// of the algorithms put on: under the API prefix when they reach another
// account's JetStream, where the puts are seen in their own account
// before they cross (what an operator puts by hand in the other account
// shows at the next read).
func (v *liveView) run(ctx context.Context) {
	prefix := v.putPrefix + "$KV." + v.reg.KeyValue().Bucket() + "."
	for _, alg := range v.algs {
		sub, err := v.nc.Subscribe(prefix+alg+".*", func(m *nats.Msg) { v.seen(strings.TrimPrefix(m.Subject, prefix), m) })
		if err != nil {
			v.log.Warn().Err(err).Str("algorithm", alg).Msg("cannot follow registrations as they happen; reading them every poll only")
			continue
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	poll(ctx, v.log, max(v.reg.TTL()/livePollDivisor, 100*time.Millisecond), "the live instances", v.markReady, func() error { return v.readAll(ctx) })
}

// seen applies a message on a key's subject: a delete takes the key out,
// the put of a key not known live puts its record in. A heartbeat of a
// known key changes nothing and costs no decoding.
func (v *liveView) seen(key string, m *nats.Msg) {
	alg, _, _ := strings.Cut(key, ".")
	now := time.Now()
	switch m.Header.Get(kvOperationHeader) {
	case "DEL", "PURGE":
		v.keysMu.Lock()
		v.gone[key] = now
		delete(v.fresh, key)
		v.keysMu.Unlock()
		v.update(func(mp map[string][]discovery.Registration) bool {
			regs := mp[alg]
			i := slices.IndexFunc(regs, func(r discovery.Registration) bool { return r.Key() == key })
			if i < 0 {
				return false
			}
			mp[alg] = slices.Delete(slices.Clone(regs), i, i+1)
			return true
		})
		return
	}
	if slices.ContainsFunc(v.Lookup(alg), func(r discovery.Registration) bool { return r.Key() == key }) {
		return // a heartbeat (a record changed under its key shows at the next read)
	}
	rec, err := v.reg.Codec().Decode(key, m.Data)
	if err != nil {
		return // the reads skip it too
	}
	v.keysMu.Lock()
	delete(v.gone, key)
	v.fresh[key] = now
	v.keysMu.Unlock()
	v.update(func(mp map[string][]discovery.Registration) bool {
		regs := slices.DeleteFunc(slices.Clone(mp[alg]), func(r discovery.Registration) bool { return r.Key() == key })
		mp[alg] = sortedByKey(append(regs, rec))
		return true
	})
}

func sortedByKey(regs []discovery.Registration) []discovery.Registration {
	slices.SortFunc(regs, func(a, b discovery.Registration) int { return strings.Compare(a.Key(), b.Key()) })
	return regs
}

func (v *liveView) readAll(ctx context.Context) error {
	ttl := v.reg.TTL()
	var errs []error
	for _, alg := range v.algs {
		started := time.Now()
		rctx, cancel := context.WithTimeout(ctx, ttl)
		regs, err := v.reg.LookupDirect(rctx, alg, nil)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Merged under the view's lock: a message seen on a key's subject
		// meanwhile is either taken into account here or applied after
		// this update.
		v.update(func(m map[string][]discovery.Registration) bool {
			v.keysMu.Lock()
			defer v.keysMu.Unlock()
			for _, seen := range []map[string]time.Time{v.gone, v.fresh} {
				for k, at := range seen {
					if time.Since(at) > ttl {
						delete(seen, k)
					}
				}
			}
			regs = slices.DeleteFunc(regs, func(r discovery.Registration) bool { _, g := v.gone[r.Key()]; return g })
			for _, r := range m[alg] {
				if at, ok := v.fresh[r.Key()]; ok && at.After(started.Add(-freshMargin)) &&
					!slices.ContainsFunc(regs, func(x discovery.Registration) bool { return x.Key() == r.Key() }) {
					regs = append(regs, r)
				}
			}
			regs = sortedByKey(regs)
			if sameInstances(m[alg], regs) {
				return false
			}
			m[alg] = regs
			return true
		})
	}
	return errors.Join(errs...)
}

func sameInstances(a, b []discovery.Registration) bool {
	return slices.EqualFunc(a, b, func(x, y discovery.Registration) bool { return x.Key() == y.Key() && x.Version == y.Version })
}

// poll calls read at once and then every interval until ctx ends, and
// ready after each round. It logs once when reading starts failing (what
// was read last is kept) and once when it works again.
func poll(ctx context.Context, log zerolog.Logger, every time.Duration, what string, ready func(), read func() error) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		err := read()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			log.Warn().Err(err).Msgf("reading %s failed; keeping the last seen, retrying", what)
			failing = true
		case err == nil && failing:
			log.Info().Msgf("reading %s works again", what)
			failing = false
		}
		ready()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
