package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// TestServedMarkRetried checks that a failed mark in the served bucket is
// tried again while the algorithm's runner stays, with no other change of
// the registrations: renewed heartbeats wake no one, so a mark that waited
// for the next change might never be made, and the algorithm's waiting
// jobs would expire after MaxUnservedJobAge instead of MaxJobAge.
func TestServedMarkRetried(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var log logBuffer
	cfg := fastConfig(t)
	cfg.Logger = zerolog.New(&log).Level(zerolog.WarnLevel)
	startController(t, e, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Without the bucket the first mark fails.
	if err := e.js.DeleteKeyValue(ctx, controller.ServedBucket); err != nil {
		t.Fatal(err)
	}
	startRunner(t, e.srv, echo(t, "late_mark", nil))
	failed := func() bool {
		for _, l := range log.lines(t) {
			if l["algorithm"] == "late_mark" && l["message"] == "cannot mark the algorithm as served; its waiting jobs may expire after --max-unserved-job-age" {
				return true
			}
		}
		return false
	}
	natstest.Eventually(t, 30*time.Second, failed, "no failed mark logged")

	// The bucket is back; the runner only heartbeats from now on.
	if _, err := controller.Provision(ctx, e.js, e.cfg); err != nil {
		t.Fatal(err)
	}
	served, err := e.js.KeyValue(ctx, controller.ServedBucket)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		_, err := served.Get(ctx, "late_mark")
		return err == nil
	}, "the mark that failed was not made again once the bucket was back")
}
