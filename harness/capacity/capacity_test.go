package capacity

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/harness/bench"
	"github.com/pnpworker/pnpworker/protocol"
)

var (
	flagRounds    = flag.Int("capacity.rounds", 3, "measured rounds (or windows) per benchmark; medians and ranges are reported")
	flagRequests  = flag.Int("capacity.requests", 50000, "BenchmarkRunnerCore: requests per round")
	flagJobs      = flag.Int("capacity.jobs", 5000, "BenchmarkControllerJobs: jobs per round (at most 10000, the JOBS limit per algorithm)")
	flagInstances = flag.Int("capacity.instances", 1000, "BenchmarkHeartbeats: runner instances heartbeating")
	flagAlgs      = flag.Int("capacity.algorithms", 50, "BenchmarkHeartbeats and BenchmarkRunnerFleet: algorithms the instances are spread over")
	flagWindow    = flag.Duration("capacity.window", 10*time.Second, "BenchmarkHeartbeats and BenchmarkDiscoveryPutRate: length of one measured window")
	flagSync      = flag.Bool("capacity.sync-always", true, "run nats-server with sync_interval: always, as nats.conf does (false: the server's default lazy fsync)")
)

// measures collects named values, one per round, and reports their median
// and range.
type measures struct {
	names []string
	vals  map[string][]float64
	units map[string]string
}

func newMeasures() *measures {
	return &measures{vals: map[string][]float64{}, units: map[string]string{}}
}

// add records one round's value of name, in unit (the benchmark metric's
// unit, e.g. "req/s").
func (m *measures) add(name, unit string, v float64) {
	if _, ok := m.vals[name]; !ok {
		m.names = append(m.names, name)
		m.units[name] = unit
	}
	m.vals[name] = append(m.vals[name], v)
}

// report prints every measure's median and range to standard output (the
// testing package cuts a benchmark's log at ten lines), and reports the
// medians as benchmark metrics.
func (m *measures) report(b *testing.B) {
	b.Helper()
	b.ReportMetric(0, "ns/op")
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: medians over %d rounds (min … max), GOMAXPROCS %d, %d CPUs, sync_interval always: %v\n", b.Name(), len(m.vals[m.names[0]]), runtime.GOMAXPROCS(0), runtime.NumCPU(), *flagSync)
	for _, n := range m.names {
		v := slices.Clone(m.vals[n])
		slices.Sort(v)
		fmt.Fprintf(&sb, "  %-40s %12.4g  (%.4g … %.4g) %s\n", n, median(v), v[0], v[len(v)-1], m.units[n])
		b.ReportMetric(median(v), m.units[n])
	}
	fmt.Print(sb.String())
}

