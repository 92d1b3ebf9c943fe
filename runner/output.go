package runner

import (
	"bytes"
	"context"
	"time"

	"github.com/nats-io/nuid"

	"github.com/pnpworker/pnpworker/internal/objref"
)

// outputHeadroom is the part of the server's max payload kept for the
// reply's headers: an output longer than max payload minus this is stored
// in the algorithm's outputs bucket instead of being sent.
const outputHeadroom = 4 << 10

// outputStoreTimeout bounds storing one output; it runs after the
// algorithm, whose deadline may already be spent.
const outputStoreTimeout = 30 * time.Second

// storeOutput puts an output too large for a message into the
// algorithm's own outputs bucket (objref.OutputsBucketFor), which no other
// algorithm's runners may write, under a unique name, and returns its
// reference.
func (e *endpoint) storeOutput(data []byte) (objref.Ref, error) {
	ctx, cancel := context.WithTimeout(e.base, outputStoreTimeout)
	defer cancel()
	// The runner serves while it is still making sure the bucket exists.
	select {
	case <-e.provisioned:
	case <-ctx.Done():
		return objref.Ref{}, ctx.Err()
	}
	return objref.Put(ctx, e.js, objref.OutputsBucketFor(e.alg.spec.Name), nuid.Next(), bytes.NewReader(data))
}
