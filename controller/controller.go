package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/replycheck"
	"github.com/pnpworker/pnpworker/rollout"
)

// Defaults of Config.
const (
	DefaultMaxInFlight     = 64
	DefaultAckWait         = 30 * time.Second
	DefaultMaxAttempts     = 5
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = time.Minute
	DefaultNoRunnerDelay   = 2 * time.Second
	DefaultDrainTimeout    = 30 * time.Second
	DefaultMaxJobAge       = 7 * 24 * time.Hour
	DefaultMaxNotStarted   = 100

	// DefaultMaxUnservedJobAge is how long the jobs of an algorithm no
	// runner has ever registered for may wait.
	DefaultMaxUnservedJobAge = time.Hour

	// DefaultSchemaCacheBytes bounds the estimated heap of the compiled
	// schemas a controller keeps: four records at discovery's
	// MaxSchemaMemory.
	DefaultSchemaCacheBytes = replycheck.DefaultCacheBytes
	// DefaultSchemaCompileTimeout is how long a job waits for a schema to
	// compile before it goes on without the check.
	DefaultSchemaCompileTimeout = replycheck.DefaultCompileTimeout
	// DefaultMaxAlgorithms bounds the algorithms one controller serves.
	DefaultMaxAlgorithms = 1000
	// DefaultConsumerInactiveThreshold is how long the durable consumer of
	// an algorithm with no live runner survives on JOBS.
	DefaultConsumerInactiveThreshold = time.Hour
	// DefaultMaxReferencedOutputBytes bounds the output stored by
	// reference that a controller reads back to check.
	DefaultMaxReferencedOutputBytes = replycheck.DefaultMaxReferencedOutputBytes
)

// pollInterval bounds how long the consumer loop waits in one call of the
// message iterator; see consume.
const pollInterval = 250 * time.Millisecond

// stallCheck is how long the consumer loop waits for a delivery before it
// asks the server whether jobs are waiting for it (see consume); while
// none are, the wait before the next question doubles up to
// stallCheckMax, so an idle algorithm costs one consumer info request per
// 30 s. Variables only so tests can shorten them.
var (
	stallCheck    = 5 * time.Second
	stallCheckMax = 30 * time.Second
)

