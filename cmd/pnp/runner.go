package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"pnpworker/discovery"
	"pnpworker/internal/imagefetch"
	"pnpworker/runner"
	"pnpworker/worker"
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
	)
	wf.register(fs)
	nf.register(fs)
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
	if err := wf.check(); err != nil {
		return err
	}
	if chosen, _ := chooseBuiltins(algs, algoConfig{}); len(chosen) == 0 && len(wf.commands) == 0 {
		return fmt.Errorf("%w: --algorithms none and no --worker: nothing to serve", errUsage)
	}
	opts := []runner.Option{
		runner.WithLogger(log),
		runner.WithQueueGroup(queue),
		runner.WithDrainTimeout(*drain),
		runner.WithDiscovery(discovery.Config{}),
	}
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
		stop, err := serveMetrics(ctx, mf.addr, reg, log)
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
	// obj:// image URLs are read over this very connection, with the
	// runner's own permissions.
	js, err := jetstream.New(nc)
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
	}
	for _, w := range workers {
		fns = append(fns, w.Run)
	}
	if err := runAll(ctx, fns...); err != nil {
		return err
	}
	return nc.Drain()
}
