package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
)

// DefaultQueueGroup is the queue group replicas share unless told otherwise.
const DefaultQueueGroup = "runners"

// DefaultDrainTimeout bounds how long a stopping runner waits for in-flight
// requests before cancelling them.
const DefaultDrainTimeout = 30 * time.Second

// SDK names this library in registration records.
const SDK = "pnpworker-go/0.1.0"

// Option configures a Runner.
type Option func(*options) error

type options struct {
	log          zerolog.Logger
	queueGroup   string
	discovery    discovery.Config
	provision    bool
	drainTimeout time.Duration
	host         string
	metadata     map[string]string
	checkOutput  bool
	metrics      prometheus.Registerer
	shared       *Metrics
	routes       rollout.Config
	jsAPIPrefix  string
}

// WithJetStreamAPIPrefix makes the runner reach JetStream (discovery,
// routes, object inputs and outputs) through prefix instead of $JS.API: a
// JetStream domain's "$JS.<domain>.API" when the runner connects to a leaf
// node, or the prefix under which another account's JetStream is imported.
// Default: "$JS.API".
func WithJetStreamAPIPrefix(prefix string) Option {
	return func(o *options) error {
		if err := CheckJetStreamAPIPrefix(prefix); err != nil {
			return err
		}
		o.jsAPIPrefix = prefix
		return nil
	}
}

// CheckJetStreamAPIPrefix reports whether prefix can be a JetStream API
// prefix (WithJetStreamAPIPrefix): a non-empty subject without wildcards,
// whitespace, or a leading or trailing dot.
func CheckJetStreamAPIPrefix(prefix string) error {
	if prefix == "" || strings.ContainsAny(prefix, " \t\r\n*>") || strings.HasPrefix(prefix, ".") || strings.HasSuffix(prefix, ".") {
		return fmt.Errorf("JetStream API prefix %q is not a subject prefix", prefix)
	}
	return nil
}

// WithJetStreamDomain makes the runner reach the JetStream of domain (the
// hub's, when the runner connects to a leaf node): the same as
// WithJetStreamAPIPrefix("$JS.<domain>.API").
func WithJetStreamDomain(domain string) Option {
	return func(o *options) error {
		if domain == "" || strings.ContainsAny(domain, " \t\r\n*>.") {
			return fmt.Errorf("JetStream domain %q is not a single subject token", domain)
		}
		o.jsAPIPrefix = "$JS." + domain + ".API"
		return nil
	}
}

// keyPutPrefix is what the runner's key-value puts go under: nothing on
// the account's own JetStream, the API prefix and a dot on another's (the
// jetstream client puts under the API prefix when it has one).
func (r *Runner) keyPutPrefix() string {
	if r.opts.jsAPIPrefix == "" || r.opts.jsAPIPrefix == "$JS.API" {
		return ""
	}
	return r.opts.jsAPIPrefix + "."
}

// jetStream is the runner's JetStream context, through the configured
// API prefix.
func (r *Runner) jetStream() (jetstream.JetStream, error) {
	if r.opts.jsAPIPrefix == "" {
		return jetstream.New(r.nc)
	}
	return jetstream.NewWithAPIPrefix(r.nc, r.opts.jsAPIPrefix)
}

// WithLogger sets the logger. Default: none (zerolog.Nop).
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithQueueGroup sets the queue group every algorithm subscribes in.
// Default DefaultQueueGroup.
func WithQueueGroup(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("queue group is empty")
		}
		o.queueGroup = name
		return nil
	}
}

// WithDiscovery sets the discovery bucket configuration. Default: the
// default bucket, see discovery.Config.
func WithDiscovery(cfg discovery.Config) Option {
	return func(o *options) error { o.discovery = cfg; return o.discovery.Validate() }
}

// WithoutProvisioning makes the runner bind to an existing discovery
// bucket instead of creating it, and use its algorithms' outputs buckets
// (objref.OutputsBucketFor) only as pnp provision made them, for
// credentials that may not create streams. Default: the runner provisions
// the discovery and routes buckets idempotently and creates its
// algorithms' outputs buckets when they are missing.
func WithoutProvisioning() Option {
	return func(o *options) error { o.provision = false; return nil }
}

// WithDrainTimeout bounds how long Run waits for in-flight requests after
// its context is cancelled; requests still running then are cancelled and
// answered 503. Default DefaultDrainTimeout.
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("drain timeout %s must be positive", d)
		}
		o.drainTimeout = d
		return nil
	}
}