// Config configures a Controller. The zero value is the default controller:
// 64 jobs in flight, 30 s ack wait, 5 attempts with backoff 1 s, 2 s, 4 s,
// 8 s (capped at 1 min), jobs expired after 7 days and failed after 100
// deliveries refused without starting, default streams, provisioned at
// start-up.
type Config struct {
	// JetStream, when set, is how the controller reaches the streams and
	// buckets, e.g. jetstream.NewWithDomain(nc, "hub") for a controller
	// connected to a leaf node without JetStream of its own. It must be a
	// context over the connection given to New. Default jetstream.New(nc).
	JetStream jetstream.JetStream
	// Store configures the streams and buckets the controller provisions.
	Store StoreConfig
	// Routes names the routes bucket the controller follows to pick each
	// job's version (stable, canary). The zero value is the default bucket,
	// see rollout.Config; it need not exist (no routes then).
	Routes rollout.Config
	// Shadow configures running jobs on a route's shadow version; the zero
	// value is the default, see ShadowConfig.
	Shadow ShadowConfig
	// History configures the sampled record of succeeded jobs (input,
	// output, version, latency) in stream HISTORY that replay runs against
	// a candidate. The zero value is the default, see
	// rollout.HistoryConfig; a negative Rate records nothing.
	History rollout.HistoryConfig
	// Bind makes the controller use existing streams and buckets instead of
	// creating or updating them, for credentials that may not. Default
	// false: Run provisions everything idempotently.
	Bind bool
	// Declare names algorithms Run marks as known at start
	// (jobs.Store.Declare), so that the gateway and pnp submit accept
	// their jobs before any of their runners has registered: scale from
	// zero. KeepConsumers are declared too. Default none.
	Declare []string
	// MaxInFlight bounds the jobs this controller dispatches at once, over
	// all algorithms. Default DefaultMaxInFlight.
	MaxInFlight int
	// AckWait is how long JetStream waits for a job's ack before offering
	// it to another controller. Jobs that run longer are kept by progress
	// heartbeats sent every AckWait/4, so AckWait only bounds how soon the
	// jobs of a controller that died are taken over. Default DefaultAckWait.
	AckWait time.Duration
	// MaxAttempts is how many times a job is sent to a runner before a
	// retryable failure (timeout, 5xx) becomes final. Default
	// DefaultMaxAttempts.
	MaxAttempts int
	// RetryBackoff is the delay before the second attempt; it doubles for
	// each further one, up to MaxRetryBackoff, with ±20 % jitter. Defaults
	// DefaultRetryBackoff and DefaultMaxRetryBackoff.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// NoRunnerDelay is how long a job waits before it is offered again when
	// a registered runner did not answer at all (no responders: it died
	// and its registration has not expired yet). Such waits are not
	// attempts. Jobs of an algorithm with no registered runner are not
	// taken from JOBS at all. Default DefaultNoRunnerDelay.
	NoRunnerDelay time.Duration
	// DrainTimeout bounds how long Run waits for jobs in flight after its
	// context is cancelled; jobs still running then are handed back to
	// JOBS. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// MaxJobAge bounds how long a job may wait for an outcome, counted
	// from when JOBS stored it: an older job fails with 504 "expired" and
	// is dead-lettered, also when no runner serves its algorithm. Default
	// DefaultMaxJobAge.
	MaxJobAge time.Duration
	// MaxUnservedJobAge bounds how long a job may wait when no runner has
	// ever registered for its algorithm (no mark in bucket ServedBucket):
	// a flood of jobs nobody will run is gone after it, not after
	// MaxJobAge. Default DefaultMaxUnservedJobAge, at most MaxJobAge.
	MaxUnservedJobAge time.Duration
	// MaxNotStarted bounds how often a job may be handed to runners that
	// refuse it without starting it (Pnp-Not-Started: overloaded,
	// draining, or its budget spent before it started) or that do not
	// answer at all: once JetStream has delivered the job more than
	// MaxNotStarted times, the next such refusal fails it with that
	// refusal as its reason. The waits between refusals grow from
	// RetryBackoff to MaxRetryBackoff, so with the defaults a job is
	// refused for about 50 minutes before it fails. Default
	// DefaultMaxNotStarted.
	MaxNotStarted int

	// SchemaCacheBytes bounds the compiled input and output schemas the
	// controller keeps, in estimated bytes of heap (schemas.Cost); the
	// least recently used are dropped past it. Default
	// DefaultSchemaCacheBytes.
	SchemaCacheBytes int64
	// SchemaCompileTimeout is how long a job waits for a registered schema
	// to compile. Past it the job goes on unchecked (the runner checks its
	// input; its output is accepted) while the compile finishes in the
	// background, at most two at once. Default DefaultSchemaCompileTimeout.
	SchemaCompileTimeout time.Duration
	// MaxAlgorithms bounds how many algorithms this controller consumes
	// jobs for. Past it, algorithms that appear in discovery are not
	// served (logged as a warning) until others go; their jobs still
	// expire after MaxJobAge. Default DefaultMaxAlgorithms.
	MaxAlgorithms int
	// ConsumerInactiveThreshold is how long JetStream keeps an algorithm's
	// durable consumer on JOBS after the last pull: while no runner of the
	// algorithm is live, controllers do not pull, and the consumer is
	// deleted after this long, so names registered once do not leave
	// consumers forever. Jobs stay in JOBS; the consumer is created again
	// when a runner returns. While jobs of the algorithm wait in JOBS the
	// consumer is kept however long nobody pulls, and it is created from
	// the algorithm's first job on, also when no runner has ever
	// registered for it, so that autoscalers see the backlog (see
	// backlog.go). Default DefaultConsumerInactiveThreshold.
	ConsumerInactiveThreshold time.Duration
	// KeepConsumers names algorithms whose consumer on JOBS the
	// controller creates at start and keeps even while no job waits and
	// no runner is live: those whose runners an autoscaler starts from
	// zero (KEDA's nats-jetstream scaler reads a missing consumer as the
	// stream's last sequence, a backlog that is not there). Give every
	// controller replica the same list. Run also declares them
	// (jobs.Store.Declare, as Declare): their jobs are accepted while no
	// runner has ever registered. Default none.
	KeepConsumers []string
	// MaxReferencedOutputBytes bounds an output that a runner stored in
	// the outputs bucket and replied with by reference (output_ref): the
	// controller reads it back, at most this many bytes, and checks it
	// against the registered output schema like an output in the reply.
	// A larger or missing object fails the attempt with 502. -1 turns the
	// check off for referenced outputs (they are accepted unread). Default
	// DefaultMaxReferencedOutputBytes.
	MaxReferencedOutputBytes int64
	// Instance names this controller in logs and result records. Default
	// a new NUID.
	Instance string
	// Logger receives the controller's logs. The zero value discards them.
	Logger zerolog.Logger
	// Metrics receives the controller's Prometheus metrics
	// (pnp_controller_*, see docs/METRICS.md); New fails when it already
	// holds them (one controller per registry). The zero value (nil)
	// records none, at no cost.
	Metrics prometheus.Registerer
}

