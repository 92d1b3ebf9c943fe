package main

import (
	"context"
	"io"

	"pnpworker/discovery"
	"pnpworker/internal/imagefetch"
	"pnpworker/runner"
)

func cmdRunner(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("runner", "pnp runner [--server URL] [--algorithms a,b] [flags]", stdout)
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
		mf  metricsFlag
	)
	nf.register(fs)
	lf.register(fs)
	mf.register(fs)
	imf.register(fs)
	fs.StringVar(&algs, "algorithms", env("PNP_ALGORITHMS", "all"), "comma-separated built-in algorithms to serve, or all (env PNP_ALGORITHMS)")
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
	algCfg, err := newAlgoConfig(imf.gallery, imagefetch.ParseAllow(imf.allow), budget, log)
	if err != nil {
		return err
	}
	list, err := selectAlgorithmsWith(algs, algCfg)
	if err != nil {
		return err
	}
	opts := []runner.Option{
		runner.WithLogger(log),
		runner.WithQueueGroup(queue),
		runner.WithDrainTimeout(*drain),
		runner.WithDiscovery(discovery.Config{}),
	}
	if mf.addr != "" {
		reg := newRegistry()
		opts = append(opts, runner.WithMetrics(reg))
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
	if noProv {
		opts = append(opts, runner.WithoutProvisioning())
	}
	r, err := runner.New(nc, list, opts...)
	if err != nil {
		return err
	}
	if err := r.Run(ctx); err != nil {
		return err
	}
	return nc.Drain()
}
