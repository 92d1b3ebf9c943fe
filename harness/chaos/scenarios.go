package chaos

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
)

// Scenarios lists the scenario names Run accepts, in the order `all` runs
// them.
var Scenarios = []string{"runner-kill", "controller-kill", "nats-kill", "cluster", "overload", "soak"}

// Run runs the named scenario.
func Run(ctx context.Context, name string, cfg Config) (*Report, error) {
	switch name {
	case "runner-kill":
		return RunnerKill(ctx, cfg)
	case "controller-kill":
		return ControllerKill(ctx, cfg)
	case "nats-kill":
		return NATSKill(ctx, cfg)
	case "cluster":
		return Cluster(ctx, cfg)
	case "overload":
		return Overload(ctx, cfg)
	case "soak":
		return Soak(ctx, cfg)
	}
	return nil, fmt.Errorf("chaos: unknown scenario %q (want one of %s)", name, strings.Join(Scenarios, ", "))
}

// natsNode is one NATS server process and how to start it again.
type natsNode struct {
	name        string
	port        int
	clusterPort int
	store       string
	routes      string
	proc        *Proc
}

func (e *env) startNATS(ctx context.Context, n *natsNode) error {
	args := []string{"chaos", "child", "nats", "--port", strconv.Itoa(n.port), "--store", n.store, "--sync-always", "--name", n.name}
	if n.clusterPort != 0 {
		args = append(args, "--cluster-port", strconv.Itoa(n.clusterPort), "--routes", n.routes)
	}
	p, err := e.ps.start("nats-"+n.name, args...)
	if err != nil {
		return err
	}
	if err := p.waitReady(ctx, 60*time.Second); err != nil {
		return err
	}
	n.proc = p
	return nil
}

// singleNATS starts one NATS server process with SyncAlways.
func (e *env) singleNATS(ctx context.Context) (*natsNode, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &natsNode{name: "n1", port: port, store: e.dir("nats-n1")}
	if err := e.startNATS(ctx, n); err != nil {
		return nil, err
	}
	e.servers = fmt.Sprintf("nats://127.0.0.1:%d", port)
	return n, nil
}

