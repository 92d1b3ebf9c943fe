package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Waiting returns how many jobs for algorithm wait in stream JOBS without
// having been delivered to a controller: the pending count of the
// algorithm's consumer, ConsumerName(algorithm). It is 0 while that
// consumer or the stream does not exist (no controller hands out the
// algorithm's jobs yet). It needs only the consumer's info
// ($JS.API.CONSUMER.INFO.JOBS.controller_<algorithm>), not a Store: a
// worker that scales its processes on the backlog reads it this way.
func Waiting(ctx context.Context, js jetstream.JetStream, algorithm string) (int, error) {
	c, err := js.Consumer(ctx, JobsStream, ConsumerName(algorithm))
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jobs: waiting for %s: %w", algorithm, err)
	}
	return int(min(c.CachedInfo().NumPending, uint64(1<<31-1))), nil
}
