package protocol

import (
	"time"

	"github.com/nats-io/nats.go/micro"
)

// Protocol headers. The error headers are those of the NATS micro
// convention, so every micro-aware client understands them.
const (
	HeaderErrorCode = micro.ErrorCodeHeader // "Nats-Service-Error-Code"
	HeaderError     = micro.ErrorHeader     // "Nats-Service-Error"
	// HeaderJobID carries the caller's job id; it is logged and echoed.
	HeaderJobID = "Pnp-Job-Id"
	// HeaderDeadline is an absolute RFC 3339 deadline for the request.
	HeaderDeadline = "Pnp-Deadline"
	// HeaderTimeout is a relative time budget, a Go duration such as "500ms".
	HeaderTimeout = "Pnp-Timeout"
	// HeaderInstance names the instance that answered.
	HeaderInstance = "Pnp-Instance"
	// HeaderNotStarted is "true" on an error reply for a request the
	// algorithm never ran.
	HeaderNotStarted = "Pnp-Not-Started"
	// HeaderAlgorithm and HeaderVersion name what answered.
	HeaderAlgorithm = "Pnp-Algorithm"
	HeaderVersion   = "Pnp-Version"
	// HeaderVersionWanted, set on a request to run.<algorithm>, asks for
	// one version: an instance of another version that receives it
	// forwards it, unchanged and with the caller's reply subject, to the
	// pinned subject of the version asked for, or answers 404 when that
	// version has no live instance. It is the same header the reply
	// carries (HeaderVersion).
	HeaderVersionWanted = HeaderVersion
	// HeaderOutputRef on a success reply says that the output did not fit
	// a message: it is stored in the object store's outputs bucket under
	// this obj:// reference, and the body is {"output_ref": <reference>}.
	HeaderOutputRef = "Pnp-Output-Ref"
)

// DefaultTimeout is the time budget of a request when the registration
// records of its algorithm name none (timeout_ms absent or zero): a runner
// stops working on it, and a caller stops waiting for it, after this long.
// HeaderTimeout and HeaderDeadline shorten it, never extend it.
const DefaultTimeout = 30 * time.Second