func (c *Config) setDefaults() {
	c.Shadow.setDefaults()
	c.History.SetDefaults()
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = max(DefaultMaxRetryBackoff, c.RetryBackoff)
	}
	if c.NoRunnerDelay == 0 {
		c.NoRunnerDelay = DefaultNoRunnerDelay
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxJobAge == 0 {
		c.MaxJobAge = DefaultMaxJobAge
	}
	if c.MaxUnservedJobAge == 0 {
		c.MaxUnservedJobAge = DefaultMaxUnservedJobAge
	}
	c.MaxUnservedJobAge = min(c.MaxUnservedJobAge, c.MaxJobAge)
	if c.MaxNotStarted == 0 {
		c.MaxNotStarted = DefaultMaxNotStarted
	}
	if c.SchemaCacheBytes == 0 {
		c.SchemaCacheBytes = DefaultSchemaCacheBytes
	}
	if c.SchemaCompileTimeout == 0 {
		c.SchemaCompileTimeout = DefaultSchemaCompileTimeout
	}
	if c.MaxAlgorithms == 0 {
		c.MaxAlgorithms = DefaultMaxAlgorithms
	}
	if c.ConsumerInactiveThreshold == 0 {
		c.ConsumerInactiveThreshold = DefaultConsumerInactiveThreshold
	}
	if c.MaxReferencedOutputBytes == 0 {
		c.MaxReferencedOutputBytes = DefaultMaxReferencedOutputBytes
	}
	if c.Instance == "" {
		c.Instance = nuid.Next()
	}
}

// Validate reports every problem with c (before defaults).
func (c Config) Validate() error {
	errs := []error{c.Store.Validate(), c.Routes.Validate(), c.Shadow.Validate(), c.History.Validate()}
	for _, a := range c.Declare {
		if !discovery.ValidAlgorithmName(a) {
			errs = append(errs, fmt.Errorf("declare: %q is not an algorithm name", a))
		}
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max in flight %d is negative", c.MaxInFlight))
	}
	if c.AckWait != 0 && c.AckWait < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("ack wait %s is below 100ms", c.AckWait))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("max attempts %d is negative", c.MaxAttempts))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"retry backoff", c.RetryBackoff}, {"max retry backoff", c.MaxRetryBackoff}, {"no runner delay", c.NoRunnerDelay}, {"drain timeout", c.DrainTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	if c.MaxJobAge < 0 || (c.MaxJobAge != 0 && c.MaxJobAge < time.Second) {
		errs = append(errs, fmt.Errorf("max job age %s is below 1s", c.MaxJobAge))
	}
	if c.MaxUnservedJobAge < 0 || (c.MaxUnservedJobAge != 0 && c.MaxUnservedJobAge < time.Second) {
		errs = append(errs, fmt.Errorf("max unserved job age %s is below 1s", c.MaxUnservedJobAge))
	}
	if c.MaxNotStarted < 0 {
		errs = append(errs, fmt.Errorf("max not started %d is negative", c.MaxNotStarted))
	}
	if c.SchemaCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("schema cache bytes %d is negative", c.SchemaCacheBytes))
	}
	if c.SchemaCompileTimeout < 0 {
		errs = append(errs, fmt.Errorf("schema compile timeout %s is negative", c.SchemaCompileTimeout))
	}
	if c.MaxAlgorithms < 0 {
		errs = append(errs, fmt.Errorf("max algorithms %d is negative", c.MaxAlgorithms))
	}
	if c.MaxReferencedOutputBytes < -1 {
		errs = append(errs, fmt.Errorf("max referenced output bytes %d is negative (-1 turns the check off)", c.MaxReferencedOutputBytes))
	}
	for _, alg := range c.KeepConsumers {
		if !discovery.ValidAlgorithmName(alg) {
			errs = append(errs, fmt.Errorf("keep consumers: %q is not a valid algorithm name", alg))
		}
	}
	if maxAlgs := cmp.Or(c.MaxAlgorithms, DefaultMaxAlgorithms); c.MaxAlgorithms >= 0 && len(c.KeepConsumers) > maxAlgs {
		errs = append(errs, fmt.Errorf("keep consumers: %d algorithms, more than max algorithms %d", len(c.KeepConsumers), maxAlgs))
	}
	if c.ConsumerInactiveThreshold != 0 && c.ConsumerInactiveThreshold < time.Second {
		errs = append(errs, fmt.Errorf("consumer inactive threshold %s is below 1s", c.ConsumerInactiveThreshold))
	}
	if c.MaxRetryBackoff != 0 && c.MaxRetryBackoff < c.RetryBackoff {
		errs = append(errs, fmt.Errorf("max retry backoff %s is below retry backoff %s", c.MaxRetryBackoff, c.RetryBackoff))
	}
	if c.Instance != "" && !discovery.ValidInstanceID(c.Instance) {
		errs = append(errs, fmt.Errorf("instance %q: want letters, digits, '_' or '-'", c.Instance))
	}
	return errors.Join(errs...)
}