// pipeline starts NATS, provisions, and starts runners and controllers.
func (e *env) pipeline(ctx context.Context, maxConc, maxPending int) (*natsNode, []*Proc, []*Proc, error) {
	n, err := e.singleNATS(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := e.connect(ctx, 1); err != nil {
		return nil, nil, nil, err
	}
	var runners, ctls []*Proc
	for range e.cfg.Runners {
		p, err := e.startRunner(maxConc, maxPending, 2*time.Second)
		if err != nil {
			return nil, nil, nil, err
		}
		runners = append(runners, p)
	}
	if err := e.waitRunners(ctx, e.cfg.Runners, 60*time.Second); err != nil {
		return nil, nil, nil, err
	}
	for range e.cfg.Controllers {
		p, err := e.startController(1)
		if err != nil {
			return nil, nil, nil, err
		}
		ctls = append(ctls, p)
	}
	if err := e.warmup(ctx); err != nil {
		return nil, nil, nil, err
	}
	return n, runners, ctls, nil
}

// sleepRand sleeps a random time in [lo, hi) or until ctx ends; it
// reports whether ctx is still live.
func (e *env) sleepRand(ctx context.Context, lo, hi time.Duration) bool {
	d := lo + time.Duration(e.rng.Int64N(int64(hi-lo)+1))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// RunnerKill kills runner processes with SIGKILL at random while jobs flow
// and starts a replacement for each: no acknowledged job may be lost, and
// each dead instance must leave discovery within the bucket's max age.
func RunnerKill(ctx context.Context, cfg Config) (*Report, error) {
	e, err := newEnv(cfg, "runner-kill")
	if err != nil {
		return nil, err
	}
	defer e.close()
	_, runners, _, err := e.pipeline(ctx, 4, 64)
	if err != nil {
		return nil, err
	}
	loadCtx, stop := context.WithTimeout(ctx, e.cfg.Duration)
	defer stop()
	loaded := make(chan struct{})
	go func() { e.load(loadCtx, allOK); close(loaded) }()
	var drops sync.WaitGroup
	for e.sleepRand(loadCtx, 700*time.Millisecond, 2*time.Second) {
		i := e.rng.IntN(len(runners))
		victim := runners[i]
		keys := e.instancesOf(ctx, victim.PID())
		victim.Kill()
		now := time.Now()
		fi := e.addFault(Fault{At: e.since(), What: "SIGKILL runner", Target: fmt.Sprintf("pid %d (%s)", victim.PID(), joinKeys(keys)), t: now})
		e.logf("killed runner pid %d", victim.PID())
		drops.Add(1)
		go func() { defer drops.Done(); e.watchDrop(ctx, fi, keys, now) }()
		if runners[i], err = e.startRunner(4, 64, 2*time.Second); err != nil {
			return nil, err
		}
	}
	<-loaded
	drops.Wait()
	rep, err := e.settle(ctx)
	if err != nil {
		return nil, err
	}
	var worst time.Duration
	undropped := 0
	for _, f := range rep.Faults {
		if f.Dropped == 0 {
			undropped++
		}
		worst = max(worst, time.Duration(f.Dropped))
	}
	rep.Extra["discovery_ttl"] = discoveryTTL.String()
	rep.Extra["slowest_drop_from_discovery"] = Duration(worst).String()
	rep.Extra["killed_not_dropped_within_3_ttl"] = undropped
	return rep, nil
}

// ControllerKill kills controller processes with SIGKILL while jobs flow
// and restarts them after half a second.
func ControllerKill(ctx context.Context, cfg Config) (*Report, error) {
	e, err := newEnv(cfg, "controller-kill")
	if err != nil {
		return nil, err
	}
	defer e.close()
	_, _, ctls, err := e.pipeline(ctx, 4, 64)
	if err != nil {
		return nil, err
	}
	loadCtx, stop := context.WithTimeout(ctx, e.cfg.Duration)
	defer stop()
	loaded := make(chan struct{})
	go func() { e.load(loadCtx, allOK); close(loaded) }()
	for e.sleepRand(loadCtx, time.Second, 3*time.Second) {
		i := e.rng.IntN(len(ctls))
		victim := ctls[i]
		victim.Kill()
		e.addFault(Fault{At: e.since(), What: "SIGKILL controller", Target: fmt.Sprintf("pid %d", victim.PID()), t: time.Now()})
		e.logf("killed controller pid %d", victim.PID())
		time.Sleep(500 * time.Millisecond)
		if ctls[i], err = e.startController(1); err != nil {
			return nil, err
		}
	}
	<-loaded
	return e.settle(ctx)
}

// NATSKill kills the single NATS server with SIGKILL while jobs flow and
// starts it again on the same port and store after cfg.Outage: runners,
// controllers and the publisher must reconnect by themselves.
func NATSKill(ctx context.Context, cfg Config) (*Report, error) {
	e, err := newEnv(cfg, "nats-kill")
	if err != nil {
		return nil, err
	}
	defer e.close()
	n, runners, ctls, err := e.pipeline(ctx, 4, 64)
	if err != nil {
		return nil, err
	}
	loadCtx, stop := context.WithTimeout(ctx, e.cfg.Duration+2*e.cfg.Outage)
	defer stop()
	loaded := make(chan struct{})
	go func() { e.load(loadCtx, allOK); close(loaded) }()
	period := e.cfg.Duration / 3
	for k := 0; k < 2; k++ {
		select {
		case <-loadCtx.Done():
		case <-time.After(period):
		}
		if loadCtx.Err() != nil {
			break
		}
		n.proc.Kill()
		down := time.Now()
		e.logf("killed NATS pid %d; down for %s", n.proc.PID(), e.cfg.Outage)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(e.cfg.Outage):
		}
		if err := e.startNATS(ctx, n); err != nil {
			return nil, err
		}
		e.addFault(Fault{At: Duration(down.Sub(e.start)), What: "SIGKILL nats, restart on the same store", Target: "n1",
			Outage: Duration(time.Since(down)), t: time.Now()})
	}
	<-loaded
	rep, err := e.settle(ctx)
	if err != nil {
		return nil, err
	}
	alive := 0
	for _, p := range append(runners, ctls...) {
		if p.Alive() {
			alive++
		}
	}
	rep.Extra["clients_alive_at_end"] = fmt.Sprintf("%d of %d", alive, len(runners)+len(ctls))
	if regs, err := e.reg.Lookup(ctx, Algorithm); err == nil {
		rep.Extra["runners_registered_at_end"] = len(regs)
	}
	return rep, nil
}

// Cluster runs a 3-node JetStream cluster (every server a process of its
// own, SyncAlways, everything with 3 replicas), kills the JOBS stream
// leader with SIGKILL and restarts it, then does the same to a node that is
// not the leader.
func Cluster(ctx context.Context, cfg Config) (*Report, error) {
	e, err := newEnv(cfg, "cluster")
	if err != nil {
		return nil, err
	}
	defer e.close()
	nodes := make([]*natsNode, 3)
	var urls, routes []string
	for i := range nodes {
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), port: p, clusterPort: cp, store: e.dir(fmt.Sprintf("nats-n%d", i+1))}
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cp))
	}
	for _, n := range nodes {
		n.routes = strings.Join(routes, ",")
	}
	// Start the three at once: each waits for the others to form the
	// JetStream meta group.
	errc := make(chan error, 3)
	for _, n := range nodes {
		go func() { errc <- e.startNATS(ctx, n) }()
	}
	for range nodes {
		if err := <-errc; err != nil {
			return nil, err
		}
	}
	e.servers = strings.Join(urls, ",")
	if err := e.connect(ctx, 3); err != nil {
		return nil, err
	}
	for range e.cfg.Runners {
		if _, err := e.startRunner(4, 64, 2*time.Second); err != nil {
			return nil, err
		}
	}
	if err := e.waitRunners(ctx, e.cfg.Runners, 60*time.Second); err != nil {
		return nil, err
	}
	for range e.cfg.Controllers {
		if _, err := e.startController(3); err != nil {
			return nil, err
		}
	}
	if err := e.warmup(ctx); err != nil {
		return nil, err
	}
	// Jobs flow for at least Duration and until both faults are over.
	loadCtx, stop := context.WithCancel(ctx)
	defer stop()
	minLoad := time.After(e.cfg.Duration)
	loaded := make(chan struct{})
	go func() { e.load(loadCtx, allOK); close(loaded) }()

	step := max(e.cfg.Duration/5, 2*time.Second)
	wait := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(step):
			return nil
		}
	}
	for _, which := range []string{"leader", "non-leader"} {
		if err := wait(); err != nil {
			return nil, err
		}
		leader := e.jobsLeader(ctx)
		var victim *natsNode
		for _, n := range nodes {
			if (which == "leader") == (n.name == leader) {
				victim = n
				break
			}
		}
		if victim == nil {
			e.logf("no JOBS leader known; killing n1")
			victim = nodes[0]
		}
		victim.proc.Kill()
		down := time.Now()
		fi := e.addFault(Fault{At: e.since(), What: "SIGKILL JOBS " + which + " (leader was " + leader + ")", Target: victim.name, t: down})
		e.logf("killed %s %s", which, victim.name)
		if err := wait(); err != nil {
			return nil, err
		}
		if err := e.startNATS(ctx, victim); err != nil {
			return nil, err
		}
		e.mu.Lock()
		e.faults[fi].Outage = Duration(time.Since(down))
		e.mu.Unlock()
		e.addFault(Fault{At: e.since(), What: "restart " + victim.name + " on its store", Target: victim.name, t: time.Now()})
		e.logf("restarted %s; JOBS leader now %s", victim.name, e.jobsLeader(ctx))
	}
	if err := wait(); err != nil {
		return nil, err
	}
	<-minLoad
	stop()
	<-loaded
	rep, err := e.settle(ctx)
	if err != nil {
		return nil, err
	}
	if st, err := e.js.Stream(ctx, controller.JobsStream); err == nil {
		if info, err := st.Info(ctx); err == nil && info.Cluster != nil {
			rep.Extra["jobs_replicas"] = info.Config.Replicas
			rep.Extra["jobs_leader_at_end"] = info.Cluster.Leader
		}
	}
	return rep, nil
}

