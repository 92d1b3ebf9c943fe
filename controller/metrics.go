package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"pnpworker/runner"
)

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

	waiting, inFlight, dead, infoUp, held, maxInFlight *prometheus.Desc

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
			Buckets: runner.DurationBuckets,
		}, []string{"algorithm", "status"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pnp_controller_attempts_total",
			Help: "Requests sent to runners that counted as attempts, by algorithm and outcome code (200 for success). Refusals without starting and unanswered requests are not attempts.",
		}, []string{"algorithm", "code"}),
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
	for _, d := range []*prometheus.Desc{m.waiting, m.inFlight, m.dead, m.infoUp, m.held, m.maxInFlight} {
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
	for _, s := range m.queue() {
		ch <- s
	}
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

// readQueues reads, per algorithm, the jobs waiting and in flight (from
// its consumer on JOBS, or the jobs stored when it has none yet) and the
// dead letters. The algorithms are those with jobs, dead letters or a live
// runner.
func (m *metrics) readQueues(ctx context.Context) ([]prometheus.Metric, error) {
	s := m.c.store
	jobsInfo, err := s.jobs.Info(ctx, jetstream.WithSubjectFilter(JobsSubjectPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("controller: metrics: jobs stream: %w", err)
	}
	deadInfo, err := s.dead.Info(ctx, jetstream.WithSubjectFilter(DeadSubjectPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("controller: metrics: dead stream: %w", err)
	}
	algs := map[string]bool{}
	for subj := range jobsInfo.State.Subjects {
		algs[strings.TrimPrefix(subj, JobsSubjectPrefix)] = true
	}
	for subj := range deadInfo.State.Subjects {
		algs[strings.TrimPrefix(subj, DeadSubjectPrefix)] = true
	}
	for _, r := range m.c.cache.All() {
		algs[r.Algorithm] = true
	}
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v uint64, alg string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), alg))
	}
	for alg := range algs {
		waiting, inFlight := jobsInfo.State.Subjects[JobsSubjectPrefix+alg], uint64(0)
		cons, err := s.jobs.Consumer(ctx, ConsumerName(alg))
		switch {
		case err == nil:
			info := cons.CachedInfo()
			waiting, inFlight = info.NumPending, uint64(info.NumAckPending)
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			// No controller took this algorithm's jobs yet: all stored
			// jobs wait.
		default:
			return nil, fmt.Errorf("controller: metrics: consumer for %s: %w", alg, err)
		}
		gauge(m.waiting, waiting, alg)
		gauge(m.inFlight, inFlight, alg)
		gauge(m.dead, deadInfo.State.Subjects[DeadSubjectPrefix+alg], alg)
	}
	return out, nil
}
