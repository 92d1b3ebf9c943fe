package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
)

// durationBuckets are the upper bounds, in seconds, of the job latency
// histogram: the runner's request buckets (runner.DurationBuckets, which
// a test holds them equal to), so a job's time and its requests' times
// can be read against the same bounds without importing the runner.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Queue figures are read from JetStream when /metrics is scraped, at most
// once per queueCacheTTL (several scrapers, or a fast one, cost one read)
// and within queueInfoTimeout: a scrape never waits long on NATS, and the
// job path never waits on a scrape.
const (
	queueCacheTTL    = time.Second
	queueInfoTimeout = 2 * time.Second
)

// metrics is a Controller's Prometheus collector: counters and histograms
// observed where a job's outcome is decided, queue depths read at scrape
// time. A nil *metrics records nothing.
type metrics struct {
	c        *Controller
	jobs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	attempts *prometheus.CounterVec
	// comparisons counts stored shadow comparisons by verdict.
	comparisons *prometheus.CounterVec
	// handedBack counts deliveries handed back without an attempt.
	handedBack *prometheus.CounterVec

	waiting, inFlight, dead, infoUp, held, maxInFlight *prometheus.Desc
	// Rollout counters, read from ShadowStats and the fallback state.
	shadowRuns, historyRecords, canaryRejected, routeFallback *prometheus.Desc

	mu       sync.Mutex // one queue read at a time
	cachedAt time.Time
	cached   []prometheus.Metric
	failing  bool
}

func newMetrics(c *Controller) *metrics {
	alg := []string{"algorithm"}
	return &metrics{
		c: c,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pnp_controller_jobs_total",
			Help: "Jobs that reached a final outcome in this controller, by algorithm and status (succeeded, failed).",
		}, []string{"algorithm", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pnp_controller_job_duration_seconds",
			Help:    "Time from a job's submission (stored in JOBS) to its final outcome, by algorithm and status.",
			Buckets: durationBuckets,
		}, []string{"algorithm", "status"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pnp_controller_attempts_total",
			Help: "Requests sent to runners that counted as attempts, by algorithm and outcome code (200 for success). Refusals without starting and unanswered requests are not attempts.",
		}, []string{"algorithm", "code"}),
		handedBack: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pnp_controller_handed_back_total",
			Help: "Deliveries of jobs of a registered algorithm handed back to JetStream without counting as an attempt, by reason: not_started (a runner refused without starting: overloaded, draining, budget too short), no_responders (registered, nobody answered), disconnected (the connection dropped while waiting).",
		}, []string{"algorithm", "reason"}),
		comparisons: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pnp_controller_shadow_comparisons_total",
			Help: "Shadow comparisons stored in COMPARE, by algorithm and verdict (equal: true or false).",
		}, []string{"algorithm", "equal"}),
		shadowRuns: prometheus.NewDesc("pnp_controller_shadow_runs_total",
			"Jobs considered for a shadow run, by outcome: compared (stored with a verdict), not_compared (stored without: an output by reference could not be read), dropped (every slot busy), no_instance (no live shadow version), store_failed.", []string{"outcome"}, nil),
		historyRecords: prometheus.NewDesc("pnp_controller_history_records_total",
			"Succeeded jobs sampled for HISTORY, by outcome: recorded (sent without waiting for the acknowledgement), failed (could not be sent), too_large (over a message).", []string{"outcome"}, nil),
		canaryRejected: prometheus.NewDesc("pnp_controller_canary_rejected_total",
			"Jobs picked for a canary whose input schema rejects them, sent to the stable version instead.", nil, nil),
		routeFallback: prometheus.NewDesc("pnp_controller_route_fallback",
			"1 while an algorithm's route names a stable version without a live instance (its jobs go to any live version), else 0.", alg, nil),
		waiting:     prometheus.NewDesc("pnp_controller_queue_waiting", "Jobs stored in JOBS and not yet delivered to a controller.", alg, nil),
		inFlight:    prometheus.NewDesc("pnp_controller_queue_in_flight", "Jobs delivered to a controller and not yet acknowledged: running, or waiting for their next attempt.", alg, nil),
		dead:        prometheus.NewDesc("pnp_controller_queue_dead", "Dead letters stored in DEAD.", alg, nil),
		infoUp:      prometheus.NewDesc("pnp_controller_queue_info_up", "1 when the queue figures of this scrape could be read from JetStream, else 0.", nil, nil),
		held:        prometheus.NewDesc("pnp_controller_held", "Jobs this controller holds: running, or fetched and waiting for a worker.", nil, nil),
		maxInFlight: prometheus.NewDesc("pnp_controller_max_in_flight", "Jobs this controller may run at once (Config.MaxInFlight).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.jobs.Describe(ch)
	m.duration.Describe(ch)
	m.attempts.Describe(ch)
	m.comparisons.Describe(ch)
	m.handedBack.Describe(ch)
	for _, d := range []*prometheus.Desc{m.waiting, m.inFlight, m.dead, m.infoUp, m.held, m.maxInFlight,
		m.shadowRuns, m.historyRecords, m.canaryRejected, m.routeFallback} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.jobs.Collect(ch)
	m.duration.Collect(ch)
	m.attempts.Collect(ch)
	m.c.heldMu.Lock()
	held := len(m.c.held)
	m.c.heldMu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.held, prometheus.GaugeValue, float64(held))
	ch <- prometheus.MustNewConstMetric(m.maxInFlight, prometheus.GaugeValue, float64(m.c.cfg.MaxInFlight))
	m.comparisons.Collect(ch)
	m.handedBack.Collect(ch)
	m.collectRollout(ch)
	for _, s := range m.queue() {
		ch <- s
	}
}