// WithHost sets the host name put in registration records. Default
// os.Hostname().
func WithHost(h string) Option {
	return func(o *options) error { o.host = h; return nil }
}

// WithMetadata adds key/values to registration records and micro metadata.
func WithMetadata(md map[string]string) Option {
	return func(o *options) error {
		for k, v := range md {
			o.metadata[k] = v
		}
		return nil
	}
}

// WithoutOutputValidation skips checking each output against the output
// schema. Default: outputs are checked, and one that does not match is a
// 500 (an algorithm bug is caught where it happens, not by a consumer).
func WithoutOutputValidation() Option {
	return func(o *options) error { o.checkOutput = false; return nil }
}

// WithRoutes sets the routes bucket configuration. Default: the default
// bucket, see rollout.Config.
func WithRoutes(cfg rollout.Config) Option {
	return func(o *options) error { o.routes = cfg; return cfg.Validate() }
}

// Runner serves a set of algorithms on one NATS connection. Create it with
// New and call Run once.
type Runner struct {
	nc   *nats.Conn
	algs []*Algorithm
	opts options

	metrics *Metrics // nil without WithMetrics or WithSharedMetrics

	mu        sync.Mutex
	endpoints []*endpoint
	started   chan struct{}
}

// New checks the algorithms (at least one, no nil, no duplicate names) and
// options. Nothing is subscribed or registered until Run.
func New(nc *nats.Conn, algorithms []*Algorithm, opts ...Option) (*Runner, error) {
	o := options{
		log:          zerolog.Nop(),
		queueGroup:   DefaultQueueGroup,
		provision:    true,
		drainTimeout: DefaultDrainTimeout,
		metadata:     map[string]string{},
		checkOutput:  true,
	}
	var errs []error
	if nc == nil {
		errs = append(errs, errors.New("nats connection is nil"))
	}
	if len(algorithms) == 0 {
		errs = append(errs, errors.New("no algorithms to serve"))
	}
	seen := map[string]bool{}
	for i, a := range algorithms {
		if a == nil {
			errs = append(errs, fmt.Errorf("algorithm %d is nil", i))
			continue
		}
		if seen[a.Name()] {
			errs = append(errs, fmt.Errorf("algorithm %q listed twice", a.Name()))
		}
		seen[a.Name()] = true
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			errs = append(errs, err)
		}
	}
	if o.host == "" {
		o.host, _ = os.Hostname()
	}
	if o.metrics != nil && o.shared != nil {
		errs = append(errs, errors.New("both WithMetrics and WithSharedMetrics"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	r := &Runner{nc: nc, algs: algorithms, opts: o, started: make(chan struct{}), metrics: o.shared}
	if o.metrics != nil {
		m, err := NewMetrics(o.metrics)
		if err != nil {
			return nil, err
		}
		r.metrics = m
	}
	return r, nil
}

// Started is closed when every algorithm is subscribed and registered.
func (r *Runner) Started() <-chan struct{} { return r.started }

// Instances returns the registration keys of this runner's instances, one
// per algorithm, once Started is closed.
func (r *Runner) Instances() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.endpoints))
	for _, e := range r.endpoints {
		keys = append(keys, e.rec.Key())
	}
	return keys
}