// routesWait bounds how long Run waits at start-up for the routes.
const routesWait = 2 * time.Second

// ConsumerName is the durable consumer of JOBS that every controller
// replica shares for algorithm.
func ConsumerName(algorithm string) string { return jobs.ConsumerName(algorithm) }

const consumerPrefix = jobs.ConsumerPrefix

// Controller moves jobs from JOBS to runners and their outcomes to the
// results bucket. Any number of replicas can run against the same NATS:
// they share one durable consumer per algorithm and split the work. Create
// it with New and call Run once.
type Controller struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config
	log zerolog.Logger

	metrics *metrics // nil without Config.Metrics
	store   *Store
	cache   *discovery.Cache
	schemas *replycheck.Cache
	// routes and rollout choose each job's version (rollout.go).
	routes  *rollout.Table
	rollout rolloutState
	shadows atomic.Pointer[shadows] // set by Run; read by Stats at any time
	// work hands held jobs to MaxInFlight long-lived workers; a send
	// blocks while all of them are busy, which bounds the jobs in flight.
	// Long-lived workers keep their grown stacks, which matters at tens of
	// thousands of jobs per second.
	work chan *job
	// workHigh and workLow hand jobs of priority high and low; workers
	// take from the three by jobs.DispatchWeights (priority.go).
	workHigh, workLow chan *job
	// prio starts the pullers of high and low jobs (priority.go).
	prio  *priorityWatch
	batch int
	// epoch changes at every disconnect and reconnect, so a job whose
	// request spanned one can tell that its timeout was not the runner's
	// fault.
	epoch atomic.Uint64
	// cancels tells which jobs' records to read before their first
	// dispatch (cancelwatch.go).
	cancels cancelWatch
	// progress holds the jobs whose request is in flight, for their
	// runners' progress reports (progress.go).
	progress progressTable
	running  atomic.Bool
	ready    chan struct{}

	// pulled is the set of algorithms supervise runs a puller for
	// (map[string]bool, replaced whole, never changed in place): the
	// expiry sweep leaves those to their puller and expires the jobs of
	// all others, also those with live runners past MaxAlgorithms.
	pulled atomic.Pointer[map[string]bool]
	// walkNext is where the next walking sweep starts (0: the first job),
	// and walking says the sweep walks; both are the sweep goroutine's.
	walkNext uint64
	walking  bool
	// marked holds the live algorithms supervise has marked in
	// ServedBucket; an algorithm leaves it when its last runner does, so
	// it is marked again when one comes back.
	markedMu sync.Mutex
	marked   map[string]bool
	// keep is Config.KeepConsumers as a set, read-only after New.
	keep map[string]bool
	// backlog is the set of algorithms and priorities with jobs in JOBS
	// as the last tendOnce saw them (replaced whole); backlogOver,
	// tendOnce's own, is how many of them it left without a consumer.
	backlog     atomic.Pointer[map[queue]bool]
	backlogOver int

	workers sync.WaitGroup
	heldMu  sync.Mutex
	held    map[*job]struct{}
	started time.Time // set before stats are served, read-only after
}