// collectRollout sends the shadow, history, canary and fallback figures.
func (m *metrics) collectRollout(ch chan<- prometheus.Metric) {
	st := m.c.ShadowStats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(m.shadowRuns, st.Compared, "compared")
	counter(m.shadowRuns, st.Dropped, "dropped")
	counter(m.shadowRuns, st.NoInstance, "no_instance")
	counter(m.shadowRuns, st.StoreFailed, "store_failed")
	counter(m.shadowRuns, st.NotCompared, "not_compared")
	counter(m.historyRecords, st.Recorded, "recorded")
	counter(m.historyRecords, st.RecordFailed, "failed")
	counter(m.historyRecords, st.RecordTooLarge, "too_large")
	counter(m.canaryRejected, st.CanaryRejected)
	select {
	case <-m.c.ready: // c.routes is set
	default:
		return
	}
	s := &m.c.rollout
	s.mu.Lock()
	for alg, fallback := range s.fallback {
		if _, ok := m.c.routes.Lookup(alg); !ok {
			continue // the route is gone
		}
		v := 0.0
		if fallback {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.routeFallback, prometheus.GaugeValue, v, alg)
	}
	s.mu.Unlock()
}

// Reasons of handed back deliveries.
const (
	backNotStarted   = "not_started"
	backNoResponders = "no_responders"
	backDisconnected = "disconnected"
)

// handBack records a delivery handed back without an attempt.
func (m *metrics) handBack(alg, reason string) {
	if m == nil {
		return
	}
	m.handedBack.WithLabelValues(alg, reason).Inc()
}

// compared records a stored shadow comparison.
func (m *metrics) compared(alg string, equal bool) {
	if m == nil {
		return
	}
	m.comparisons.WithLabelValues(alg, strconv.FormatBool(equal)).Inc()
}

// finished records a job's final outcome.
func (m *metrics) finished(alg string, status Status, submitted time.Time) {
	if m == nil {
		return
	}
	m.jobs.WithLabelValues(alg, string(status)).Inc()
	m.duration.WithLabelValues(alg, string(status)).Observe(time.Since(submitted).Seconds())
}

// attempt records one attempt; code 0 is a success.
func (m *metrics) attempt(alg string, code int) {
	if m == nil {
		return
	}
	c := "200"
	if code != 0 {
		c = strconv.Itoa(code)
	}
	m.attempts.WithLabelValues(alg, c).Inc()
}