// Run subscribes every algorithm, registers it in discovery and serves
// requests until ctx is cancelled. It subscribes as soon as it has read the
// routes of its algorithms and provisions its buckets meanwhile, so requests
// may be served before Started is closed. Once ctx is cancelled it deletes
// the registrations first (callers stop picking this instance), drains the
// subscriptions (requests already delivered are still served), waits for
// admitted requests up to the drain timeout, cancels what still runs
// (answered 503), and returns nil. It returns an error only when start-up
// fails.
func (r *Runner) Run(ctx context.Context) error {
	log := r.opts.log
	js, err := r.jetStream()
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	names := make([]string, 0, len(r.algs))
	for _, a := range r.algs {
		names = append(names, a.Name()) // New refused duplicates
	}

	// Only the routes must be known before the first subscription (a
	// version must not take plain traffic against its route). Provisioning
	// the buckets and reading the live instances are needed to register,
	// and for a route that names another version: they follow the first
	// read of the routes, and run while the runner subscribes.
	prov := newProvisioning()
	// Routes decide which versions are in the shared queue group on
	// run.<algorithm>, and the live instances decide whether a route's
	// stable version can serve it; both are followed for as long as the
	// runner runs, for its own algorithms only and without a consumer
	// (views.go).
	watchCtx, stopWatching := context.WithCancel(context.WithoutCancel(ctx))
	table := newRouteView(r.nc, r.opts.jsAPIPrefix, js, r.opts.routes, names, prov.routesBucket, log)
	cache := newLiveView(r.nc, names, r.keyPutPrefix(), log)
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() { defer watchWG.Done(); table.run(watchCtx) }()
	defer watchWG.Wait()
	defer stopWatching()
	var reg *discovery.Registry
	// followLive waits for provisioning and starts following the live
	// instances.
	followLive := func() error {
		select {
		case <-prov.done:
		case <-ctx.Done():
			return nil
		}
		if prov.err != nil {
			return fmt.Errorf("runner: %w", prov.err)
		}
		reg = prov.reg
		cache.reg = reg
		watchWG.Add(1)
		go func() { defer watchWG.Done(); cache.run(watchCtx) }()
		return nil
	}
	// The first read of the routes does not queue behind provisioning's
	// JetStream API requests.
	select {
	case <-table.tried:
	case <-time.After(routesWait):
	case <-ctx.Done():
		return nil
	}
	r.startProvisioning(ctx, js, prov)
	defer prov.wait()
	// Start as a member only where the routes allow it: wait (briefly) for
	// them, so that a new version does not take plain traffic for a moment
	// against its route.
	select {
	case <-table.Ready():
	case <-time.After(routesWait):
		log.Warn().Dur("waited", routesWait).Msg("routes not loaded in time; starting as a member of every shared queue group")
	case <-ctx.Done():
		return nil
	}
	mem := &membership{table: table, cache: cache}
	if mem.needsLive(r.algs) {
		// A route names another stable version: whether this one serves
		// run.<algorithm> as a fallback depends on that version being live.
		if err := followLive(); err != nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-cache.Ready():
		case <-time.After(routesWait):
			log.Warn().Dur("waited", routesWait).Msg("discovery not loaded in time")
		case <-ctx.Done():
			return nil
		}
	}

	// base outlives ctx: requests keep running while draining and are
	// cut short (interruptAll) only when the drain timeout passes.
	base := context.WithoutCancel(ctx)

	var eps []*endpoint
	memCtx, stopMembership := context.WithCancel(ctx)
	defer stopMembership()
	memDone := make(chan struct{})
	abort := func() {
		stopMembership()
		if mem.eps != nil {
			<-memDone
		}
		for _, e := range eps {
			e.interruptAll()
		}
		for _, e := range eps {
			e.unsubscribeMonitor()
			e.unsubscribeAll()
			e.close()
		}
	}
	for _, a := range r.algs {
		e, err := r.startEndpoint(base, a, mem, cache, prov.done)
		if err != nil {
			abort()
			return fmt.Errorf("runner: %s: %w", a.Name(), err)
		}
		eps = append(eps, e)
	}
	mem.eps = eps
	go func() { defer close(memDone); mem.run(memCtx) }()
	if reg == nil {
		if err := followLive(); err != nil || ctx.Err() != nil {
			abort()
			return err
		}
	}

	// Register only after subscribing: a registered instance always has
	// someone listening.
	for _, e := range eps {
		if err := reg.Register(ctx, e.rec); err != nil {
			for _, done := range eps {
				_ = reg.Deregister(context.WithoutCancel(ctx), done.rec.Key())
			}
			abort()
			return fmt.Errorf("runner: register %s: %w", e.rec.Key(), err)
		}
	}
	kaCtx, stopKeepalive := context.WithCancel(ctx)
	defer stopKeepalive()
	var kaWG sync.WaitGroup
	for _, e := range eps {
		kaWG.Add(1)
		go func() {
			defer kaWG.Done()
			reg.Keepalive(kaCtx, e.rec, e.log)
		}()
	}
	r.mu.Lock()
	r.endpoints = eps
	r.mu.Unlock()
	if r.metrics != nil {
		r.metrics.attach(r)
		// After the workers are done: the counts it keeps are final.
		defer r.metrics.detach(r)
	}
	close(r.started)
	for _, e := range eps {
		e.log.Info().Str("subject", e.rec.Subject).Str("pinned_subject", discovery.PinnedSubject(e.rec.Algorithm, e.rec.Version)).
			Bool("shared_queue_group", e.isPlainMember()).Str("queue_group", e.rec.QueueGroup).
			Int("max_concurrency", e.rec.MaxConcurrency).Msg("serving")
	}

	<-ctx.Done()
	log.Info().Msg("stopping: deregistering, then draining")
	stopMembership()
	<-memDone
	stopKeepalive()
	kaWG.Wait()

	drainCtx, cancelDrain := context.WithTimeout(context.Background(), r.opts.drainTimeout)
	defer cancelDrain()
	for _, e := range eps {
		e.unsubscribeMonitor()
		e.drainSubs()
	}
	// Ask the server to confirm the unsubscribes: after that, what was
	// delivered is in the subscription's queue and handled before the
	// subscription reports itself closed.
	if err := r.nc.FlushWithContext(drainCtx); err != nil {
		log.Debug().Err(err).Msg("flush while draining")
	}
	timedOut := false
	for _, e := range eps {
		if !e.waitDrained(drainCtx) {
			timedOut = true
		}
	}
	if timedOut {
		log.Warn().Dur("drain_timeout", r.opts.drainTimeout).Msg("drain timeout: cancelling in-flight requests")
		for _, e := range eps {
			e.interruptAll()
		}
	}
	// Workers finish what is queued (at once when cancelled) and exit. A
	// function that ignores its cancelled context is left behind after a
	// short grace period rather than holding the process hostage.
	for _, e := range eps {
		if !e.closeWithin(stuckGrace) {
			e.log.Error().Msg("an algorithm call ignores cancellation; leaving it behind")
		}
	}
	log.Info().Msg("stopped")
	return nil
}

