package replycheck

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
)

// Defaults of NewReplyChecker, and of the controller's own cache.
const (
	// DefaultCacheBytes bounds the estimated heap of the compiled
	// schemas a cache keeps: four records at discovery's
	// MaxSchemaMemory.
	DefaultCacheBytes = 4 * discovery.MaxSchemaMemory
	// DefaultCompileTimeout is how long a check waits for a schema to
	// compile before it goes on without it.
	DefaultCompileTimeout = 2 * time.Second
	// DefaultMaxReferencedOutputBytes bounds an output stored by
	// reference (an obj:// Pnp-Output-Ref) that a checker reads back to
	// check it.
	DefaultMaxReferencedOutputBytes = 16 << 20
)

// ReplyChecker checks runners' success replies as the controller checks
// them before storing a result, for other callers of run.<algorithm> (the
// HTTP gateway). It keeps its own bounded cache of compiled output
// schemas. It is safe for concurrent use.
type ReplyChecker struct {
	schemas *Cache
}

// NewReplyChecker returns a checker whose compiled schemas take at most
// cacheBytes (estimated heap; 0: DefaultCacheBytes) and which waits
// at most compileTimeout (0: DefaultCompileTimeout) for a schema to
// compile. log receives why a registered schema cannot be used.
func NewReplyChecker(log zerolog.Logger, cacheBytes int64, compileTimeout time.Duration) *ReplyChecker {
	if cacheBytes <= 0 {
		cacheBytes = DefaultCacheBytes
	}
	if compileTimeout <= 0 {
		compileTimeout = DefaultCompileTimeout
	}
	return &ReplyChecker{schemas: NewCache(log, cacheBytes, compileTimeout)}
}

// CheckOutput checks a success reply's body against the output schema
// registered by instance (the reply's Pnp-Instance) among regs, or, when
// no record of regs is that instance's, against every output schema of
// regs, accepting it when any does. It returns nil or a 502 *protocol.Error
// with the violations, as the controller fails such an attempt. A schema
// that cannot be had (too costly, still compiling) accepts any JSON.
func (c *ReplyChecker) CheckOutput(regs []discovery.Registration, instance string, body []byte) *protocol.Error {
	return c.schemas.ValidateOutput(regs, regs, instance, body)
}

// ProtocolCode returns e, or a copy of it whose code is mapped into the
// protocol's set (400, 404, 413, 422, 500, 502, 503, 504): another 4xx
// becomes 400 and anything else 500, the original code kept in the
// message, as the controller records a reply's error. It maps a code outside the protocol's set (a micro
// service that is not a pnp runner may send any) to 400 or 500, keeping the
// original in the message, so records always satisfy result.json and the
// retry decision stays "4xx final, 5xx retried".
func ProtocolCode(e *protocol.Error) *protocol.Error {
	switch e.Code {
	case protocol.CodeInvalidInput, protocol.CodeNotFound, protocol.CodeTooLarge, protocol.CodeUnprocessable,
		protocol.CodeInternal, protocol.CodeBadGateway, protocol.CodeUnavailable, protocol.CodeDeadline:
		return e
	}
	c := *e
	c.Message = fmt.Sprintf("%s (code %d)", e.Message, e.Code)
	if e.Code >= 400 && e.Code < 500 {
		c.Code = protocol.CodeInvalidInput
	} else {
		c.Code = protocol.CodeInternal
	}
	return &c
}
