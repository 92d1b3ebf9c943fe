package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/rollout"
)

// cmdProvision creates or updates every stream and bucket once and exits:
// the one-shot step of a deployment whose runners and controllers run with
// --no-provision under credentials that may not create streams.
func cmdProvision(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("provision", "pnp provision [--server URL] [--replicas N] [--output-algorithms a,b] [flags]", stdout)
	var (
		nf   natsFlags
		lf   logFlags
		cfg  jobs.StoreConfig
		wait = fs.Duration("wait", 2*time.Minute, "give up when NATS or JetStream is not ready within this long")
	)
	nf.register(fs)
	lf.register(fs)
	fs.IntVar(&cfg.Replicas, "replicas", envInt("PNP_REPLICAS", 1), "replicas of every stream and bucket, discovery included (3 in a 3-node cluster) (env PNP_REPLICAS)")
	fs.DurationVar(&cfg.Discovery.TTL, "discovery-ttl", discovery.DefaultTTL, "max age of a registration without heartbeat")
	fs.IntVar(&cfg.Discovery.MaxConsumers, "discovery-max-consumers", discovery.DefaultMaxConsumers, "consumers the discovery bucket's stream may have (watchers of controllers, gateways and admin tools; runners create none); -1: the server's limit")
	routesCfg := rollout.Config{Update: true}
	fs.IntVar(&routesCfg.MaxConsumers, "routes-max-consumers", rollout.DefaultMaxConsumers, "consumers the routes bucket's stream may have (as --discovery-max-consumers); -1: the server's limit")
	registerRetentionFlags(fs, &cfg)
	var pf placementFlags
	pf.register(fs)
	var of objectFlags
	of.register(fs, &cfg)
	registerStoreLimits(fs, &cfg, true)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := of.apply(&cfg); err != nil {
		return err
	}
	cfg.Discovery.Replicas = cfg.Replicas
	routesCfg.Replicas = cfg.Replicas
	compareCfg, historyCfg := rollout.CompareConfig{Replicas: cfg.Replicas}, rollout.HistoryConfig{Replicas: cfg.Replicas}
	if err := pf.apply(&cfg, &routesCfg, &compareCfg, &historyCfg); err != nil {
		return err
	}
	// An explicit provision brings an existing discovery bucket to these
	// settings; the job streams are always created or updated.
	cfg.Discovery.Update = true
	if err := errors.Join(cfg.Validate(), routesCfg.Validate()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	if err := nf.check(); err != nil {
		return err
	}
	nc, err := nf.connectAndWait(ctx, "pnp provision", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nf.jetStream(nc)
	if err != nil {
		return err
	}
	// A server that just started may not have JetStream (or, in a
	// cluster, a meta leader) yet: retry until it answers or ctx ends, so
	// a one-shot provisioning container does not race the server.
	for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = jobs.Provision(pctx, js, cfg)
		if err == nil {
			_, err = rollout.Provision(pctx, js, routesCfg)
		}
		if err == nil {
			_, err = rollout.ProvisionCompare(pctx, js, compareCfg)
		}
		if err == nil {
			_, err = rollout.ProvisionHistory(pctx, js, historyCfg)
		}
		cancel()
		if err == nil {
			break
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("provisioning failed; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
	}
	objects := []string{jobs.InputsBucket, jobs.UploadsBucket, jobs.OutputsBucket}
	for _, a := range cfg.OutputAlgorithms {
		objects = append(objects, objref.OutputsBucketFor(a))
	}
	fmt.Fprintf(stdout, "provisioned %s, %s, %s, %s, %s, %s, %s and the object stores %s (replicas %d)\n",
		discovery.Bucket, jobs.JobsStream, jobs.ResultsBucket, jobs.DeadStream, rollout.Bucket,
		rollout.CompareStream, rollout.HistoryStream, strings.Join(objects, ", "), cfg.Replicas)
	return nc.Drain()
}
