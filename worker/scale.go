package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/runner"
)

// Defaults of the scaling fields of Config.
const (
	DefaultScaleIdle     = 30 * time.Second
	DefaultScaleInterval = time.Second
)

// scaleUpTicks is how many consecutive looks must find a backlog with every
// process busy before a process is added: one look may catch a burst that
// the processes clear by themselves.
const scaleUpTicks = 2

// backlogRetry is how long the scaler goes without reading the jobs
// backlog of an algorithm after a read failed (no permission, NATS away):
// meanwhile it scales on the runners' admission alone. A variable so tests
// can shorten it.
var backlogRetry = time.Minute

// slot is one process of a pool: started, restarted after a failure, and
// stopped when the pool retires it or Run ends.
type slot struct {
	id       int
	cancel   context.CancelFunc
	serving  atomic.Pointer[runner.Runner] // the process's runner while it serves
	retiring atomic.Bool                   // draining: takes no new requests, then exits

	// Read and written by the scaler only.
	lastBusy time.Time
	seen     map[string]counts // per algorithm, at the previous look
}

// counts are an algorithm's cumulative counters in one runner.
type counts struct {
	runner            *runner.Runner // whose counters they are: a restart begins new ones
	answered, refused int64
}

// pool is the set of processes of one Worker.
type pool struct {
	w      *Worker
	ctx    context.Context
	wg     sync.WaitGroup
	mu     sync.Mutex
	slots  []*slot
	nextID int
	names  map[string]bool // every algorithm the processes have served, for the gauge

	// The scaler's own state.
	upTicks      int
	slackSince   time.Time            // since when every look found slack; zero: the last did not
	backlogAfter map[string]time.Time // no backlog read of the algorithm before then
}

func newPool(ctx context.Context, w *Worker) *pool {
	return &pool{w: w, ctx: ctx, names: map[string]bool{}, backlogAfter: map[string]time.Time{}}
}

