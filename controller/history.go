package controller

import (
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
)

// maxHistoryPending bounds the HISTORY records awaiting their ack.
const maxHistoryPending = 1024

// recordHistory publishes a sample of succeeded jobs to HISTORY,
// asynchronously: the job never waits for it, and a failure is counted.
func (c *Controller) recordHistory(alg, id string, body []byte, reply *nats.Msg, took time.Duration) {
	s := c.shadows.Load()
	rate := c.cfg.History.Rate
	if s == nil || rate <= 0 || (rate < 1 && rand.Float64() >= rate) || protocol.ReplyError(reply) != nil {
		return
	}
	rec := rollout.HistoryRecord{Algorithm: alg, JobID: id, Version: reply.Header.Get(protocol.HeaderVersion),
		Input: body, Output: reply.Data, MS: ms(took), At: time.Now().UTC()}
	if ref := reply.Header.Get(protocol.HeaderOutputRef); ref != "" {
		// Stored by reference: replay reads the object back to compare.
		rec.Output, rec.OutputRef = nil, ref
	}
	b, err := json.Marshal(rec)
	if err != nil || int64(len(b)) > c.nc.MaxPayload()-1024 {
		// Not JSON (the output check follows) or too large for a message.
		s.recordTooLarge.Add(1)
		return
	}
	// Never wait for JetStream: with too many records unacknowledged the
	// sample is skipped (PublishAsync would stall the job).
	if c.js.PublishAsyncPending() >= maxHistoryPending {
		s.recordFailed.Add(1)
		return
	}
	if _, err := c.js.PublishAsync(rollout.HistorySubjectPrefix+alg, b); err != nil {
		if s.recordFailed.Add(1) == 1 {
			c.log.Warn().Err(err).Msg("cannot record a job in HISTORY (counted in ShadowStats)")
		}
		return
	}
	s.recorded.Add(1)
}
