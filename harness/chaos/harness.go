package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/procstats"
)

// Config configures a scenario run. Bin and WorkDir are required.
type Config struct {
	// Bin is the pnp binary started for runners, controllers and NATS.
	Bin string
	// WorkDir receives the stores, execution logs and process logs.
	WorkDir string
	// Duration is how long jobs are submitted and faults injected.
	// Default 10s.
	Duration time.Duration
	// Rate is the jobs submitted per second. Default 50.
	Rate int
	// Runners and Controllers are the processes started. Defaults 3 and 2.
	Runners     int
	Controllers int
	// SleepMS is how long an ordinary job runs. Default 20.
	SleepMS int
	// Seed makes the fault schedule reproducible. Default 1.
	Seed uint64
	// Settle bounds the wait for every submitted job's outcome after the
	// faults end. Default 90s.
	Settle time.Duration
	// Outage is how long NATS stays down in the nats-kill scenario.
	// Default 1s.
	Outage time.Duration
	// Progress receives one line per event; nil discards them.
	Progress io.Writer
}

func (c *Config) setDefaults() {
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Rate == 0 {
		c.Rate = 50
	}
	if c.Runners == 0 {
		c.Runners = 3
	}
	if c.Controllers == 0 {
		c.Controllers = 2
	}
	if c.SleepMS == 0 {
		c.SleepMS = 20
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Settle == 0 {
		c.Settle = 90 * time.Second
	}
	if c.Outage == 0 {
		c.Outage = time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.Bin == "" {
		errs = append(errs, errors.New("chaos: the pnp binary is required"))
	}
	if c.WorkDir == "" {
		errs = append(errs, errors.New("chaos: a work directory is required"))
	}
	if c.Duration < 0 || c.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("chaos: duration %s out of range", c.Duration))
	}
	if c.Rate < 0 || c.Rate > 5000 {
		errs = append(errs, fmt.Errorf("chaos: rate %d out of range 1..5000", c.Rate))
	}
	if c.Runners < 0 || c.Runners > 16 || c.Controllers < 0 || c.Controllers > 8 {
		errs = append(errs, errors.New("chaos: at most 16 runners and 8 controllers"))
	}
	return errors.Join(errs...)
}

// Report is the outcome of a scenario. Every count is of distinct job ids
// unless it says otherwise.
type Report struct {
	Scenario string `json:"scenario"`
	// Submitted jobs were acknowledged by JetStream to the publisher.
	Submitted int `json:"submitted"`
	// PublishRetries counts publishes repeated (same job id) after an
	// error or a missing acknowledgement.
	PublishRetries int `json:"publish_retries"`
	// PublishAbandoned counts jobs whose publisher gave up without an
	// acknowledgement. They are not submitted, though JetStream may have
	// stored (and run) them: the client resends its buffer on reconnect.
	PublishAbandoned int `json:"publish_abandoned"`
	// Succeeded and Failed have a final record of that status.
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// Unexpected have a final record other than the one their input asks
	// for (a job meant to succeed that failed, or the reverse).
	Unexpected int `json:"unexpected"`
	// Lost were acknowledged and have no final record after Settle.
	Lost int `json:"lost"`
	// DuplicateResults have more than one final record written.
	DuplicateResults int `json:"duplicate_results"`
	// RetryingRecords counts the retrying records written (failed attempts
	// that were retried), over all jobs.
	RetryingRecords int `json:"retrying_records"`
	// Executions counts completed executions (all ids); DuplicateExecutions
	// the ids executed to completion more than once (at-least-once
	// delivery: a runner or controller died between the work and the ack).
	Executions          int `json:"executions"`
	DuplicateExecutions int `json:"duplicate_executions"`
	// Faults lists what was done to which process, with timings.
	Faults []Fault `json:"faults"`
	// MaxPause is the longest gap between two completions while jobs were
	// submitted.
	MaxPause Duration `json:"max_pause"`
	// MaxLatency is the longest time from a job's storing in JOBS to its
	// final record.
	MaxLatency Duration `json:"max_latency"`
	// SettleTime is how long the last outcomes took after submission ended.
	SettleTime Duration `json:"settle_time"`
	// Samples are memory and goroutine samples (soak, overload).
	Samples []Sample `json:"samples,omitempty"`
	// Extra holds scenario-specific numbers.
	Extra map[string]any `json:"extra,omitempty"`
	// JobsLeft is the number of messages still in JOBS at the end, after
	// waiting up to jobsDrainWait for lost acks to be made good.
	JobsLeft uint64   `json:"jobs_left"`
	Elapsed  Duration `json:"elapsed"`
}