func median(sorted []float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	if len(sorted)%2 == 1 {
		return sorted[len(sorted)/2]
	}
	return (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
}

// once makes a benchmark body run a single time, however the testing
// package grows b.N: each benchmark here measures fixed work in rounds of
// its own.
func once(b *testing.B) bool {
	b.Helper()
	if b.N > 1 {
		b.Skip("measures fixed rounds; run with -benchtime 1x")
	}
	return true
}

// BenchmarkRunnerCore measures how many requests one runner process
// answers per CPU-second it uses: the benchmark's word count
// (harness/bench), served by the runner library with its defaults in a
// process of its own, driven by bench.Generate with 64 requests in flight
// from this process, over a separate nats-server. The runner's CPU time is
// read from /proc, so the load generator's and the server's do not count.
//
//	go test -run '^$' -bench RunnerCore -benchtime 1x ./harness/capacity/
func BenchmarkRunnerCore(b *testing.B) {
	once(b)
	srv := startServer(b, *flagSync)
	rc := startChild(b, "runner", urlEnv+"="+srv.url)
	rc.waitFor(b, time.Minute, "ready", func(r report) bool { return r.Ready })
	loadNC := srv.connect(b, "pnp capacity load")
	subject := protocol.SubjectPrefix + bench.AlgorithmName
	payloads := bench.Payloads()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m := newMeasures()
	for round := range *flagRounds {
		if _, err := bench.Generate(ctx, loadNC, subject, payloads, bench.LoadConfig{Requests: 2000}); err != nil {
			b.Fatal(err)
		}
		r0, s0 := mustUsage(b, rc.pid()), mustUsage(b, srv.cmd.Process.Pid)
		res, err := bench.Generate(ctx, loadNC, subject, payloads, bench.LoadConfig{Requests: *flagRequests})
		r1, s1 := mustUsage(b, rc.pid()), mustUsage(b, srv.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		if res.Errors > 0 {
			b.Fatalf("round %d: %d requests failed, first: %s", round+1, res.Errors, res.FirstError)
		}
		cpu := (r1.CPU - r0.CPU).Seconds()
		b.Logf("round %d: %.0f req/s, runner %.2f CPU-s, server %.2f CPU-s over %s", round+1, res.PerSecond, cpu, (s1.CPU - s0.CPU).Seconds(), res.Elapsed.Round(time.Millisecond))
		m.add("requests/s (wall, 64 in flight)", "req/s", res.PerSecond)
		m.add("requests per runner CPU-second", "req/runner-cpu-s", float64(res.OK)/cpu)
		m.add("runner CPU per request", "runner-µs/req", cpu*1e6/float64(res.OK))
		m.add("server CPU per request", "server-µs/req", (s1.CPU-s0.CPU).Seconds()*1e6/float64(res.OK))
		m.add("p50 latency", "p50-µs", float64(res.P50.Microseconds()))
		m.add("runner RSS", "runner-MiB", float64(r1.RSS)/(1<<20))
	}
	m.report(b)
}

// BenchmarkControllerJobs measures how many jobs one controller process
// dispatches per second and per CPU-second: a runner process serving the
// word count and a controller process with its defaults, both over a
// separate nats-server; this process stores -capacity.jobs jobs as fast
// as JetStream takes them, and the round lasts until every job has its
// result. The controller's CPU is read from /proc.
//
//	go test -run '^$' -bench ControllerJobs -benchtime 1x ./harness/capacity/
func BenchmarkControllerJobs(b *testing.B) {
	once(b)
	n := *flagJobs
	srv := startServer(b, *flagSync)
	nc := srv.connect(b, "pnp capacity producer")
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	store, err := controller.Provision(ctx, js, controller.StoreConfig{})
	if err != nil {
		b.Fatal(err)
	}
	rc := startChild(b, "runner", urlEnv+"="+srv.url)
	cc := startChild(b, "controller", urlEnv+"="+srv.url)
	rc.waitFor(b, time.Minute, "ready", func(r report) bool { return r.Ready })
	cc.waitFor(b, time.Minute, "ready", func(r report) bool { return r.Ready })

	payloads := bench.Payloads()
	done := 0
	// submit stores count jobs and waits until each has a result.
	submit := func(prefix string, count int) time.Duration {
		start := time.Now()
		for i := range count {
			msg := &nats.Msg{Subject: protocol.JobSubject(bench.AlgorithmName), Data: payloads[i%len(payloads)], Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d", prefix, i))
			if _, err := js.PublishMsgAsync(msg); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("storing the jobs took over a minute")
		}
		done += count
		last, progressAt := 0, time.Now()
		for {
			st, err := store.Results().Status(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if int(st.Values()) >= done {
				return time.Since(start)
			}
			if int(st.Values()) > last {
				last, progressAt = int(st.Values()), time.Now()
			}
			if time.Since(progressAt) > time.Minute {
				b.Fatalf("results stuck at %d of %d for a minute", last, done)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	submit("warm", 500) // the controller has found the runner once this is done
	m := newMeasures()
	for round := range *flagRounds {
		c0, r0, s0 := mustUsage(b, cc.pid()), mustUsage(b, rc.pid()), mustUsage(b, srv.cmd.Process.Pid)
		elapsed := submit(fmt.Sprintf("r%d", round), n)
		c1, r1, s1 := mustUsage(b, cc.pid()), mustUsage(b, rc.pid()), mustUsage(b, srv.cmd.Process.Pid)
		cpu := (c1.CPU - c0.CPU).Seconds()
		b.Logf("round %d: %d jobs in %s, controller %.2f CPU-s, runner %.2f CPU-s, server %.2f CPU-s", round+1, n, elapsed.Round(time.Millisecond), cpu, (r1.CPU - r0.CPU).Seconds(), (s1.CPU - s0.CPU).Seconds())
		m.add("jobs/s (submit to last result)", "jobs/s", float64(n)/elapsed.Seconds())
		m.add("jobs per controller CPU-second", "jobs/controller-cpu-s", float64(n)/cpu)
		m.add("controller CPU per job", "controller-µs/job", cpu*1e6/float64(n))
		m.add("server CPU per job", "server-µs/job", (s1.CPU-s0.CPU).Seconds()*1e6/float64(n))
		m.add("runner CPU per job", "runner-µs/job", (r1.CPU-r0.CPU).Seconds()*1e6/float64(n))
		m.add("controller RSS", "controller-MiB", float64(c1.RSS)/(1<<20))
	}
	if info, err := store.Dead().Info(ctx); err != nil || info.State.Msgs != 0 {
		b.Fatalf("DEAD holds %d jobs (%v), want none", info.State.Msgs, err)
	}
	m.report(b)
}

// fleet is a nats-server with -capacity.instances instances in discovery,
// spread over -capacity.algorithms algorithms (default 50) — heartbeating only (role heartbeat: one
// process, four connections) or whole runners (role runners: a connection
// each) — and the processes that watch them.
type fleet struct {
	srv       *server
	heartbeat *child
	watchers  map[string]*child
	stream    jetstream.Stream
	reg       *discovery.Registry
}

func startFleet(b *testing.B, role string, instances int, watchers ...string) *fleet {
	b.Helper()
	f := &fleet{srv: startServer(b, *flagSync), watchers: map[string]*child{}}
	nc := f.srv.connect(b, "pnp capacity observer")
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if f.reg, err = discovery.Provision(ctx, js, discovery.Config{}); err != nil {
		b.Fatal(err)
	}
	if _, err := controller.Provision(ctx, js, controller.StoreConfig{}); err != nil {
		b.Fatal(err)
	}
	if err := provisionRoutes(ctx, js); err != nil {
		b.Fatal(err)
	}
	if f.stream, err = js.Stream(ctx, "KV_"+discovery.Bucket); err != nil {
		b.Fatal(err)
	}
	f.heartbeat = startChild(b, role, urlEnv+"="+f.srv.url, fmt.Sprintf("%s=%d", instancesEnv, instances), fmt.Sprintf("%s=%d", algsEnv, *flagAlgs))
	f.heartbeat.waitFor(b, 10*time.Minute, "registrations", func(r report) bool { return r.Ready })
	for _, w := range watchers {
		f.watchers[w] = startChild(b, w, urlEnv+"="+f.srv.url)
	}
	for _, w := range watchers {
		f.watchers[w].waitFor(b, time.Minute, "ready", func(r report) bool { return r.Ready })
	}
	return f
}

func (f *fleet) lastSeq(b *testing.B) uint64 {
	b.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.LastSeq
}

// sample is everything read at the edges of a window.
type sample struct {
	at    time.Time
	seq   uint64
	varz  varz
	procs map[string]usage
	reps  map[string]report
}

func (f *fleet) sample(b *testing.B) sample {
	b.Helper()
	s := sample{at: time.Now(), seq: f.lastSeq(b), varz: f.srv.varz(b), procs: map[string]usage{}, reps: map[string]report{}}
	s.procs["server"] = mustUsage(b, f.srv.cmd.Process.Pid)
	s.procs["heartbeat"] = mustUsage(b, f.heartbeat.pid())
	for name, c := range f.watchers {
		s.procs[name] = mustUsage(b, c.pid())
		s.reps[name] = c.report()
	}
	return s
}

// window samples the fleet at both ends of one -capacity.window and
// returns the samples, the seconds between them and the CPU-seconds each
// process used in between.
func (f *fleet) window(b *testing.B) (s0, s1 sample, secs float64, cpu func(name string) float64) {
	b.Helper()
	s0 = f.sample(b)
	time.Sleep(*flagWindow)
	s1 = f.sample(b)
	cpu = func(name string) float64 { return (s1.procs[name].CPU - s0.procs[name].CPU).Seconds() }
	return s0, s1, s1.at.Sub(s0.at).Seconds(), cpu
}

// BenchmarkHeartbeats measures what -capacity.instances runner instances
// (default 1000) heartbeating every 5 s cost: discovery.Registry.Register
// and Keepalive — the code runners use — in one process over four
// connections, against a separate nats-server, watched by a
// discovery.Cache process (what every controller and gateway keeps), a
// discovery.Registry.Watch process with heartbeats (pnp discovery watch)
// and a controller process. Each window of -capacity.window reports KV
// puts/s, the server's CPU and traffic, and each watcher's CPU, memory and
// lag; the initial load of all records by a new Cache is timed in this
// process.
//
//	go test -run '^$' -bench Heartbeats -benchtime 1x ./harness/capacity/
func BenchmarkHeartbeats(b *testing.B) {
	once(b)
	instances := *flagInstances
	f := startFleet(b, "heartbeat", instances, "cache", "watch", "controller")
	m := newMeasures()
	for _, name := range []string{"cache", "watch"} {
		r := f.watchers[name].report()
		if r.Records != instances {
			b.Fatalf("%s sees %d records, want %d", name, r.Records, instances)
		}
	}
	// The keepalives start spread over one period and put first one
	// period later; wait until every one has put.
	period := f.reg.TTL() / 3
	time.Sleep(2*period + time.Second)
	for w := range *flagRounds {
		s0, s1, secs, cpu := f.window(b)
		puts := float64(s1.seq-s0.seq) / secs
		b.Logf("window %d: %.0f puts/s; CPU %% of one core: server %.1f, heartbeats %.1f, cache %.1f, watch %.1f, controller %.1f",
			w+1, puts, 100*cpu("server")/secs, 100*cpu("heartbeat")/secs, 100*cpu("cache")/secs, 100*cpu("watch")/secs, 100*cpu("controller")/secs)
		m.add("KV puts/s", "puts/s", puts)
		m.add("server CPU, % of one core", "server-%cpu", 100*cpu("server")/secs)
		m.add("server CPU per put", "server-µs/put", cpu("server")*1e6/(puts*secs))
		m.add("bytes/s into the server", "in-B/s", float64(s1.varz.InBytes-s0.varz.InBytes)/secs)
		m.add("bytes/s out of the server", "out-B/s", float64(s1.varz.OutBytes-s0.varz.OutBytes)/secs)
		m.add("heartbeating process CPU, % of one core", "heartbeat-%cpu", 100*cpu("heartbeat")/secs)
		for _, name := range []string{"cache", "watch", "controller"} {
			m.add(name+" CPU, % of one core", name+"-%cpu", 100*cpu(name)/secs)
			m.add(name+" CPU per update", name+"-µs/put", cpu(name)*1e6/(puts*secs))
			m.add(name+" RSS", name+"-MiB", float64(s1.procs[name].RSS)/(1<<20))
			m.add(name+" live heap", name+"-heap-MiB", float64(s1.reps[name].HeapLive)/(1<<20))
		}
		m.add("watch events/s received", "watch-events/s", float64(s1.reps["watch"].Events-s0.reps["watch"].Events)/secs)
		m.add("watch lag, max of last second", "watch-lag-ms", s1.reps["watch"].LagMaxMS)
		m.add("cache changes published/s", "cache-changes/s", float64(s1.reps["cache"].Changes-s0.reps["cache"].Changes)/secs)
		load := timeCacheLoad(b, f.srv, instances)
		m.add("new Cache: initial load of every record", "load-ms", float64(load.Microseconds())/1e3)
	}
	m.report(b)
}

// BenchmarkRunnerFleet measures what -capacity.instances whole runners
// (default 1000) cost while idle, where BenchmarkHeartbeats counts their
// heartbeats only: each runner.Runner has a connection of its own and, as
// well as heartbeating, reads its algorithm's route every 500 ms and its
// live instances every 3 s (a subject list and a direct get per instance)
// and follows its algorithm's keys. 1000 runners over 50 algorithms
// (-capacity.algorithms) in one process, a discovery.Cache process and a controller process, against a
// separate nats-server; each window of -capacity.window reports the
// server's CPU, messages and traffic, and the runners' CPU per instance.
//
//	go test -run '^$' -bench RunnerFleet -benchtime 1x ./harness/capacity/
func BenchmarkRunnerFleet(b *testing.B) {
	once(b)
	instances := *flagInstances
	f := startFleet(b, "runners", instances, "cache", "controller")
	f.watchers["cache"].waitFor(b, time.Minute, "every runner", func(r report) bool { return r.Records == instances })
	period := f.reg.TTL() / 3
	time.Sleep(period + time.Second)
	m := newMeasures()
	for w := range *flagRounds {
		s0, s1, secs, cpu := f.window(b)
		b.Logf("window %d: %.0f puts/s, %.0f msgs/s in, CPU %% of one core: server %.1f, runners %.1f, cache %.1f, controller %.1f",
			w+1, float64(s1.seq-s0.seq)/secs, float64(s1.varz.InMsgs-s0.varz.InMsgs)/secs,
			100*cpu("server")/secs, 100*cpu("heartbeat")/secs, 100*cpu("cache")/secs, 100*cpu("controller")/secs)
		m.add("KV puts/s", "puts/s", float64(s1.seq-s0.seq)/secs)
		m.add("messages/s into the server", "in-msgs/s", float64(s1.varz.InMsgs-s0.varz.InMsgs)/secs)
		m.add("messages/s out of the server", "out-msgs/s", float64(s1.varz.OutMsgs-s0.varz.OutMsgs)/secs)
		m.add("bytes/s out of the server", "out-B/s", float64(s1.varz.OutBytes-s0.varz.OutBytes)/secs)
		m.add("server CPU, % of one core", "server-%cpu", 100*cpu("server")/secs)
		m.add("runners' process CPU, % of one core", "runners-%cpu", 100*cpu("heartbeat")/secs)
		m.add("CPU per idle runner", "runner-µs/s", cpu("heartbeat")*1e6/secs/float64(instances))
		m.add("runners' process RSS", "runners-MiB", float64(s1.procs["heartbeat"].RSS)/(1<<20))
		m.add("cache CPU, % of one core", "cache-%cpu", 100*cpu("cache")/secs)
		m.add("controller CPU, % of one core", "controller-%cpu", 100*cpu("controller")/secs)
	}
	m.report(b)
}

// timeCacheLoad starts a discovery.Cache on a new connection and returns
// how long it takes to load the bucket.
func timeCacheLoad(b *testing.B, srv *server, want int) time.Duration {
	b.Helper()
	nc, err := nats.Connect(srv.url, nats.Name("pnp capacity load timer"))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	reg, err := discovery.Open(ctx, js, discovery.Config{})
	if err != nil {
		b.Fatal(err)
	}
	cache := reg.NewCache(zerolog.Nop())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = cache.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	select {
	case <-cache.Ready():
	case <-ctx.Done():
		b.Fatal("the cache did not load in a minute")
	}
	d := time.Since(start)
	if got := len(cache.All()); got < want {
		b.Fatalf("the cache loaded %d records, want %d", got, want)
	}
	return d
}

// BenchmarkDiscoveryPutRate finds the most puts per second one discovery
// bucket takes: 16 writers over four connections re-register 1000
// instances with discovery.Registry.Register as fast as the server
// acknowledges, for -capacity.window per round, watched by a Watch process
// that reports whether it keeps up. Divided into the heartbeat period, it
// is the most instances one bucket holds.
//
//	go test -run '^$' -bench DiscoveryPutRate -benchtime 1x ./harness/capacity/
func BenchmarkDiscoveryPutRate(b *testing.B) {
	once(b)
	const instances, writers, conns = 1000, 16, 4
	// One heartbeating instance: the bucket is made and watched as in
	// BenchmarkHeartbeats, and the writers below do the rest.
	f := startFleet(b, "heartbeat", 1, "watch")
	regs := make([]*discovery.Registry, conns)
	for i := range regs {
		js, err := jetstream.New(f.srv.connect(b, fmt.Sprintf("pnp capacity writer %d", i)))
		if err != nil {
			b.Fatal(err)
		}
		if regs[i], err = discovery.Open(context.Background(), js, discovery.Config{}); err != nil {
			b.Fatal(err)
		}
	}
	recs := make([]discovery.Registration, instances)
	for i := range recs {
		alg := heartbeatAlgorithm(i % 50)
		recs[i] = discovery.Registration{
			Algorithm: alg, Version: "1.0.0", Instance: fmt.Sprintf("burst%05d", i),
			Subject: discovery.RequestSubject(alg), QueueGroup: "runners",
			InputSchema: json.RawMessage(bench.InputSchema), OutputSchema: json.RawMessage(bench.OutputSchema),
			TimeoutMS: 30000, MaxConcurrency: 4, SDK: "pnpworker-go/0.1.0", StartedAt: time.Now().UTC(),
		}
	}
	m := newMeasures()
	for round := range *flagRounds {
		ctx, cancel := context.WithTimeout(context.Background(), *flagWindow)
		s0 := f.sample(b)
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; ctx.Err() == nil; i += writers {
					if err := regs[w%conns].Register(ctx, recs[i%instances]); err != nil && ctx.Err() == nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		cancel()
		s1 := f.sample(b)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		secs := s1.at.Sub(s0.at).Seconds()
		puts := float64(s1.seq-s0.seq) / secs
		// Let the watcher catch up, then count what it received.
		var got int64
		deadline := time.Now().Add(time.Minute)
		for {
			r := f.watchers["watch"].report()
			got = r.Events - s0.reps["watch"].Events
			if uint64(got) >= s1.seq-s0.seq || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		caughtUp := time.Since(s1.at)
		srvCPU := (s1.procs["server"].CPU - s0.procs["server"].CPU).Seconds()
		b.Logf("round %d: %.0f puts/s, server %.0f %% of one core, watch received %d of %d, caught up %s after the writers stopped",
			round+1, puts, 100*srvCPU/secs, got, s1.seq-s0.seq, caughtUp.Round(10*time.Millisecond))
		m.add("KV puts/s, one bucket, 16 writers", "puts/s", puts)
		m.add("server CPU per put", "server-µs/put", srvCPU*1e6/(puts*secs))
		m.add("instances at one put per 5 s", "instances", puts*5)
		m.add("watch CPU per event", "watch-µs/event", (s1.procs["watch"].CPU-s0.procs["watch"].CPU).Seconds()*1e6/float64(max(got, 1)))
		m.add("watch lag after the writers stopped", "catch-up-ms", float64(caughtUp.Milliseconds()))
	}
	m.report(b)
}

// BenchmarkRecordDecode is what every watcher spends on each record it
// receives: discovery.Codec.Decode (JSON parse and schema validation) of a
// runner's record for the word count.
func BenchmarkRecordDecode(b *testing.B) {
	codec, err := discovery.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	rec := discovery.Registration{
		Algorithm: "capacity_000", Version: "1.0.0", Instance: "cap00000",
		Subject: discovery.RequestSubject("capacity_000"), QueueGroup: "runners",
		Description: "Counts the words of a text; used by pnp bench.",
		InputSchema: json.RawMessage(bench.InputSchema), OutputSchema: json.RawMessage(bench.OutputSchema),
		TimeoutMS: 30000, MaxConcurrency: 4, SDK: "pnpworker-go/0.1.0", StartedAt: time.Now().UTC(), HeartbeatAt: time.Now().UTC(),
	}
	data, err := codec.Encode(rec)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := codec.Decode(rec.Key(), data); err != nil {
			b.Fatal(err)
		}
	}
}
