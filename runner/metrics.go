package runner

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DurationBuckets are the upper bounds, in seconds, of the request and job
// latency histograms: from half a millisecond (a text algorithm) to half a
// minute (an image fetched from a slow host).
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// WithMetrics registers the runner's Prometheus metrics with reg, under
// the names pnp_runner_* (docs/METRICS.md lists them). New fails when reg
// already holds them: one Runner per registry (a process serving several
// sets of algorithms gives each Runner its own registry, or serves them
// all from one Runner). Default: no metrics, and nothing is measured for
// them.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) error { o.metrics = reg; return nil }
}

// metrics is a Runner's Prometheus collector. Counters and gauges are read
// at scrape time from the counters each endpoint keeps for $SRV.STATS, so
// the request path counts nothing twice; only the latency histogram is
// observed per request.
type metrics struct {
	r        *Runner
	duration *prometheus.HistogramVec

	requests, busy, overloaded, noReply *prometheus.Desc
	inFlight, waiting, maxConcurrency   *prometheus.Desc
}

func newMetrics(r *Runner) *metrics {
	alg := []string{"algorithm"}
	return &metrics{
		r: r,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pnp_runner_request_duration_seconds",
			Help:    "Time from the runner receiving a request to sending its reply, by algorithm and reply code (200 for success).",
			Buckets: DurationBuckets,
		}, []string{"algorithm", "code"}),
		requests:       prometheus.NewDesc("pnp_runner_requests_total", "Requests answered, by algorithm and reply code (200 for success, else the error code).", []string{"algorithm", "code"}, nil),
		busy:           prometheus.NewDesc("pnp_runner_busy_seconds_total", "Time spent in the algorithm's function, summed over requests.", alg, nil),
		overloaded:     prometheus.NewDesc("pnp_runner_overload_refusals_total", "Requests refused with 503 (not started) because MaxConcurrency requests ran and MaxPending waited.", alg, nil),
		noReply:        prometheus.NewDesc("pnp_runner_dropped_no_reply_total", "Messages dropped because they had no reply subject.", alg, nil),
		inFlight:       prometheus.NewDesc("pnp_runner_in_flight", "Requests running in the algorithm's function now.", alg, nil),
		waiting:        prometheus.NewDesc("pnp_runner_waiting", "Requests admitted and waiting for a free worker.", alg, nil),
		maxConcurrency: prometheus.NewDesc("pnp_runner_max_concurrency", "Requests the algorithm may run at once in this process.", alg, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.duration.Describe(ch)
	for _, d := range []*prometheus.Desc{m.requests, m.busy, m.overloaded, m.noReply, m.inFlight, m.waiting, m.maxConcurrency} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	m.r.mu.Lock()
	eps := m.r.endpoints
	m.r.mu.Unlock()
	for _, e := range eps {
		name := e.alg.spec.Name
		s := e.stats()
		counter := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{name}, labels...)...)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		counter(m.requests, float64(s.Served), "200")
		for code, n := range s.Errors {
			counter(m.requests, float64(n), code)
		}
		counter(m.busy, time.Duration(e.busyNanos.Load()).Seconds())
		counter(m.overloaded, float64(s.Rejected503))
		counter(m.noReply, float64(s.NoReplySubject))
		gauge(m.inFlight, float64(s.InFlight))
		gauge(m.waiting, float64(s.Waiting))
		gauge(m.maxConcurrency, float64(s.MaxConcurrency))
	}
}

// observe records a reply's latency; code 0 is a success. It costs nothing
// without WithMetrics.
func (e *endpoint) observe(received time.Time, code int) {
	if e.okObs == nil {
		return
	}
	d := time.Since(received).Seconds()
	if code == 0 {
		e.okObs.Observe(d)
		return
	}
	e.metrics.duration.WithLabelValues(e.alg.spec.Name, strconv.Itoa(code)).Observe(d)
}