func (e *env) jobsLeader(ctx context.Context) string {
	for range 50 {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := e.js.Stream(ictx, controller.JobsStream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ictx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			return info.Cluster.Leader
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}

// Overload sends a burst of ten times a runner's capacity straight to it
// (every request must be answered: served or 503, none left without a
// reply), then the same burst as jobs through a controller (every job must
// succeed: what does not fit waits in JOBS), sampling memory.
func Overload(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.SleepMS == 0 {
		cfg.SleepMS = 200
	}
	cfg.Runners, cfg.Controllers = 1, 1
	e, err := newEnv(cfg, "overload")
	if err != nil {
		return nil, err
	}
	defer e.close()
	const maxConc, maxPending = 2, 8
	capacity := maxConc + maxPending
	burst := 10 * capacity
	if _, err := e.singleNATS(ctx); err != nil {
		return nil, err
	}
	if err := e.connect(ctx, 1); err != nil {
		return nil, err
	}
	if _, err := e.startRunner(maxConc, maxPending, 30*time.Second); err != nil {
		return nil, err
	}
	if err := e.waitRunners(ctx, 1, 60*time.Second); err != nil {
		return nil, err
	}
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go e.sampleEvery(sctx, 500*time.Millisecond)

	// Direct requests: the runner's own admission control.
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := e.body(fmt.Sprintf("direct-%d", i), kindOK)
			m, err := e.nc.Request("run."+Algorithm, body, 30*time.Second)
			key := "200"
			switch {
			case err != nil:
				key = "no reply: " + err.Error()
			case m.Header.Get("Nats-Service-Error-Code") != "":
				key = m.Header.Get("Nats-Service-Error-Code")
			}
			mu.Lock()
			codes[key]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	e.extra["direct_burst"] = burst
	e.extra["direct_capacity"] = capacity
	e.extra["direct_replies"] = codes
	e.extra["direct_burst_time"] = Duration(time.Since(start)).String()
	e.logf("direct burst of %d: %v", burst, codes)

	// The same burst as durable jobs.
	if _, err := e.startController(1, "--max-in-flight", "64"); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.pauseOpen = true
	e.mu.Unlock()
	var pub sync.WaitGroup
	for i := range burst {
		pub.Add(1)
		go func() { defer pub.Done(); e.publish(ctx, fmt.Sprintf("overload-%06d", i), kindOK) }()
	}
	pub.Wait()
	e.mu.Lock()
	e.pauseOpen = false
	e.mu.Unlock()
	rep, err := e.settle(ctx)
	if err != nil {
		return nil, err
	}
	stopSampling()
	rep.Extra["job_burst"] = burst
	rep.Extra["peak_rss_mb"] = peakRSS(rep.Samples)
	return rep, nil
}

func peakRSS(samples []Sample) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples {
		out[s.Role] = max(out[s.Role], float64(s.RSSBytes)/(1<<20))
	}
	return out
}

// Soak runs mixed load — valid, slow, invalid, failing and rejected jobs —
// while runners join and leave (gracefully, or killed), sampling memory
// and goroutines, and reports the trend.
func Soak(ctx context.Context, cfg Config) (*Report, error) {
	e, err := newEnv(cfg, "soak")
	if err != nil {
		return nil, err
	}
	defer e.close()
	_, runners, _, err := e.pipeline(ctx, 4, 64)
	if err != nil {
		return nil, err
	}
	// The idle baseline: every process has served the warm-up job.
	before := e.idleSample(ctx)
	loadCtx, stop := context.WithTimeout(ctx, e.cfg.Duration)
	defer stop()
	every := max(2*time.Second, e.cfg.Duration/30)
	go e.sampleEvery(loadCtx, every)
	loaded := make(chan struct{})
	go func() {
		e.load(loadCtx, func(n int) kind {
			switch n % 20 {
			case 14, 15:
				return kindSlow
			case 16:
				return kindInvalid
			case 17:
				return kindFail
			case 18:
				return kindReject
			}
			return kindOK
		})
		close(loaded)
	}()
	churn := 0
	for e.sleepRand(loadCtx, 2*time.Second, 5*time.Second) {
		p, err := e.startRunner(4, 64, 2*time.Second)
		if err != nil {
			return nil, err
		}
		old := runners[0]
		runners = append(runners[1:], p)
		churn++
		if churn%3 == 0 {
			old.Kill()
			e.addFault(Fault{At: e.since(), What: "runner joined; oldest SIGKILLed", Target: fmt.Sprintf("pid %d", old.PID()), t: time.Now()})
		} else {
			old.Stop(10 * time.Second)
			e.addFault(Fault{At: e.since(), What: "runner joined; oldest stopped (SIGTERM)", Target: fmt.Sprintf("pid %d", old.PID()), t: time.Now()})
		}
	}
	<-loaded
	e.sample(ctx)
	rep, err := e.settle(ctx)
	if err != nil {
		return nil, err
	}
	rep.Extra["trend"] = Trends(rep.Samples)
	rep.Extra["growth"] = Growth(before, e.idleSample(ctx))
	return rep, nil
}

// idleSample samples five times, 400 ms apart, and keeps each process's
// lowest goroutine count and live heap: what it holds once the last
// replies and acks are through.
func (e *env) idleSample(ctx context.Context) []Sample {
	low := map[int]Sample{}
	for i := range 5 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(400 * time.Millisecond):
			}
		}
		for _, s := range e.sample(ctx) {
			if !s.Reported {
				continue
			}
			if l, ok := low[s.PID]; ok {
				s.Goroutines = min(s.Goroutines, l.Goroutines)
				s.HeapLiveBytes = min(s.HeapLiveBytes, l.HeapLiveBytes)
			}
			low[s.PID] = s
		}
	}
	out := make([]Sample, 0, len(low))
	for _, s := range low {
		out = append(out, s)
	}
	return out
}

