package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
)

func cmdCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cancel", "pnp cancel [flags] <job id>...\n\nA waiting job never runs; a running one has its context cancelled at the runner. Its final status is cancelled, never retried.\nExit 1 when a job is unknown or already finished (its outcome is named).", stdout)
	var (
		nf natsFlags
		lf logFlags
	)
	nf.register(fs)
	lf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: want one or more job ids", errUsage)
	}
	for _, id := range pos {
		if !jobs.ValidJobID(id) {
			return fmt.Errorf("%w: %q cannot name a job", errUsage, id)
		}
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, false)
	if err != nil {
		return err
	}
	defer nc.Close()
	var errs []error
	for _, id := range pos {
		_, err := store.Cancel(ctx, id)
		var fin *jobs.FinishedError
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "%s cancelled\n", id)
		case errors.As(err, &fin):
			errs = append(errs, fmt.Errorf("job %s already finished: %s", id, fin.Result.Status))
		case errors.Is(err, jobs.ErrUnknownJob):
			errs = append(errs, fmt.Errorf("no job %s: no result record and nothing waiting under this id (never submitted, or its result expired)", id))
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cmdJobsPurge is pnp jobs purge: drop an algorithm's waiting jobs.
func cmdJobsPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("jobs purge", "pnp jobs purge [flags] <algorithm>\n\nDrops every job of the algorithm waiting in JOBS and prints how many; they leave no result record and no dead letter.\nJobs running at that moment finish. Needs the admin role (nats.conf).", stdout)
	var (
		nf natsFlags
		lf logFlags
	)
	nf.register(fs)
	lf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one algorithm", errUsage)
	}
	if !discovery.ValidAlgorithmName(pos[0]) {
		return fmt.Errorf("%w: %q is not an algorithm name", errUsage, pos[0])
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, false)
	if err != nil {
		return err
	}
	defer nc.Close()
	n, err := store.Purge(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d waiting jobs of %s purged\n", n, pos[0])
	return nil
}

// cmdAlgorithmsDeclare is pnp algorithms declare: accept jobs for
// algorithms before any of their runners has started.
func cmdAlgorithmsDeclare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("algorithms declare", "pnp algorithms declare [flags] <algorithm>...\n\nMarks algorithms as known, so that pnp submit and the gateway accept their jobs (which wait for a runner)\nbefore any runner has registered: scale from zero. The marks are keys of bucket served.", stdout)
	var (
		nf natsFlags
		lf logFlags
	)
	nf.register(fs)
	lf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: want one or more algorithm names", errUsage)
	}
	for _, a := range pos {
		if !discovery.ValidAlgorithmName(a) {
			return fmt.Errorf("%w: %q is not an algorithm name (lower case letters, digits and '_', starting with a letter, at most 64 characters)", errUsage, a)
		}
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, true)
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, a := range pos {
		err := store.Declare(ctx, a)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("%w: bucket %s does not exist yet: run 'pnp provision', or wait until a controller has started", err, jobs.ServedBucket)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s declared\n", a)
	}
	return nil
}
