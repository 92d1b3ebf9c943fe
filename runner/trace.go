package runner

import (
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/protocol"
)

// requestLogger is the endpoint's logger with the request's job id and
// trace id, and false when the request has neither (or logging is off).
func (e *endpoint) requestLogger(h nats.Header) (zerolog.Logger, bool) {
	if len(h) == 0 || e.log.GetLevel() == zerolog.Disabled {
		return e.log, false
	}
	id, trace := h.Get(protocol.HeaderJobID), protocol.TraceID(h)
	if id == "" && trace == "" {
		return e.log, false
	}
	c := e.log.With()
	if id != "" {
		c = c.Str("job_id", id)
	}
	if trace != "" {
		c = c.Str("trace_id", trace)
	}
	return c.Logger(), true
}
