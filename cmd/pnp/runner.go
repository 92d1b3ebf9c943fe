package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

func cmdRunner(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("runner", "pnp runner [--server URL] [--algorithms a,b|none] [--worker CMD]... [--worker-procs N|MIN:MAX] [flags]", stdout)
	var (
		nf     natsFlags
		lf     logFlags
		algs   string
		queue  string
		noProv bool
		drain  = fs.Duration("drain-timeout", runner.DefaultDrainTimeout, "how long to wait for in-flight requests on shutdown")
	)
	var (
		imf imageFlags
		wf  workerFlags
		mf  metricsFlag
		jf  jsPrefixFlag
	)
	wf.register(fs)
	nf.register(fs)
	jf.register(fs)
	lf.register(fs)
	mf.register(fs)
	imf.register(fs)
	registerAlgorithmsFlag(fs, &algs)
	fs.StringVar(&queue, "queue-group", env("PNP_QUEUE_GROUP", runner.DefaultQueueGroup), "queue group shared by replicas (env PNP_QUEUE_GROUP)")
	fs.BoolVar(&noProv, "no-provision", false, "bind to an existing discovery bucket instead of creating it (for credentials that may not create streams)")
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	budget, err := imf.budget()
	if err != nil {
		return err
	}
	if err := checkAlgorithmNames(algs); err != nil {
		return err
	}
	if _, err := newAlgoConfig(imf.gallery, imagefetch.ParseAllow(imf.allow), imf.objectBuckets(), nil, budget, log); err != nil {
		return err
	}
	if err := errors.Join(wf.check(), nf.check()); err != nil {
		return err
	}
	if err := jf.check(&nf); err != nil {
		return err
	}
	chosen, _ := chooseBuiltins(algs, algoConfig{})
	if len(chosen) == 0 && len(wf.commands) == 0 {
		return fmt.Errorf("%w: --algorithms none and no --worker: nothing to serve", errUsage)
	}
	ready := readiness{builtins: len(chosen) > 0}
	opts := []runner.Option{
		runner.WithLogger(log),
		runner.WithQueueGroup(queue),
		runner.WithDrainTimeout(*drain),
		runner.WithDiscovery(discovery.Config{}),
	}
	opts = append(opts, jf.runnerOptions(&nf)...)
	if noProv {
		opts = append(opts, runner.WithoutProvisioning())
	}
	var deps workerDeps
	if mf.addr != "" {
		// The built-in runner and every worker's runner (made anew at each
		// restart of its process) report into one set of runner metrics.
		reg := newRegistry()
		m, err := runner.NewMetrics(reg)
		if err != nil {
			return err
		}
		opts = append(opts, runner.WithSharedMetrics(m))
		if deps.metrics, err = worker.NewMetrics(reg); err != nil {
			return err
		}
		stop, err := serveMetricsReady(ctx, mf.addr, reg, ready.check, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	nc, err := nf.connectAndWait(ctx, "pnp runner", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ready.nc.Store(nc)
	// obj:// image URLs are read over this very connection, with the
	// runner's own permissions (and its account's JetStream prefix).
	js, err := jf.jetStream(nc, &nf)
	if err != nil {
		return err
	}
	algCfg, err := newAlgoConfig(imf.gallery, imagefetch.ParseAllow(imf.allow), imf.objectBuckets(), js, budget, log)
	if err != nil {
		return err
	}
	list, err := selectAlgorithmsWith(algs, algCfg)
	if err != nil {
		return err
	}
	// With --worker-procs MIN:MAX the workers read the JOBS backlog of
	// their algorithms through it too, when the runner's user may.
	deps.js = js
	workers, err := wf.build(nc, deps, log, opts...)
	if err != nil {
		return err
	}
	var fns []func(context.Context) error
	if len(list) > 0 {
		r, err := runner.New(nc, list, opts...)
		if err != nil {
			return err
		}
		fns = append(fns, r.Run)
		started := r.Started()
		ready.started.Store(&started)
	}
	for _, w := range workers {
		fns = append(fns, w.Run)
	}
	if err := runAll(ctx, fns...); err != nil {
		return err
	}
	return drainOnStop(nc, log)
}

// readiness answers /readyz of pnp runner: ready once connected to NATS
// and, when it serves built-in algorithms, once they are all subscribed
// and registered; not ready while NATS is away. The algorithms of worker
// processes come and go with their processes and are not waited for.
type readiness struct {
	builtins bool // set before serving
	nc       atomic.Pointer[nats.Conn]
	started  atomic.Pointer[<-chan struct{}] // the built-in runner's Started
}

func (r *readiness) check() error {
	nc := r.nc.Load()
	if nc == nil || !nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if !r.builtins {
		return nil
	}
	if s := r.started.Load(); s != nil {
		select {
		case <-*s:
			return nil
		default:
		}
	}
	return errors.New("algorithms not registered yet")
}