// stuckGrace is how long Run waits, after cancelling, for calls that ignore
// their context.
const stuckGrace = 2 * time.Second

// routesWait bounds how long Run waits at start-up for the routes and the
// discovery view.
const routesWait = 2 * time.Second

func (r *Runner) startEndpoint(base context.Context, a *Algorithm, mem *membership, cache *liveView, provisioned <-chan struct{}) (*endpoint, error) {
	spec := a.Spec()
	limit := spec.MaxConcurrency + spec.MaxPending
	instance := nuid.Next()
	log := r.opts.log.With().Str("algorithm", spec.Name).Str("instance", instance).Logger()
	js, err := r.jetStream()
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	e := &endpoint{
		alg:         a,
		nc:          r.nc,
		js:          js,
		base:        log.WithContext(base), // zerolog.Ctx(ctx) in every request
		instance:    instance,
		log:         log,
		jsLog:       newJSLog(log),
		jobs:        make(chan job, limit),
		limit:       limit,
		maxWorkers:  spec.MaxConcurrency,
		idle:        make(chan struct{}),
		drained:     make(chan struct{}),
		checkOutput: r.opts.checkOutput,
		started:     time.Now().UTC(),
		metadata:    map[string]string{"sdk": SDK, "host": r.opts.host},
		cache:       cache,
		provisioned: provisioned,
	}
	if r.metrics != nil {
		e.metrics = r.metrics
		e.okObs = r.metrics.duration.WithLabelValues(spec.Name, "200")
	}
	for k, v := range r.opts.metadata {
		e.metadata[k] = v
	}
	e.rec = discovery.Registration{
		Algorithm:      spec.Name,
		Version:        spec.Version,
		Instance:       instance,
		Subject:        a.Subject(),
		QueueGroup:     r.opts.queueGroup,
		Description:    spec.Description,
		InputSchema:    spec.InputSchema,
		OutputSchema:   spec.OutputSchema,
		TimeoutMS:      max(1, spec.Timeout.Milliseconds()),
		MaxConcurrency: spec.MaxConcurrency,
		Host:           r.opts.host,
		SDK:            SDK,
		StartedAt:      e.started,
		Metadata:       r.opts.metadata,
	}
	if len(e.rec.Metadata) == 0 {
		e.rec.Metadata = nil
	}
	e.okHeader = nats.Header{
		protocol.HeaderInstance:  []string{instance},
		protocol.HeaderAlgorithm: []string{spec.Name},
		protocol.HeaderVersion:   []string{spec.Version},
	}
	member, _ := mem.want(e)
	if err := e.subscribe(member); err != nil {
		e.close()
		return nil, err
	}
	if err := e.subscribeMonitor(); err != nil {
		e.unsubscribeMonitor()
		e.unsubscribeAll()
		e.close()
		return nil, err
	}
	return e, nil
}