// ProcessGrowth compares a process's idle figures after the load with the
// idle baseline before it, as the process itself reported them. A
// controller is compared with its own baseline; a runner (runners come and
// go during a soak) with the highest baseline among the runners idle
// before the load, which ran the same binary with the same settings.
type ProcessGrowth struct {
	Role             string  `json:"role"`
	PID              int     `json:"pid"`
	GoroutinesBefore int     `json:"goroutines_before"`
	GoroutinesAfter  int     `json:"goroutines_after"`
	HeapLiveBeforeMB float64 `json:"heap_live_before_mb"`
	HeapLiveAfterMB  float64 `json:"heap_live_after_mb"`
}

// Growth pairs the idle samples after the load with those before it (see
// ProcessGrowth), for every runner and controller idle after it. A
// controller missing from before gets a zero baseline.
func Growth(before, after []Sample) []ProcessGrowth {
	mb := func(b uint64) float64 { return round1(float64(b) / (1 << 20)) }
	own := map[int]Sample{}
	var runner Sample
	for _, s := range before {
		own[s.PID] = s
		if s.Role == "runner" {
			runner.Goroutines = max(runner.Goroutines, s.Goroutines)
			runner.HeapLiveBytes = max(runner.HeapLiveBytes, s.HeapLiveBytes)
		}
	}
	var out []ProcessGrowth
	for _, s := range after {
		var b Sample
		switch s.Role {
		case "controller":
			b = own[s.PID]
		case "runner":
			b = runner
		default:
			continue
		}
		out = append(out, ProcessGrowth{Role: s.Role, PID: s.PID,
			GoroutinesBefore: b.Goroutines, GoroutinesAfter: s.Goroutines,
			HeapLiveBeforeMB: mb(b.HeapLiveBytes), HeapLiveAfterMB: mb(s.HeapLiveBytes)})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Role+strconv.Itoa(out[i].PID) < out[j].Role+strconv.Itoa(out[j].PID)
	})
	return out
}