// Fault is one injected fault.
type Fault struct {
	At     Duration `json:"at"`
	What   string   `json:"what"`
	Target string   `json:"target"`
	// Recovery is the time from the fault (or from the restart, for an
	// outage) to the next completed job; Dropped, for a killed runner, the
	// time until its registrations left discovery.
	Recovery Duration `json:"recovery,omitempty"`
	Dropped  Duration `json:"dropped_from_discovery,omitempty"`
	// Outage is how long the target was down (NATS servers).
	Outage Duration `json:"outage,omitempty"`

	t time.Time // when recovery is measured from
}

// Sample is one reading of a process.
type Sample struct {
	At         Duration `json:"at"`
	Role       string   `json:"role"`
	PID        int      `json:"pid"`
	RSSBytes   uint64   `json:"rss_bytes"`
	HeapBytes  uint64   `json:"heap_bytes,omitempty"`
	Goroutines int      `json:"goroutines,omitempty"`
	// HeapLiveBytes is the heap the process's last GC found live.
	HeapLiveBytes uint64 `json:"heap_live_bytes,omitempty"`
	// Reported says the process answered with its own figures
	// (goroutines and heap); RSS is read from /proc either way.
	Reported bool `json:"reported,omitempty"`
}

// Duration prints as "1.234s" in JSON.
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).Round(time.Millisecond).String())
}

func (d Duration) String() string { return time.Duration(d).Round(time.Millisecond).String() }

// OK reports whether the scenario kept its promise: nothing lost, no job
// with two final records, no outcome other than the expected one.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.DuplicateResults == 0 && r.Unexpected == 0 && r.Submitted > 0
}

// Summary is the report in one line.
func (r *Report) Summary() string {
	return fmt.Sprintf("%s: submitted %d (publish retries %d, abandoned %d), succeeded %d, failed %d, lost %d, duplicate results %d, unexpected %d, retried attempts %d, executions %d (ids executed twice or more: %d), faults %d, max pause %s, max job latency %s, settle %s, jobs left %d, elapsed %s",
		r.Scenario, r.Submitted, r.PublishRetries, r.PublishAbandoned, r.Succeeded, r.Failed, r.Lost, r.DuplicateResults, r.Unexpected, r.RetryingRecords, r.Executions, r.DuplicateExecutions, len(r.Faults), r.MaxPause, r.MaxLatency, r.SettleTime, r.JobsLeft, r.Elapsed)
}

// env is one scenario's world: the processes, the client connection and
// the bookkeeping of jobs.
type env struct {
	cfg     Config
	name    string
	start   time.Time
	ps      *procs
	servers string
	execDir string
	rng     *rand.Rand

	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	reg *discovery.Registry

	mu        sync.Mutex
	acked     map[string]bool // job id -> expected to succeed
	retries   int
	abandoned int
	// maxLatency is the longest time from a job's storing in JOBS to its
	// final record; written by history only.
	maxLatency time.Duration
	faults     []Fault
	lastDone   time.Time
	maxPause   time.Duration
	pauseOpen  bool
	doneAt     []time.Time
	samples    []Sample
	extra      map[string]any
	submitted  atomic.Int64
	retrying   atomic.Int64
}

func newEnv(cfg Config, name string) (*env, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.WorkDir, name)
	if err := os.MkdirAll(filepath.Join(dir, "exec"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	return &env{
		cfg:     cfg,
		name:    name,
		start:   time.Now(),
		ps:      &procs{bin: cfg.Bin, logDir: filepath.Join(dir, "logs")},
		execDir: filepath.Join(dir, "exec"),
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		acked:   map[string]bool{},
		extra:   map[string]any{},
	}, nil
}

func (e *env) dir(parts ...string) string {
	return filepath.Join(append([]string{e.cfg.WorkDir, e.name}, parts...)...)
}

func (e *env) since() Duration { return Duration(time.Since(e.start)) }

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.cfg.Progress, "%8s  %s: %s\n", time.Since(e.start).Round(time.Millisecond), e.name, fmt.Sprintf(format, args...))
}

