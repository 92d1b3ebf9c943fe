package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Waiting returns how many jobs for algorithm wait in stream JOBS without
// having been delivered to a controller, of every priority: the sum of the
// pending counts of the algorithm's consumers, PriorityConsumerName of
// normal, then high and low. A consumer or stream that does not exist
// counts 0 (no controller hands out those jobs yet). It needs only the
// consumers' info ($JS.API.CONSUMER.INFO.JOBS.controller_<algorithm>,
// then its -high and -low), not a Store: a worker that scales its
// processes on the backlog reads it this way. The first read that fails
// ends it with that read's error.
func Waiting(ctx context.Context, js jetstream.JetStream, algorithm string) (int, error) {
	var n uint64
	for _, p := range [...]Priority{PriorityNormal, PriorityHigh, PriorityLow} {
		c, err := js.Consumer(ctx, JobsStream, PriorityConsumerName(algorithm, p))
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("jobs: waiting for %s: %w", algorithm, err)
		}
		n += c.CachedInfo().NumPending
	}
	return int(min(n, uint64(1<<31-1))), nil
}
