package controller

import (
	"time"

	"github.com/rs/zerolog"

	"pnpworker/discovery"
	"pnpworker/protocol"
)

// ReplyChecker checks runners' success replies as the controller checks
// them before storing a result, for other callers of run.<algorithm> (the
// HTTP gateway). It keeps its own bounded cache of compiled output
// schemas. It is safe for concurrent use.
type ReplyChecker struct {
	schemas *schemaCache
}

// NewReplyChecker returns a checker whose compiled schemas take at most
// cacheBytes (estimated heap; 0: DefaultSchemaCacheBytes) and which waits
// at most compileTimeout (0: DefaultSchemaCompileTimeout) for a schema to
// compile. log receives why a registered schema cannot be used.
func NewReplyChecker(log zerolog.Logger, cacheBytes int64, compileTimeout time.Duration) *ReplyChecker {
	if cacheBytes <= 0 {
		cacheBytes = DefaultSchemaCacheBytes
	}
	if compileTimeout <= 0 {
		compileTimeout = DefaultSchemaCompileTimeout
	}
	return &ReplyChecker{schemas: newSchemaCache(log, cacheBytes, compileTimeout)}
}

// CheckOutput checks a success reply's body against the output schema
// registered by instance (the reply's Pnp-Instance) among regs, or, when
// no record of regs is that instance's, against every output schema of
// regs, accepting it when any does. It returns nil or a 502 *protocol.Error
// with the violations, as the controller fails such an attempt. A schema
// that cannot be had (too costly, still compiling) accepts any JSON.
func (c *ReplyChecker) CheckOutput(regs []discovery.Registration, instance string, body []byte) *protocol.Error {
	return c.schemas.validateOutput(regs, regs, instance, body)
}

// ProtocolCode returns e, or a copy of it whose code is mapped into the
// protocol's set (400, 404, 413, 422, 500, 502, 503, 504): another 4xx
// becomes 400 and anything else 500, the original code kept in the
// message, as the controller records a reply's error.
func ProtocolCode(e *protocol.Error) *protocol.Error { return protocolCode(e) }
