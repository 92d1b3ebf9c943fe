package capacity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/harness/bench"
	"github.com/pnpworker/pnpworker/internal/procstats"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

// report is the line a role prints on its stdout, once when it is ready and
// then every second.
type report struct {
	Ready bool `json:"ready,omitempty"`
	// Records is how many registrations the role holds or sees.
	Records int `json:"records,omitempty"`
	// LoadMS is how long a watcher's first load of the bucket took.
	LoadMS float64 `json:"load_ms,omitempty"`
	// Changes counts a cache's published changes; Events a watch's events.
	Changes int64 `json:"changes,omitempty"`
	Events  int64 `json:"events,omitempty"`
	// LagMaxMS is the largest delay, over the last second, between the
	// server storing an update and a watcher handling it.
	LagMaxMS float64 `json:"lag_max_ms,omitempty"`
	// HeapLive is the Go heap the last garbage collection found live.
	HeapLive uint64 `json:"heap_live,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Settings of the roles, in the environment.
const (
	urlEnv       = "PNP_CAPACITY_URL"
	instancesEnv = "PNP_CAPACITY_INSTANCES"
	connsEnv     = "PNP_CAPACITY_CONNS"
	algsEnv      = "PNP_CAPACITY_ALGORITHMS"
)

// runRole runs role until an interrupt and returns the exit code.
func runRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	roles := map[string]func(context.Context, *nats.Conn, func(report)) error{
		"runner":     roleRunner,
		"controller": roleController,
		"heartbeat":  roleHeartbeat,
		"cache":      roleCache,
		"watch":      roleWatch,
		"runners":    roleRunners,
	}
	fn, ok := roles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 2
	}
	nc, err := nats.Connect(os.Getenv(urlEnv), nats.Name("pnp capacity "+role), nats.Timeout(10*time.Second))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: connect: %v\n", role, err)
		return 1
	}
	defer nc.Close()
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(r report) {
		r.HeapLive = procstats.Read().HeapLiveBytes
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	}
	if err := fn(ctx, nc, emit); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// every calls fn once a second until ctx ends.
func every(ctx context.Context, fn func()) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// roleRunner serves the benchmark's word count (harness/bench) with the
// runner library's defaults.
func roleRunner(ctx context.Context, nc *nats.Conn, emit func(report)) error {
	alg, err := bench.NewAlgorithm(0)
	if err != nil {
		return err
	}
	r, err := runner.New(nc, []*runner.Algorithm{alg})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Started():
		emit(report{Ready: true})
	case err := <-done:
		return err
	}
	return <-done
}

// roleController runs a controller with its defaults.
func roleController(ctx context.Context, nc *nats.Conn, emit func(report)) error {
	c, err := controller.New(nc, controller.Config{})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	emit(report{Ready: true})
	go every(ctx, func() { emit(report{Ready: true}) })
	return <-done
}

// heartbeatAlgorithms names the algorithms the heartbeat role spreads its
// instances over.
func heartbeatAlgorithm(i int) string { return fmt.Sprintf("capacity_%03d", i) }

// roleHeartbeat registers many instances the way runners do —
// discovery.Registry.Register, then Registry.Keepalive, which renews every
// third of the bucket's max age — spread over a few connections, with the
// keepalives started evenly over one period so the puts arrive at a steady
// rate. The records are those a runner writes for the benchmark's word
// count, with its schemas.
func roleHeartbeat(ctx context.Context, nc *nats.Conn, emit func(report)) error {
	n, conns, algs := envInt(instancesEnv, 1000), envInt(connsEnv, 4), envInt(algsEnv, 50)
	regs := make([]*discovery.Registry, conns)
	for i := range regs {
		c := nc
		if i > 0 {
			var err error
			c, err = nats.Connect(nc.ConnectedUrl(), nats.Name(fmt.Sprintf("pnp capacity heartbeat %d", i)))
			if err != nil {
				return err
			}
			defer c.Close()
		}
		js, err := jetstream.New(c)
		if err != nil {
			return err
		}
		if regs[i], err = discovery.Provision(ctx, js, discovery.Config{}); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	started := time.Now().UTC()
	recs := make([]discovery.Registration, n)
	for i := range recs {
		alg := heartbeatAlgorithm(i % algs)
		recs[i] = discovery.Registration{
			Algorithm:      alg,
			Version:        "1.0.0",
			Instance:       fmt.Sprintf("cap%05d", i),
			Subject:        discovery.RequestSubject(alg),
			QueueGroup:     runner.DefaultQueueGroup,
			Description:    "Counts the words of a text; used by pnp bench.",
			InputSchema:    json.RawMessage(bench.InputSchema),
			OutputSchema:   json.RawMessage(bench.OutputSchema),
			TimeoutMS:      runner.DefaultTimeout.Milliseconds(),
			MaxConcurrency: 4,
			Host:           host,
			SDK:            runner.SDK,
			StartedAt:      started,
		}
	}
	// Register every instance first, as a fleet that is already up.
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += conns {
				if err := regs[c].Register(ctx, recs[i]); err != nil {
					errs[c] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	emit(report{Ready: true, Records: n})
	period := regs[0].TTL() / 3
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(period * time.Duration(i) / time.Duration(n)):
			}
			regs[i%conns].Keepalive(ctx, recs[i], log)
		}()
	}
	every(ctx, func() { emit(report{Ready: true, Records: n}) })
	wg.Wait()
	return nil
}

// roleCache keeps a discovery.Cache, as every controller and gateway does,
// and counts the changes it publishes.
func roleCache(ctx context.Context, nc *nats.Conn, emit func(report)) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg, err := discovery.Open(ctx, js, discovery.Config{})
	if err != nil {
		return err
	}
	cache := reg.NewCache(zerolog.New(os.Stderr).Level(zerolog.WarnLevel))
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }()
	select {
	case <-cache.Ready():
	case err := <-done:
		return err
	}
	load := time.Since(start)
	var changes atomic.Int64
	go func() {
		for {
			ch := cache.Changed()
			select {
			case <-ctx.Done():
				return
			case <-ch:
				changes.Add(1)
			}
		}
	}()
	rep := func() report {
		return report{Ready: true, Records: len(cache.All()), LoadMS: float64(load.Microseconds()) / 1e3, Changes: changes.Load()}
	}
	emit(rep())
	go every(ctx, func() { emit(rep()) })
	return <-done
}

// roleWatch follows the bucket with discovery.Registry.Watch, heartbeats
// included, as pnp discovery watch does, and reports how late each event
// is handled.
func roleWatch(ctx context.Context, nc *nats.Conn, emit func(report)) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg, err := discovery.Open(ctx, js, discovery.Config{})
	if err != nil {
		return err
	}
	var (
		mu     sync.Mutex
		events int64
		lags   []time.Duration
		live   = map[string]bool{}
		load   time.Duration
		listed bool
	)
	start := time.Now()
	go every(ctx, func() {
		mu.Lock()
		r := report{Ready: listed, Records: len(live), Events: events, LoadMS: float64(load.Microseconds()) / 1e3}
		if len(lags) > 0 {
			r.LagMaxMS = float64(slices.Max(lags).Microseconds()) / 1e3
		}
		lags = lags[:0]
		mu.Unlock()
		emit(r)
	})
	return reg.Watch(ctx, true, func(ev discovery.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Kind {
		case discovery.EventListed:
			listed, load = true, time.Since(start)
			return
		case discovery.EventJoin, discovery.EventChange, discovery.EventHeartbeat:
			live[ev.Key] = true
		default:
			delete(live, ev.Key)
		}
		events++
		if listed {
			lags = append(lags, time.Since(ev.At))
		}
	})
}

// roleRunners runs PNP_CAPACITY_INSTANCES whole runners (runner.New and
// Run, each on a connection of its own, as separate runner processes
// would be), spread over PNP_CAPACITY_ALGORITHMS algorithms serving the
// benchmark's word count: besides its heartbeat, each reads its
// algorithms' route every 500 ms and their live instances every 3 s, and
// follows their keys' subjects. The buckets must exist
// (runner.WithoutProvisioning, as under nats.conf). Runners start a few at
// a time; the role reports how many have started.
func roleRunners(ctx context.Context, nc *nats.Conn, emit func(report)) error {
	n, algs := envInt(instancesEnv, 1000), envInt(algsEnv, 50)
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	var started atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		emit(report{Records: int(started.Load()), Error: err.Error()})
		select {
		case errc <- err:
		default:
		}
	}
	go every(ctx, func() { emit(report{Ready: int(started.Load()) == n, Records: int(started.Load())}) })
	sem := make(chan struct{}, 16) // runners starting at once
	for i := range n {
		select {
		case <-ctx.Done():
		case sem <- struct{}{}:
		case err := <-errc:
			return err
		}
		if ctx.Err() != nil {
			break
		}
		c, err := nats.Connect(nc.ConnectedUrl(), nats.Name(fmt.Sprintf("pnp capacity runner %d", i)), nats.Timeout(10*time.Second))
		if err != nil {
			fail(fmt.Errorf("runner %d: %w", i, err))
			return err
		}
		defer c.Close()
		alg, err := runner.NewAlgorithm(runner.Spec{
			Name: heartbeatAlgorithm(i % algs), Version: "1.0.0",
			Description: "Counts the words of a text; used by pnp bench.",
			InputSchema: []byte(bench.InputSchema), OutputSchema: []byte(bench.OutputSchema),
		}, bench.WordCount)
		if err != nil {
			return err
		}
		r, err := runner.New(c, []*runner.Algorithm{alg}, runner.WithoutProvisioning(), runner.WithLogger(log))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			select {
			case <-r.Started():
				started.Add(1)
				<-sem
			case err := <-done:
				<-sem
				fail(fmt.Errorf("runner %d: %w", i, err))
				return
			}
			if err := <-done; err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("runner %d: %w", i, err))
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	wg.Wait()
	return nil
}

// provisionRoutes makes the routes bucket whole runners read.
func provisionRoutes(ctx context.Context, js jetstream.JetStream) error {
	_, err := rollout.Provision(ctx, js, rollout.Config{})
	return err
}