// add starts one more process slot.
func (p *pool) add() *slot {
	ctx, cancel := context.WithCancel(p.ctx)
	p.mu.Lock()
	s := &slot{id: p.nextID, cancel: cancel, lastBusy: time.Now(), seen: map[string]counts{}}
	p.nextID++
	p.slots = append(p.slots, s)
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer cancel()
		p.w.supervise(ctx, s)
		p.mu.Lock()
		for i, o := range p.slots {
			if o == s {
				p.slots = append(p.slots[:i], p.slots[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
	}()
	return s
}

// retire drains a slot's process: its runner leaves discovery and stops
// taking requests, serves what it was handed, and the process's stdin is
// closed so that it finishes and exits — the path of an ordinary shutdown.
func (p *pool) retire(s *slot) {
	s.retiring.Store(true)
	s.cancel()
}

// snapshot returns the slots that are not retiring, and how many there are
// in all.
func (p *pool) snapshot() (active []*slot, all int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if !s.retiring.Load() {
			active = append(active, s)
		}
	}
	return active, len(p.slots)
}

// demand is what one look found for one algorithm.
type demand struct {
	procs, busy int
	waiting     int   // admitted, waiting for a slot in some process
	refused     int64 // refused for overload since the previous look
	jobs        int   // waiting in JOBS (Config.Backlog)
	queues      []queue
}

// queue is what waits for an algorithm in one process's runner.
type queue struct {
	s       *slot
	r       *runner.Runner
	waiting int
}

func (d demand) backlog() int64 { return int64(d.waiting) + d.refused + int64(d.jobs) }

// scale reads the load every ScaleInterval until ctx ends, adding a
// process while a backlog persists with every process busy, and retiring
// one that has been idle for ScaleIdle.
func (p *pool) scale(ctx context.Context) {
	t := time.NewTicker(p.w.cfg.ScaleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.look(ctx, time.Now())
		}
	}
}

// look is one tick of the scaler.
func (p *pool) look(ctx context.Context, now time.Time) {
	cfg := p.w.cfg
	active, all := p.snapshot()
	starting := 0
	var idle []*slot // serving, with nothing running or waiting now
	by := map[string]*demand{}
	for _, s := range active {
		r := s.serving.Load()
		if r == nil {
			// Starting or restarting: not idle, and not yet capacity.
			starting++
			s.lastBusy = now
			continue
		}
		free := true
		for _, l := range r.Load() {
			d := by[l.Algorithm]
			if d == nil {
				d = &demand{}
				by[l.Algorithm] = d
			}
			d.procs++
			if l.Busy() {
				d.busy++
			}
			d.waiting += l.Waiting
			if l.Waiting > 0 {
				d.queues = append(d.queues, queue{s: s, r: r, waiting: l.Waiting})
			}
			prev := s.seen[l.Algorithm]
			if prev.runner == r {
				d.refused += l.Refused - prev.refused
				if l.Answered != prev.answered {
					s.lastBusy = now
				}
			}
			if l.InFlight > 0 || l.Waiting > 0 {
				s.lastBusy = now
				free = false
			}
			s.seen[l.Algorithm] = counts{runner: r, answered: l.Answered, refused: l.Refused}
		}
		if free {
			idle = append(idle, s)
		}
	}
	// The jobs backlog matters only where every process is busy: read it
	// there alone.
	var up string
	for _, name := range sortedKeys(by) {
		d := by[name]
		if d.busy < d.procs {
			continue
		}
		d.jobs = p.jobsBacklog(ctx, name, now)
		if d.backlog() > 0 {
			up = name
			break
		}
	}
	if up == "" {
		p.upTicks = 0
	} else {
		p.upTicks++
	}
	// Slack: some process has nothing to do while nothing waits (in any
	// process: a new process can sit idle while requests that arrived
	// before it wait in another, and is not spare then). Only
	// slack at every look for ScaleIdle retires a process: requests are
	// spread over the queue group at random, so under a light load every
	// process serves now and then, and no single one is ever idle that
	// long, while the load would fit in one process fewer.
	waiting := false
	for _, d := range by {
		waiting = waiting || d.waiting > 0 || d.refused > 0
	}
	if up != "" || waiting || len(idle) == 0 || starting > 0 {
		p.slackSince = time.Time{}
	} else if p.slackSince.IsZero() {
		p.slackSince = now
	}
	switch {
	case up != "" && p.upTicks >= scaleUpTicks && starting == 0 && all < cfg.MaxProcs:
		d := by[up]
		p.upTicks = 0
		s := p.add()
		p.w.log.Info().Str("reason", "backlog").Str("algorithm", up).
			Int("waiting", d.waiting).Int64("refused", d.refused).Int("jobs_waiting", d.jobs).
			Int("busy", d.busy).Int("procs", len(active)).Int("to", len(active)+1).Int("max_procs", cfg.MaxProcs).
			Int("proc", s.id).Msg("worker scaled up: a process added")
	case !p.slackSince.IsZero() && now.Sub(p.slackSince) >= cfg.ScaleIdle && len(active) > cfg.Procs:
		// The process idle longest goes; the next one needs another
		// ScaleIdle of slack.
		idlest := idle[0]
		for _, s := range idle[1:] {
			if s.lastBusy.Before(idlest.lastBusy) {
				idlest = s
			}
		}
		p.retire(idlest)
		p.w.log.Info().Str("reason", "idle").Dur("slack", now.Sub(p.slackSince).Round(time.Millisecond)).
			Dur("idle", now.Sub(idlest.lastBusy).Round(time.Millisecond)).Int("idle_procs", len(idle)).
			Int("procs", len(active)).Int("to", len(active)-1).Int("min_procs", cfg.Procs).
			Int("proc", idlest.id).Msg("worker scaled down: draining a process")
		p.slackSince = time.Time{}
	}
	for _, name := range sortedKeys(by) {
		p.rebalance(name, by[name])
	}
}

// rebalance hands jobs that wait in one process back to the controller
// while another process serving the algorithm has room: a runner admits
// what the controller hands it (up to its max_pending), so the jobs of a
// burst that came before a process was added wait in the processes that
// were there, and the added one would sit idle beside them. Each process
// keeps its share of what waits in all, rounded up; the rest of its
// waiting jobs, the newest, are answered as not started and come back
// from JOBS a moment later to whichever process takes them (the
// controller counts no attempt). Requests from clients, without a job id,
// are never handed back.
func (p *pool) rebalance(name string, d *demand) {
	if d.busy == d.procs || d.waiting == 0 {
		return // no room anywhere, or nothing to move
	}
	share := (d.waiting + d.procs - 1) / d.procs
	moved := 0
	for _, q := range d.queues {
		if q.waiting <= share {
			continue
		}
		if n := q.r.HandBack(name, q.waiting-share); n > 0 {
			moved += n
			log := q.s.logger(p.w.log)
			log.Debug().Str("algorithm", name).Int("jobs", n).Int("waiting", q.waiting).Msg("handed waiting jobs back: another process has room")
		}
	}
	if moved > 0 {
		p.w.log.Info().Str("reason", "room").Str("algorithm", name).Int("jobs", moved).Int("waiting", d.waiting).
			Int("busy", d.busy).Int("procs", d.procs).Msg("worker rebalanced: waiting jobs handed back to the controller")
	}
}

// jobsBacklog reads how many jobs wait for the algorithm in JOBS, through
// Config.Backlog; 0 without one, or while reads are paused after a failure.
func (p *pool) jobsBacklog(ctx context.Context, name string, now time.Time) int {
	read := p.w.cfg.Backlog
	if read == nil || now.Before(p.backlogAfter[name]) {
		return 0
	}
	rctx, cancel := context.WithTimeout(ctx, max(p.w.cfg.ScaleInterval, time.Second))
	defer cancel()
	n, err := read(rctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		// Said once at warning level, not at every retry: a runner user
		// that may not read the consumer never will.
		ev := p.w.log.Warn()
		if _, failed := p.backlogAfter[name]; failed {
			ev = p.w.log.Debug()
		}
		p.backlogAfter[name] = now.Add(backlogRetry)
		ev.Err(err).Str("algorithm", name).Dur("retry_in", backlogRetry).
			Msg("cannot read the jobs backlog; scaling on the runner's admission alone meanwhile")
		return 0
	}
	if _, failed := p.backlogAfter[name]; failed {
		delete(p.backlogAfter, name)
		p.w.log.Info().Str("algorithm", name).Msg("reading the jobs backlog again")
	}
	return n
}

// procsByAlgorithm adds to by the number of processes serving each
// algorithm (0 for one served before and by none now); a retiring process
// no longer counts.
func (p *pool) procsByAlgorithm(by map[string]float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		r := s.serving.Load()
		if r == nil || s.retiring.Load() {
			continue
		}
		for _, l := range r.Load() {
			p.names[l.Algorithm] = true
			by[l.Algorithm]++
		}
	}
	for name := range p.names {
		by[name] += 0
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Metrics are the pnp_worker_* Prometheus metrics of one process, shared
// by any number of Workers (docs/METRICS.md). Figures are read when
// Prometheus scrapes: nothing is counted on the request path.
type Metrics struct {
	procs *prometheus.Desc

	mu   sync.Mutex
	live map[*pool]struct{}
}

// NewMetrics registers the pnp_worker_* metrics with reg, for the Workers
// given them in Config.Metrics. It fails when reg already holds them.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("worker: metrics registerer is nil")
	}
	m := &Metrics{
		procs: prometheus.NewDesc("pnp_worker_processes", "Worker processes serving the algorithm now (a process being drained after idling no longer counts; 0 while its only process restarts).", []string{"algorithm"}, nil),
		live:  map[*pool]struct{}{},
	}
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("worker: register metrics: %w", err)
	}
	return m, nil
}

func (m *Metrics) attach(p *pool) {
	m.mu.Lock()
	m.live[p] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) detach(p *pool) {
	m.mu.Lock()
	delete(m.live, p)
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.procs }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	by := map[string]float64{}
	m.mu.Lock()
	for p := range m.live {
		p.procsByAlgorithm(by)
	}
	m.mu.Unlock()
	for name, n := range by {
		ch <- prometheus.MustNewConstMetric(m.procs, prometheus.GaugeValue, n, name)
	}
}

// logger of a slot.
func (s *slot) logger(base zerolog.Logger) zerolog.Logger {
	return base.With().Int("proc", s.id).Logger()
}