// freePort returns a loopback port free at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// connect opens the orchestrator's own connection and provisions the
// streams with the scenario's settings.
func (e *env) connect(ctx context.Context, replicas int) error {
	nc, err := nats.Connect(e.servers, nats.Name("chaos orchestrator"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true), nats.Timeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("chaos: connect: %w", err)
	}
	e.nc = nc
	e.js, err = jetstream.New(nc)
	if err != nil {
		return err
	}
	var store *controller.Store
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		store, err = controller.Provision(pctx, e.js, e.storeConfig(replicas))
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return err
		}
		e.logf("provision: %v; retrying", err)
		time.Sleep(500 * time.Millisecond)
	}
	e.kv = store.Results()
	e.reg = store.Registry()
	_, err = nc.Subscribe(notifySubject, func(m *nats.Msg) {
		// Only the controller's notifications: not what JetStream or a
		// runner was made to deliver here.
		if _, err := controller.DecodeNotification(m); err == nil {
			e.completed()
		}
	})
	return err
}

// notifySubject receives every final record (Pnp-Notify), for timing.
const notifySubject = "notify.chaos.done"

// discoveryTTL is the discovery bucket's max age in every scenario: the
// smallest the registry accepts, so dead runners leave quickly.
const discoveryTTL = 3 * time.Second

func (e *env) storeConfig(replicas int) controller.StoreConfig {
	return controller.StoreConfig{
		Discovery:     discovery.Config{TTL: discoveryTTL, Replicas: replicas, Update: true},
		ResultHistory: 16,
		Replicas:      replicas,
	}
}

func (e *env) completed() {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.lastDone.IsZero() && e.pauseOpen {
		if gap := now.Sub(e.lastDone); gap > e.maxPause {
			e.maxPause = gap
		}
	}
	e.lastDone = now
	e.doneAt = append(e.doneAt, now)
}

// firstDoneAfter returns how long after t the first completion came, or 0.
func (e *env) firstDoneAfter(t time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := sort.Search(len(e.doneAt), func(i int) bool { return e.doneAt[i].After(t) })
	if i == len(e.doneAt) {
		return 0
	}
	return e.doneAt[i].Sub(t)
}

func (e *env) addFault(f Fault) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, f)
	return len(e.faults) - 1
}

// startRunner starts a runner process.
func (e *env) startRunner(maxConc, maxPending int, timeout time.Duration) (*Proc, error) {
	return e.ps.start("runner", "chaos", "child", "runner", "--server", e.servers, "--exec-dir", e.execDir,
		"--max-concurrency", strconv.Itoa(maxConc), "--max-pending", strconv.Itoa(maxPending),
		"--timeout", timeout.String(), "--drain-timeout", "3s")
}

// ctlArgs are the settings of every controller: short ack wait and
// backoff so that faults resolve in seconds, and enough attempts that the
// attempts a kill costs never exhaust them.
func (e *env) ctlArgs(replicas int, extra ...string) []string {
	return append([]string{"controller", "--server", e.servers,
		"--ack-wait", "2s", "--max-attempts", "10", "--retry-backoff", "200ms", "--max-retry-backoff", "1s",
		"--no-runner-delay", "300ms", "--drain-timeout", "5s", "--result-history", "16",
		"--replicas", strconv.Itoa(replicas), "--max-in-flight", "32"}, extra...)
}

func (e *env) startController(replicas int, extra ...string) (*Proc, error) {
	return e.ps.start("controller", e.ctlArgs(replicas, extra...)...)
}