// Trend compares the first and last quarter of one process's samples.
type Trend struct {
	Role            string  `json:"role"`
	PID             int     `json:"pid"`
	Samples         int     `json:"samples"`
	RSSFirstMB      float64 `json:"rss_first_mb"`
	RSSLastMB       float64 `json:"rss_last_mb"`
	HeapFirstMB     float64 `json:"heap_first_mb,omitempty"`
	HeapLastMB      float64 `json:"heap_last_mb,omitempty"`
	GoroutinesFirst float64 `json:"goroutines_first,omitempty"`
	GoroutinesLast  float64 `json:"goroutines_last,omitempty"`
}

// Trends summarises the samples of every process seen at least 4 times.
func Trends(samples []Sample) []Trend {
	byPID := map[int][]Sample{}
	for _, s := range samples {
		byPID[s.PID] = append(byPID[s.PID], s)
	}
	var out []Trend
	for pid, ss := range byPID {
		if len(ss) < 4 {
			continue
		}
		q := len(ss) / 4
		mean := func(part []Sample, f func(Sample) float64) float64 {
			var t float64
			for _, s := range part {
				t += f(s)
			}
			return t / float64(len(part))
		}
		first, last := ss[:q], ss[len(ss)-q:]
		rss := func(s Sample) float64 { return float64(s.RSSBytes) / (1 << 20) }
		heap := func(s Sample) float64 { return float64(s.HeapBytes) / (1 << 20) }
		g := func(s Sample) float64 { return float64(s.Goroutines) }
		out = append(out, Trend{Role: ss[0].Role, PID: pid, Samples: len(ss),
			RSSFirstMB: round1(mean(first, rss)), RSSLastMB: round1(mean(last, rss)),
			HeapFirstMB: round1(mean(first, heap)), HeapLastMB: round1(mean(last, heap)),
			GoroutinesFirst: round1(mean(first, g)), GoroutinesLast: round1(mean(last, g))})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Role+strconv.Itoa(out[i].PID) < out[j].Role+strconv.Itoa(out[j].PID)
	})
	return out
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
