package runner

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DurationBuckets are the upper bounds, in seconds, of the request and job
// latency histograms: from half a millisecond (a text algorithm) to half a
// minute (an image fetched from a slow host).
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// WithMetrics registers the runner's Prometheus metrics with reg, under
// the names pnp_runner_* (docs/METRICS.md lists them). New fails when reg
// already holds them: one Runner per registry. Runners of one process that
// come and go (a worker's runner is made anew each time its process
// starts) or that serve one algorithm side by side share one Metrics
// instead: see NewMetrics and WithSharedMetrics. Default: no metrics, and
// nothing is measured for them.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) error { o.metrics = reg; return nil }
}

// WithSharedMetrics reports the runner's figures in m, next to those of
// the other runners sharing it.
func WithSharedMetrics(m *Metrics) Option {
	return func(o *options) error {
		if m == nil {
			return errors.New("shared metrics are nil")
		}
		o.shared = m
		return nil
	}
}

// Metrics are the pnp_runner_* Prometheus metrics of one process, shared
// by any number of Runners. The figures of an algorithm are summed over
// the runners serving it, and a runner that stops leaves its counts
// behind: a process's counters never go down when one of its runners is
// replaced. Counters and gauges are read at scrape time from the counters
// each endpoint keeps for $SRV.STATS, so the request path counts nothing
// twice; only the latency histogram is observed per request.
type Metrics struct {
	duration *prometheus.HistogramVec

	requests, busy, overloaded, noReply *prometheus.Desc
	fromJS                              *prometheus.Desc
	inFlight, waiting, maxConcurrency   *prometheus.Desc
	utilization                         *prometheus.Desc

	mu      sync.Mutex
	live    map[*Runner]struct{}
	retired map[string]*algFigures // counts of stopped runners, by algorithm
}

// algFigures are one algorithm's figures, summed over runners.
type algFigures struct {
	requests                      map[string]float64 // by reply code; 200 for success
	busy, overloaded, noReply     float64
	fromJS                        float64
	inFlight, waiting, concurrent float64
}

// NewMetrics registers a set of pnp_runner_* metrics with reg, for the
// runners given WithSharedMetrics. It fails when reg already holds them.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	alg := []string{"algorithm"}
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pnp_runner_request_duration_seconds",
			Help:    "Time from the runner receiving a request to sending its reply, by algorithm and reply code (200 for success).",
			Buckets: DurationBuckets,
		}, []string{"algorithm", "code"}),
		requests:       prometheus.NewDesc("pnp_runner_requests_total", "Requests answered, by algorithm and reply code (200 for success, else the error code).", []string{"algorithm", "code"}, nil),
		busy:           prometheus.NewDesc("pnp_runner_busy_seconds_total", "Time spent in the algorithm's function, summed over requests.", alg, nil),
		overloaded:     prometheus.NewDesc("pnp_runner_overload_refusals_total", "Requests refused with 503 (not started) because MaxConcurrency requests ran and MaxPending waited.", alg, nil),
		noReply:        prometheus.NewDesc("pnp_runner_dropped_no_reply_total", "Messages dropped because they had no reply subject.", alg, nil),
		fromJS:         prometheus.NewDesc("pnp_runner_jetstream_refusals_total", "Messages refused unrun because JetStream delivered them (a direct get or consumer pointed at the algorithm's subject).", alg, nil),
		inFlight:       prometheus.NewDesc("pnp_runner_in_flight", "Requests running in the algorithm's function now.", alg, nil),
		waiting:        prometheus.NewDesc("pnp_runner_waiting", "Requests admitted and waiting for a free worker.", alg, nil),
		maxConcurrency: prometheus.NewDesc("pnp_runner_max_concurrency", "Requests the algorithm may run at once in this process (0 while no runner of the process serves it).", alg, nil),
		utilization:    prometheus.NewDesc("pnp_runner_utilization", "Share of the algorithm's capacity in use in this process: pnp_runner_in_flight / pnp_runner_max_concurrency, 0 to 1 (0 without capacity).", alg, nil),
		live:           map[*Runner]struct{}{},
		retired:        map[string]*algFigures{},
	}
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("runner: register metrics: %w", err)
	}
	return m, nil
}

// attach adds r's endpoints to the figures; Run calls it once they serve.
func (m *Metrics) attach(r *Runner) {
	m.mu.Lock()
	m.live[r] = struct{}{}
	m.mu.Unlock()
}

// detach keeps the counts of r, which has stopped, and stops reading it.
func (m *Metrics) detach(r *Runner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live[r]; !ok {
		return
	}
	delete(m.live, r)
	r.mu.Lock()
	eps := r.endpoints
	r.mu.Unlock()
	for _, e := range eps {
		f := figuresOf(m.retired, e.alg.spec.Name)
		f.addCounts(e)
	}
}

func figuresOf(by map[string]*algFigures, name string) *algFigures {
	f := by[name]
	if f == nil {
		f = &algFigures{requests: map[string]float64{}}
		by[name] = f
	}
	return f
}

// addCounts adds e's counters (not its gauges) to f.
func (f *algFigures) addCounts(e *endpoint) {
	s := e.counters()
	f.requests["200"] += float64(s.Served)
	for code, n := range s.Errors {
		f.requests[code] += float64(n)
	}
	f.busy += time.Duration(e.busyNanos.Load()).Seconds()
	f.overloaded += float64(s.Rejected503)
	f.noReply += float64(s.NoReplySubject)
	f.fromJS += float64(s.FromJetStream)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.duration.Describe(ch)
	for _, d := range []*prometheus.Desc{m.requests, m.busy, m.overloaded, m.noReply, m.fromJS, m.inFlight, m.waiting, m.maxConcurrency, m.utilization} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	by := map[string]*algFigures{}
	m.mu.Lock()
	for name, r := range m.retired {
		f := figuresOf(by, name)
		f.busy, f.overloaded, f.noReply, f.fromJS = r.busy, r.overloaded, r.noReply, r.fromJS
		for code, n := range r.requests {
			f.requests[code] = n
		}
	}
	for r := range m.live {
		r.mu.Lock()
		eps := r.endpoints
		r.mu.Unlock()
		for _, e := range eps {
			f := figuresOf(by, e.alg.spec.Name)
			f.addCounts(e)
			l := e.load()
			f.inFlight += float64(l.InFlight)
			f.waiting += float64(l.Waiting)
			f.concurrent += float64(e.alg.spec.MaxConcurrency)
		}
	}
	m.mu.Unlock()
	for name, f := range by {
		counter := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{name}, labels...)...)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		for code, n := range f.requests {
			counter(m.requests, n, code)
		}
		counter(m.busy, f.busy)
		counter(m.overloaded, f.overloaded)
		counter(m.noReply, f.noReply)
		counter(m.fromJS, f.fromJS)
		gauge(m.inFlight, f.inFlight)
		gauge(m.waiting, f.waiting)
		gauge(m.maxConcurrency, f.concurrent)
		util := 0.0
		if f.concurrent > 0 {
			util = min(f.inFlight/f.concurrent, 1)
		}
		gauge(m.utilization, util)
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