// New checks cfg and returns a controller that will use nc. Nothing is
// provisioned or consumed until Run.
func New(nc *nats.Conn, cfg Config) (*Controller, error) {
	errs := []error{cfg.Validate()}
	if nc == nil {
		errs = append(errs, errors.New("nats connection is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	cfg.setDefaults()
	js := cfg.JetStream
	if js == nil {
		var err error
		if js, err = jetstream.New(nc); err != nil {
			return nil, fmt.Errorf("controller: %w", err)
		}
	}
	log := cfg.Logger.With().Str("controller", cfg.Instance).Logger()
	c := &Controller{
		nc:       nc,
		js:       js,
		cfg:      cfg,
		log:      log,
		schemas:  replycheck.NewCache(log, cfg.SchemaCacheBytes, cfg.SchemaCompileTimeout),
		work:     make(chan *job),
		workHigh: make(chan *job),
		workLow:  make(chan *job),
		prio:     newPriorityWatch(),
		batch:    cfg.MaxInFlight,
		ready:    make(chan struct{}),
		held:     map[*job]struct{}{},
		keep:     map[string]bool{},
	}
	for _, alg := range cfg.KeepConsumers {
		c.keep[alg] = true
	}
	if cfg.Metrics != nil {
		c.metrics = newMetrics(c)
		if err := cfg.Metrics.Register(c.metrics); err != nil {
			return nil, fmt.Errorf("controller: register metrics: %w", err)
		}
	}
	return c, nil
}

// Ready is closed once the streams are provisioned and the discovery cache
// has loaded, i.e. when the controller starts taking jobs.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Instance returns the controller's instance name.
func (c *Controller) Instance() string { return c.cfg.Instance }

// errClosed ends Run when the NATS connection is closed for good.
var errClosed = errors.New("controller: nats connection closed")

// Run provisions (or binds to) the streams, watches discovery and, for
// every algorithm with a live runner, consumes its jobs until ctx is
// cancelled. Transient failures — NATS restarts, missed heartbeats, leader
// changes, a deleted consumer — are logged and retried with backoff; Run
// returns an error only when it cannot start or the connection is closed.
//
// On cancellation it stops taking jobs, hands jobs fetched but not started
// back to JOBS, waits up to DrainTimeout for the jobs in flight to store
// their outcome, hands back the rest, and returns nil.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("controller: Run called twice")
	}
	closed := c.nc.StatusChanged(nats.CLOSED)
	defer c.nc.RemoveStatusListener(closed)
	status := c.nc.StatusChanged(nats.RECONNECTING, nats.CONNECTED)
	defer c.nc.RemoveStatusListener(status)
	go func() {
		for range status {
			c.epoch.Add(1)
			c.cancels.distrust()
		}
	}()

	store, err := c.open(ctx, closed)
	if err != nil || store == nil {
		return err
	}
	c.store = store
	for _, a := range slices.Concat(c.cfg.Declare, c.cfg.KeepConsumers) {
		if err := store.Declare(ctx, a); err != nil {
			c.log.Warn().Err(err).Str("algorithm", a).Msg("cannot declare the algorithm; its jobs are refused until a runner registers for it")
		}
	}

	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	sh := newShadows(bgCtx, c)
	c.shadows.Store(sh)
	defer func() {
		stopBG()
		bg.Wait()
		sh.Wait()
	}()
	c.cache = store.Registry().NewCache(c.log)
	c.routes = rollout.NewTable(c.js, c.cfg.Routes, c.log)
	bg.Add(5)
	go func() {
		defer bg.Done()
		_ = c.cache.Run(bgCtx)
	}()
	go func() {
		defer bg.Done()
		c.cancels.run(bgCtx, c)
	}()
	go func() {
		defer bg.Done()
		c.watchPriorities(bgCtx)
	}()
	go func() {
		defer bg.Done()
		_ = c.routes.Run(bgCtx)
	}()
	go func() {
		defer bg.Done()
		c.heartbeat(bgCtx)
	}()
	select {
	case <-c.cache.Ready():
	case <-ctx.Done():
		return nil
	case <-closed:
		return errClosed
	}
	// Routes pick each job's version; wait for them briefly, so that the
	// first jobs after a start follow the route too. Without the bucket
	// the table is ready at once (no routes).
	select {
	case <-c.routes.Ready():
	case <-time.After(routesWait):
		c.log.Warn().Dur("waited", routesWait).Msg("routes not loaded in time; jobs go to any version until they are")
	case <-ctx.Done():
		return nil
	}
	c.started = time.Now().UTC()
	stopStats := c.serveStats()
	defer stopStats()
	if sub, err := c.subscribeProgress(bgCtx); err != nil {
		c.log.Warn().Err(err).Msg("progress reports are not stored")
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}

	// In the background: with credentials that may not list consumers,
	// the listing waits for its timeout.
	bg.Add(1)
	go func() {
		defer bg.Done()
		c.tendConsumers(bgCtx)
	}()
	close(c.ready)
	c.log.Info().Int("max_in_flight", c.cfg.MaxInFlight).Dur("ack_wait", c.cfg.AckWait).
		Int("max_attempts", c.cfg.MaxAttempts).Msg("controller started")

	// jobCtx outlives ctx: jobs in flight finish while draining and are
	// cancelled only when the drain timeout passes.
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	for range c.cfg.MaxInFlight {
		c.workers.Add(1)
		go func() {
			defer c.workers.Done()
			w := newWorker(jobCtx)
			defer w.cancel()
			var turn int
			for {
				j, ok := c.next(&turn)
				if !ok {
					break
				}
				c.process(w, j)
				c.release(j)
			}
		}()
	}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		w := newWorker(jobCtx)
		defer w.cancel()
		c.sweep(sweepCtx, w)
	}()
	runErr := c.supervise(ctx, closed)
	stopSweep()
	<-sweepDone
	// Every puller has returned: nothing sends on work any more.
	close(c.work)
	close(c.workHigh)
	close(c.workLow)

	c.log.Info().Msg("stopping: waiting for jobs in flight")
	done := make(chan struct{})
	go func() {
		c.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(c.cfg.DrainTimeout):
		c.log.Warn().Dur("drain_timeout", c.cfg.DrainTimeout).Msg("drain timeout: handing the remaining jobs back")
		cancelJobs()
		<-done
	}
	if err := c.nc.Flush(); err != nil && !c.nc.IsClosed() {
		c.log.Debug().Err(err).Msg("flush after drain")
	}
	c.log.Info().Msg("controller stopped")
	return runErr
}