// waitRunners waits until n runner instances are registered.
func (e *env) waitRunners(ctx context.Context, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		regs, err := e.reg.Lookup(lctx, Algorithm)
		cancel()
		if err == nil && len(regs) >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: %d runners registered, want %d (last error %v)", len(regs), n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kind says what a job asks for, and so which outcome it must get.
type kind int

const (
	kindOK kind = iota
	kindSlow
	kindInvalid
	kindFail
	kindReject
)

func (k kind) succeeds() bool { return k == kindOK || k == kindSlow }

func (e *env) body(id string, k kind) []byte {
	var b []byte
	switch k {
	case kindOK:
		b, _ = json.Marshal(Input{ID: id, SleepMS: e.cfg.SleepMS})
	case kindSlow:
		b, _ = json.Marshal(Input{ID: id, SleepMS: 500})
	case kindInvalid:
		b = []byte(`{"id":` + strconv.Quote(id) + `,"sleep_ms":"soon"}`)
	case kindFail:
		b, _ = json.Marshal(Input{ID: id, Fail: true})
	case kindReject:
		b, _ = json.Marshal(Input{ID: id, Reject: true})
	}
	return b
}

// publish submits one job and retries, under the same id, until JetStream
// acknowledges it or ctx ends. Only acknowledged jobs count as submitted.
func (e *env) publish(ctx context.Context, id string, k kind) {
	msg := &nats.Msg{Subject: controller.JobsSubjectPrefix + Algorithm, Data: e.body(id, k),
		Header: nats.Header{controller.HeaderNotify: []string{notifySubject}}}
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := e.js.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			e.mu.Lock()
			e.acked[id] = k.succeeds()
			e.retries += attempt
			e.mu.Unlock()
			e.submitted.Add(1)
			return
		}
		if ctx.Err() != nil {
			e.mu.Lock()
			e.abandoned++
			e.mu.Unlock()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load submits jobs at cfg.Rate until ctx ends, choosing each job's kind
// with pick. Publishes run concurrently so a slow acknowledgement does not
// slow the rate; it returns when every publish has returned.
func (e *env) load(ctx context.Context, pick func(n int) kind) {
	e.mu.Lock()
	e.pauseOpen = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.pauseOpen = false
		e.mu.Unlock()
	}()
	tick := time.NewTicker(time.Second / time.Duration(e.cfg.Rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	// Publishes already begun go on for up to Settle after ctx ends, so
	// that an outage at the end still sees them through.
	pubCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			giveUp := time.AfterFunc(e.cfg.Settle, cancel)
			wg.Wait()
			giveUp.Stop()
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		id := fmt.Sprintf("%s-%06d", e.name, n)
		k := pick(n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			e.publish(pubCtx, id, k)
		}()
	}
}

func allOK(int) kind { return kindOK }

// warmup runs one job through the pipeline and waits for its final
// record, so that faults hit a pipeline that is running rather than one
// still starting (in a cluster, controllers may take seconds to start).
// The warm-up job is not counted in the report's job counts.
func (e *env) warmup(ctx context.Context) error {
	id := e.name + "-warmup"
	msg := &nats.Msg{Subject: controller.JobsSubjectPrefix + Algorithm, Data: e.body(id, kindOK)}
	deadline := time.Now().Add(90 * time.Second)
	published := false
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !published {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := e.js.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
			cancel()
			published = err == nil
		}
		if published {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			en, err := e.kv.Get(gctx, id)
			cancel()
			var r controller.Result
			if err == nil && json.Unmarshal(en.Value(), &r) == nil && r.Status.Final() {
				e.logf("pipeline ready")
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("chaos: the warm-up job did not finish within 90s")
}

// jobsDrainWait bounds how long settle waits for JOBS to be empty once
// every job has its outcome: several ack waits of the harness's
// controllers (--ack-wait 2s).
const jobsDrainWait = 15 * time.Second

// settle waits until every acknowledged job has a final record, or Settle
// passes, and fills the report.
func (e *env) settle(ctx context.Context) (*Report, error) {
	loadEnd := time.Now()
	e.mu.Lock()
	want := make(map[string]bool, len(e.acked))
	for id, ok := range e.acked {
		want[id] = ok
	}
	e.mu.Unlock()
	missing := make(map[string]bool, len(want))
	for id := range want {
		missing[id] = true
	}
	deadline := time.Now().Add(e.cfg.Settle)
	for len(missing) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		for id := range missing {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			en, err := e.kv.Get(gctx, id)
			cancel()
			if err != nil {
				continue
			}
			var r controller.Result
			if json.Unmarshal(en.Value(), &r) == nil && r.Status.Final() {
				delete(missing, id)
			}
		}
		if len(missing) > 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	settleTime := time.Since(loadEnd)
	if len(missing) > 0 {
		e.logf("%d jobs without a final record after %s", len(missing), e.cfg.Settle)
	}

	rep := &Report{Scenario: e.name, Submitted: len(want), SettleTime: Duration(settleTime)}
	e.mu.Lock()
	rep.PublishRetries = e.retries
	rep.PublishAbandoned = e.abandoned
	rep.MaxPause = Duration(e.maxPause)
	rep.Faults = append(rep.Faults, e.faults...)
	e.mu.Unlock()
	for i := range rep.Faults {
		if !rep.Faults[i].t.IsZero() {
			rep.Faults[i].Recovery = Duration(e.firstDoneAfter(rep.Faults[i].t))
		}
	}
	e.mu.Lock()
	rep.Samples = append(rep.Samples, e.samples...)
	rep.Extra = e.extra
	e.mu.Unlock()

	// Every record ever written, from the bucket's history: a job with two
	// final records would show here even though the second write replaced
	// the first.
	finals, status, err := e.history(ctx)
	if err != nil {
		return nil, err
	}
	for id, ok := range want {
		switch st := status[id]; {
		case st == "":
			rep.Lost++
		case st == controller.StatusSucceeded:
			rep.Succeeded++
			if !ok {
				rep.Unexpected++
			}
		default:
			rep.Failed++
			if ok {
				rep.Unexpected++
			}
		}
		if finals[id] > 1 {
			rep.DuplicateResults++
		}
	}
	rep.RetryingRecords = int(e.retrying.Load())
	rep.MaxLatency = Duration(e.maxLatency)
	execs, err := ReadExecutions(e.execDir)
	if err != nil {
		return nil, err
	}
	for id, n := range execs {
		if strings.HasSuffix(id, "-warmup") {
			continue
		}
		rep.Executions += n
		if n > 1 {
			rep.DuplicateExecutions++
		}
	}
	// A job whose ack was lost (in a leader change, say) stays in JOBS
	// until it is delivered again, one ack wait (2 s) later, and the
	// controller acks it on seeing its final record: wait for that.
	if st, err := e.js.Stream(ctx, controller.JobsStream); err == nil {
		drained := time.Now().Add(jobsDrainWait)
		for {
			info, err := st.Info(ctx)
			if err == nil {
				rep.JobsLeft = info.State.Msgs
			}
			if (err == nil && info.State.Msgs == 0) || time.Now().After(drained) || ctx.Err() != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	rep.Elapsed = e.since()
	return rep, nil
}

// history reads every revision of every key in the results bucket, by
// sequence from its stream (no consumer, so nothing to elect in a
// cluster): the number of final records per job, and the status of the
// last one. A job with two final records would show here even though the
// second write replaced the first.
func (e *env) history(ctx context.Context) (map[string]int, map[string]controller.Status, error) {
	st, err := e.js.Stream(ctx, "KV_"+controller.ResultsBucket)
	if err != nil {
		return nil, nil, fmt.Errorf("chaos: read results: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("chaos: read results: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	type rec struct {
		key     string
		status  controller.Status
		latency time.Duration
	}
	recs := make([]rec, last-first+1)
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := atomic.Uint64{}
	next.Store(first)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seq := next.Add(1) - 1
				if seq > last {
					return
				}
				var m *jetstream.RawStreamMsg
				var err error
				for try := 0; try < 20; try++ {
					gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					m, err = st.GetMsg(gctx, seq)
					cancel()
					if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					if !errors.Is(err, jetstream.ErrMsgNotFound) {
						failed.Add(1)
					}
					continue
				}
				var r controller.Result
				if json.Unmarshal(m.Data, &r) == nil {
					x := rec{key: strings.TrimPrefix(m.Subject, "$KV."+controller.ResultsBucket+"."), status: r.Status}
					if r.FinishedAt != nil {
						x.latency = r.FinishedAt.Sub(r.SubmittedAt)
					}
					recs[seq-first] = x
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return nil, nil, fmt.Errorf("chaos: read results: %d records unreadable", n)
	}
	finals := map[string]int{}
	status := map[string]controller.Status{}
	for _, r := range recs {
		switch {
		case r.key == "":
		case r.status.Final():
			finals[r.key]++
			status[r.key] = r.status
			if r.latency > e.maxLatency {
				e.maxLatency = r.latency
			}
		case r.status == controller.StatusRetrying:
			e.retrying.Add(1)
		}
	}
	return finals, status, nil
}

// sample reads the memory of every live child, and the goroutines and
// heap that runners (their $SRV.STATS data) and controllers (their stats
// subject) report about themselves, and appends the samples.
func (e *env) sample(ctx context.Context) []Sample {
	at := e.since()
	byPID := map[int]*Sample{}
	for _, p := range e.ps.alive() {
		rss, err := RSS(p.PID())
		if err != nil {
			continue
		}
		s := &Sample{At: at, Role: p.Name, PID: p.PID(), RSSBytes: rss}
		byPID[p.PID()] = s
	}
	runnerStats, _ := micro.ControlSubject(micro.StatsVerb, Algorithm, "")
	e.gather(runnerStats, func(data []byte) {
		var st struct {
			Endpoints []struct {
				Data struct {
					Process *procstats.Snapshot `json:"process"`
				} `json:"data"`
			} `json:"endpoints"`
		}
		if json.Unmarshal(data, &st) == nil && len(st.Endpoints) > 0 && st.Endpoints[0].Data.Process != nil {
			byPID[st.Endpoints[0].Data.Process.PID].set(*st.Endpoints[0].Data.Process)
		}
	})
	e.gather(controller.StatsSubject, func(data []byte) {
		var st controller.Stats
		if json.Unmarshal(data, &st) == nil {
			byPID[st.Process.PID].set(st.Process)
		}
	})
	self := selfStats("orchestrator")
	out := []Sample{{At: at, Role: "orchestrator", PID: self.PID, RSSBytes: self.RSSBytes, HeapBytes: self.HeapBytes, Goroutines: self.Goroutines}}
	for _, s := range byPID {
		out = append(out, *s)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.samples = append(e.samples, out...)
	return out
}

// set copies a process's own report into s; s may be nil (a process that
// is not a child of this run).
func (s *Sample) set(p procstats.Snapshot) {
	if s == nil {
		return
	}
	s.Goroutines, s.HeapBytes, s.HeapLiveBytes, s.Reported = p.Goroutines, p.HeapBytes, p.HeapLiveBytes, true
}

// gather sends one request to subj and hands every reply that arrives
// within 500 ms to f.
func (e *env) gather(subj string, f func([]byte)) {
	inbox := e.nc.NewRespInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.nc.PublishRequest(subj, inbox, nil); err != nil {
		return
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return
		}
		f(m.Data)
	}
}

// sampleEvery samples every d until ctx ends.
func (e *env) sampleEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	e.sample(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.sample(ctx)
		}
	}
}

// close stops every process and the connection.
func (e *env) close() {
	e.ps.stopAll()
	if e.nc != nil {
		e.nc.Close()
	}
}

// instancesOf returns the registration keys of the runner process pid.
func (e *env) instancesOf(ctx context.Context, pid int) []string {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	regs, err := e.reg.Lookup(lctx, Algorithm)
	if err != nil {
		return nil
	}
	var keys []string
	for _, r := range regs {
		if r.Metadata["pid"] == strconv.Itoa(pid) {
			keys = append(keys, r.Key())
		}
	}
	return keys
}

// watchDrop records in fault i how long after killedAt the keys left the
// discovery bucket; it gives up after 3 TTLs.
func (e *env) watchDrop(ctx context.Context, i int, keys []string, killedAt time.Time) {
	if len(keys) == 0 {
		return
	}
	for time.Since(killedAt) < 3*discoveryTTL && ctx.Err() == nil {
		present := false
		for _, k := range keys {
			gctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := e.reg.KeyValue().Get(gctx, k)
			cancel()
			if err == nil || !errors.Is(err, jetstream.ErrKeyNotFound) {
				present = true
			}
		}
		if !present {
			e.mu.Lock()
			e.faults[i].Dropped = Duration(time.Since(killedAt))
			e.mu.Unlock()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func joinKeys(k []string) string { return strings.Join(k, ",") }