// queue returns the queue samples, read anew when the cached ones are
// older than queueCacheTTL.
func (m *metrics) queue() []prometheus.Metric {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.cachedAt.IsZero() && time.Since(m.cachedAt) < queueCacheTTL {
		return m.cached
	}
	select {
	case <-m.c.ready:
	default:
		// Not started: no store yet.
		return []prometheus.Metric{prometheus.MustNewConstMetric(m.infoUp, prometheus.GaugeValue, 0)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueInfoTimeout)
	defer cancel()
	samples, err := m.readQueues(ctx)
	up := 1.0
	if err != nil {
		up, samples = 0, nil
		if !m.failing {
			m.c.log.Warn().Err(err).Msg("metrics: cannot read queue depths; pnp_controller_queue_info_up is 0 until they can be read")
		}
	} else if m.failing {
		m.c.log.Info().Msg("metrics: queue depths readable again")
	}
	m.failing = err != nil
	m.cached = append(samples, prometheus.MustNewConstMetric(m.infoUp, prometheus.GaugeValue, up))
	m.cachedAt = time.Now()
	return m.cached
}

// maxUnservedSeries bounds the algorithms without a live runner that the
// queue gauges name: anyone allowed to publish jobs can store them under
// any number of names, and neither the scrape nor Prometheus should grow
// with that. The largest backlogs are named; the rest, and names that can
// never be an algorithm's, are summed under OtherAlgorithms.
const maxUnservedSeries = 50

// OtherAlgorithms is the algorithm label under which the queue gauges sum
// the algorithms left unnamed (see docs/METRICS.md). It cannot be an
// algorithm's name, which starts with a letter.
const OtherAlgorithms = "_other"

type queueDepth struct{ waiting, inFlight, dead uint64 }

// readQueues reads, per algorithm, the jobs waiting and in flight and the
// dead letters. An algorithm with a live runner is read from its consumer
// on JOBS (one request each); any other has all its stored jobs counted as
// waiting, from the same two stream reads, whatever their number.
func (m *metrics) readQueues(ctx context.Context) ([]prometheus.Metric, error) {
	s := m.c.store
	jobsInfo, err := s.Jobs().Info(ctx, jetstream.WithSubjectFilter(JobsSubjectPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("controller: metrics: jobs stream: %w", err)
	}
	deadInfo, err := s.Dead().Info(ctx, jetstream.WithSubjectFilter(DeadSubjectPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("controller: metrics: dead stream: %w", err)
	}
	depth := map[string]*queueDepth{}
	at := func(alg string) *queueDepth {
		d := depth[alg]
		if d == nil {
			d = &queueDepth{}
			depth[alg] = d
		}
		return d
	}
	for subj, n := range jobsInfo.State.Subjects {
		alg, _ := jobs.SubjectAlgorithm(subj)
		at(alg).waiting += n
	}
	for subj, n := range deadInfo.State.Subjects {
		at(strings.TrimPrefix(subj, DeadSubjectPrefix)).dead = n
	}
	live := map[string]bool{}
	for _, r := range m.c.cache.All() {
		if live[r.Algorithm] {
			continue
		}
		live[r.Algorithm] = true
		d := at(r.Algorithm)
		stored, read := d.waiting, uint64(0)
		d.waiting = 0
		for _, p := range jobs.Priorities {
			cons, err := s.Jobs().Consumer(ctx, jobs.PriorityConsumerName(r.Algorithm, p))
			switch {
			case err == nil:
				info := cons.CachedInfo()
				d.waiting += info.NumPending
				d.inFlight += uint64(info.NumAckPending)
				read += info.NumPending + uint64(info.NumAckPending)
			case errors.Is(err, jetstream.ErrConsumerNotFound):
				// No controller took these jobs yet: they wait, counted below.
			default:
				return nil, fmt.Errorf("controller: metrics: consumer for %s: %w", r.Algorithm, err)
			}
		}
		if stored > read {
			d.waiting += stored - read
		}
	}
	var unserved []string
	for alg := range depth {
		if !live[alg] && discovery.ValidAlgorithmName(alg) {
			unserved = append(unserved, alg)
		}
	}
	slices.SortFunc(unserved, func(a, b string) int {
		da, db := depth[a], depth[b]
		if c := cmp.Compare(db.waiting+db.dead, da.waiting+da.dead); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	named := map[string]bool{}
	for alg := range live {
		named[alg] = true
	}
	for _, alg := range unserved[:min(len(unserved), maxUnservedSeries)] {
		named[alg] = true
	}
	var other *queueDepth
	for alg, d := range depth {
		if named[alg] {
			continue
		}
		if other == nil {
			other = &queueDepth{}
		}
		other.waiting += d.waiting
		other.inFlight += d.inFlight
		other.dead += d.dead
		delete(depth, alg)
	}
	if other != nil {
		depth[OtherAlgorithms] = other
	}
	out := make([]prometheus.Metric, 0, 3*len(depth))
	gauge := func(desc *prometheus.Desc, v uint64, alg string) {
		out = append(out, prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v), alg))
	}
	for alg, d := range depth {
		gauge(m.waiting, d.waiting, alg)
		gauge(m.inFlight, d.inFlight, alg)
		gauge(m.dead, d.dead, alg)
	}
	return out, nil
}