// open provisions or binds the store, retrying until it works: NATS or
// JetStream may not be ready yet. It returns a nil store when ctx ends.
func (c *Controller) open(ctx context.Context, closed <-chan nats.Status) (*Store, error) {
	backoff := 100 * time.Millisecond
	for {
		var (
			s   *Store
			err error
		)
		if c.cfg.Bind {
			if s, err = OpenStore(ctx, c.js, c.cfg.Store); err == nil {
				s.BindServed(ctx)
			}
		} else {
			cfg := c.cfg.Store
			cfg.Logger = c.log
			s, err = Provision(ctx, c.js, cfg)
		}
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		c.log.Warn().Err(err).Dur("retry_in", backoff).Msg("streams not available yet")
		select {
		case <-ctx.Done():
			return nil, nil
		case <-closed:
			return nil, errClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// supervise runs one puller per algorithm that has a live runner, starting
// and stopping them as discovery changes, until ctx ends or the connection
// closes. It returns after every puller has stopped.
func (c *Controller) supervise(ctx context.Context, closed <-chan nats.Status) error {
	pullers := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	unserved := 0
	defer func() {
		for _, stop := range pullers {
			stop()
		}
		wg.Wait()
	}()
	for {
		changed := c.cache.Changed()
		live := map[string]bool{}
		for _, r := range c.cache.All() {
			live[r.Algorithm] = true
		}
		for alg, stop := range pullers {
			if !live[alg] {
				c.log.Info().Str("algorithm", alg).Msg("no runner left: pausing its jobs")
				stop()
				delete(pullers, alg)
			}
		}
		var waiting []string
		for alg := range live {
			if _, ok := pullers[alg]; !ok {
				waiting = append(waiting, alg)
			}
		}
		c.markServed(ctx, live)
		slices.Sort(waiting)
		if n := len(pullers) + len(waiting) - c.cfg.MaxAlgorithms; n > 0 {
			if n != unserved {
				c.log.Warn().Int("max_algorithms", c.cfg.MaxAlgorithms).Int("unserved", n).
					Strs("first_unserved", waiting[len(waiting)-n:][:min(n, 10)]).
					Msg("more algorithms have runners than this controller serves; their jobs wait")
			}
			unserved = n
			waiting = waiting[:len(waiting)-n]
		} else {
			unserved = 0
		}
		for _, alg := range waiting {
			c.log.Info().Str("algorithm", alg).Msg("runner available: taking its jobs")
			pctx, stop := context.WithCancel(ctx)
			pullers[alg] = stop
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.pullAll(pctx, alg)
			}()
		}
		pulled := make(map[string]bool, len(pullers))
		for alg := range pullers {
			pulled[alg] = true
		}
		c.pulled.Store(&pulled)
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return errClosed
		case <-changed:
		}
	}
}

// pull consumes one algorithm's jobs of priority p until ctx ends,
// re-creating the consumer and its iterator after any failure.
func (c *Controller) pull(ctx context.Context, alg string, p jobs.Priority) {
	log := c.log.With().Str("algorithm", alg).Str("priority", string(p)).Logger()
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	for {
		delivered, err := c.consume(ctx, alg, p)
		if ctx.Err() != nil || c.nc.IsClosed() {
			return
		}
		if delivered {
			backoff = minBackoff
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("job consumer interrupted; resuming")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Controller) consumerConfig(alg string, p jobs.Priority) jetstream.ConsumerConfig {
	desc := "pnpworker controllers: jobs for " + alg
	if p != jobs.PriorityNormal {
		desc += " of priority " + string(p)
	}
	return jetstream.ConsumerConfig{
		Durable:       jobs.PriorityConsumerName(alg, p),
		Description:   desc,
		FilterSubject: jobs.JobSubject(alg, p),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		// Attempts are counted by the controller, which tells runner
		// failures from waits and restarts; the server never gives up.
		MaxDeliver:    -1,
		MaxAckPending: max(1000, 8*c.cfg.MaxInFlight),
		// Deleted by the server once no controller pulled for this long
		// (no live runner): JetStream counts waiting pull requests and
		// unacknowledged deliveries as activity, and the jobs stay in
		// the work-queue stream.
		// None while jobs wait or the consumer is kept: see backlog.go.
		InactiveThreshold: c.inactiveThreshold(alg, p),
	}
}

// consume runs one consumer iterator until it fails or ctx ends. It
// reports whether any job was delivered.
func (c *Controller) consume(ctx context.Context, alg string, p jobs.Priority) (bool, error) {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, JobsStream, c.consumerConfig(alg, p))
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) && !c.cfg.Bind {
			// A server that lost its store, or an operator who deleted the
			// stream: set everything up again.
			if _, perr := c.store.Reprovision(ctx); perr != nil {
				err = errors.Join(err, perr)
			}
		}
		return false, fmt.Errorf("controller: consumer for %s: %w", alg, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(c.batch))
	if err != nil {
		return false, fmt.Errorf("controller: consume %s: %w", alg, err)
	}
	defer func() { c.handBack(it) }()
	delivered := false
	work := c.workFor(p)
	// The iterator sends a pull request and then waits for messages or
	// status for it. When the server holding the request goes away without
	// the client losing its connection (the consumer leader of a cluster
	// is killed while the client is connected to another node), nothing
	// ever answers, and the iterator believes a batch is still pending and
	// never pulls again. Its own missing-heartbeat check cannot see it:
	// that timer lives inside one Next call and is stopped when the call
	// returns, and consume calls Next every pollInterval. A shorter
	// PullExpiry or PullHeartbeat does not help either, since a lost
	// request sends neither its expiry status nor heartbeats. So consume
	// watches the time it has waited in Next without a delivery: after
	// stallCheck it asks the consumer info whether jobs are waiting
	// (NumPending > 0, which a live pull request would have been given at
	// once) or no pull request is waiting at all (NumWaiting == 0), and
	// if so, with acknowledgements not at MaxAckPending, replaces the
	// iterator (same durable consumer), whose first Next pulls anew.
	check := stallCheck
	idleSince := time.Now()
	for {
		// Next is called with a short wait and called again when it
		// passes, instead of once with ctx: the iterator only issues a
		// pull request at the start of a Next call or when a message or
		// status arrives, and skips it while its goroutine is still
		// publishing the previous one. When that request is filled and
		// its last message taken before the goroutine clears its flag
		// (likely at PullMaxMessages(1), and under CPU load), no request
		// is outstanding and nothing arrives to trigger one: the
		// iterator idled until its missing-heartbeat check, 2 × 15 s
		// later. A new call re-checks within pollInterval.
		msg, err := it.Next(jetstream.NextMaxWait(pollInterval))
		if errors.Is(err, nats.ErrTimeout) {
			if ctx.Err() != nil {
				return delivered, nil
			}
			if idle := time.Since(idleSince); idle >= check {
				waiting, reason := c.jobsWaiting(ctx, cons)
				if !waiting {
					check = min(2*check, stallCheckMax)
					idleSince = time.Now()
					continue
				}
				c.log.Warn().Str("algorithm", alg).Dur("idle", idle).Str("reason", reason).
					Msg("job iterator idle while jobs wait; renewing it")
				c.handBack(it)
				if it, err = cons.Messages(jetstream.PullMaxMessages(c.batch)); err != nil {
					it = nil
					return delivered, fmt.Errorf("controller: renew iterator for %s: %w", alg, err)
				}
				check, idleSince = stallCheck, time.Now()
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return delivered, nil
			}
			return delivered, fmt.Errorf("controller: consume %s: %w", alg, err)
		}
		delivered = true
		j := c.hold(msg)
		select {
		case work <- j:
		case <-ctx.Done():
			c.release(j)
			_ = msg.Nak()
			return delivered, nil
		}
		// Time spent waiting for a free worker is not idle time.
		check, idleSince = stallCheck, time.Now()
	}
}

// jobsWaiting reports whether the server holds jobs the consumer could
// deliver now (undelivered ones, with room under MaxAckPending) or holds
// no pull request for it at all, with the numbers behind the answer. An error asking counts as waiting: replacing
// a sound iterator costs one pull request, keeping a dead one costs every
// job.
func (c *Controller) jobsWaiting(ctx context.Context, cons jetstream.Consumer) (bool, string) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return ctx.Err() == nil, "consumer info: " + err.Error()
	}
	reason := fmt.Sprintf("pending %d, ack pending %d of %d, waiting pulls %d",
		info.NumPending, info.NumAckPending, info.Config.MaxAckPending, info.NumWaiting)
	if info.Config.MaxAckPending > 0 && info.NumAckPending >= info.Config.MaxAckPending {
		return false, reason
	}
	// Undelivered jobs would have gone to any live pull request; with no
	// pull request on the server at all, ours is gone too, and jobs due
	// for redelivery (not counted in NumPending) would wait for it.
	return info.NumPending > 0 || info.NumWaiting == 0, reason
}

// handBack stops an iterator and naks the jobs it had fetched but not
// handed out, so another controller can take them at once instead of
// after AckWait.
func (c *Controller) handBack(it jetstream.MessagesContext) {
	if it == nil {
		return
	}
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			return
		}
		_ = msg.Nak()
	}
}

// job is a delivered message the controller holds: waiting for a slot or
// being processed. Held jobs get progress heartbeats.
type job struct {
	msg      jetstream.Msg
	lastBeat time.Time // guarded by Controller.heldMu
}

func (c *Controller) hold(msg jetstream.Msg) *job {
	j := &job{msg: msg, lastBeat: time.Now()}
	c.heldMu.Lock()
	c.held[j] = struct{}{}
	c.heldMu.Unlock()
	return j
}

func (c *Controller) release(j *job) {
	c.heldMu.Lock()
	delete(c.held, j)
	c.heldMu.Unlock()
}

// heartbeat tells JetStream that held jobs are still being worked on, so a
// job that runs longer than AckWait is not offered to another controller.
// A job gets its first heartbeat at most AckWait/2 after it was taken.
func (c *Controller) heartbeat(ctx context.Context) {
	period := c.cfg.AckWait / 4
	t := time.NewTicker(period)
	defer t.Stop()
	var due []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			c.heldMu.Lock()
			for j := range c.held {
				if now.Sub(j.lastBeat) >= period {
					j.lastBeat = now
					due = append(due, j.msg)
				}
			}
			c.heldMu.Unlock()
			for _, m := range due {
				if err := m.InProgress(); err != nil {
					c.log.Debug().Err(err).Msg("progress heartbeat")
				}
			}
		}
	}
}
