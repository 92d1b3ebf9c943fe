package protocol

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/schemas"
)

// Error is an error reply: a code from the protocol (the HTTP-like codes of
// the NATS micro convention), a message that is safe to show the caller, and
// the schema violations when the input did not satisfy the input schema.
//
// Algorithms return an *Error (or wrap one) to choose the code; any other
// error becomes a 500 whose message is not sent, only logged.
type Error struct {
	// Code is one of 400, 404, 413, 422, 500, 502, 503, 504.
	Code int `json:"code"`
	// Message is shown to the caller.
	Message string `json:"message"`
	// Algorithm and Instance say who answered; set by the runner.
	Algorithm string `json:"algorithm,omitempty"`
	Instance  string `json:"instance,omitempty"`
	// Violations lists each schema violation (JSON pointer + message).
	Violations []schemas.Violation `json:"violations,omitempty"`
	// NotStarted says the runner refused the request before running it
	// (overloaded, draining, or its deadline passed while it waited), so a
	// retry costs the algorithm nothing. Sent as the Pnp-Not-Started header.
	NotStarted bool `json:"-"`
	// Err is the underlying cause. It is logged, never sent.
	Err error `json:"-"`
}

// Error codes of the protocol.
const (
	CodeInvalidInput  = 400
	CodeNotFound      = 404
	CodeTooLarge      = 413
	CodeUnprocessable = 422
	CodeInternal      = 500
	// CodeBadGateway is a reply that does not keep the algorithm's
	// promise: a success whose output does not satisfy the registered
	// output schema, or is not JSON. The controller sets it; an algorithm
	// that relies on another service may return it too. Retryable:
	// another attempt may reach a healthy instance.
	CodeBadGateway  = 502
	CodeUnavailable = 503
	CodeDeadline    = 504
)

// Sentinels for errors.Is: errors.Is(err, ErrInvalidInput) is true for any
// *Error with code 400, wherever it came from (an algorithm or a reply).
var (
	ErrInvalidInput  = &Error{Code: CodeInvalidInput, Message: "invalid input"}
	ErrNotFound      = &Error{Code: CodeNotFound, Message: "not found"}
	ErrTooLarge      = &Error{Code: CodeTooLarge, Message: "too large"}
	ErrUnprocessable = &Error{Code: CodeUnprocessable, Message: "input rejected by the algorithm"}
	ErrInternal      = &Error{Code: CodeInternal, Message: "internal error"}
	ErrBadGateway    = &Error{Code: CodeBadGateway, Message: "invalid reply from a runner"}
	ErrUnavailable   = &Error{Code: CodeUnavailable, Message: "unavailable"}
	ErrDeadline      = &Error{Code: CodeDeadline, Message: "deadline exceeded"}
)

func (e *Error) Error() string {
	s := strconv.Itoa(e.Code) + " " + e.Message
	if len(e.Violations) > 0 {
		s += ": "
		for i, v := range e.Violations {
			if i > 0 {
				s += "; "
			}
			s += v.String()
		}
	}
	if e.Err != nil && len(e.Violations) == 0 {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code, so that the
// sentinels match any error of their class.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Retryable reports whether a caller may try the same input again and hope
// for another outcome: no runner yet (404), overload, draining, deadlines and
// internal errors are; invalid, too large or rejected input is not.
func (e *Error) Retryable() bool {
	return e.Code >= 500 || e.Code == CodeNotFound
}

// ValidCode reports whether c is one of the protocol's error codes, the only
// codes a reply may carry.
func ValidCode(c int) bool {
	switch c {
	case CodeInvalidInput, CodeNotFound, CodeTooLarge, CodeUnprocessable, CodeInternal, CodeBadGateway, CodeUnavailable, CodeDeadline:
		return true
	}
	return false
}

// Errorf returns an *Error with code and a formatted message.
func Errorf(code int, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Reject returns a 422 error: the input satisfied the schema but the
// algorithm cannot use it (text too short to classify, image unreadable).
// The message is shown to the caller.
func Reject(format string, args ...any) error {
	return &Error{Code: CodeUnprocessable, Message: fmt.Sprintf(format, args...)}
}

// InvalidInput returns a 400 error about one location of the input, for
// checks a JSON Schema cannot express.
func InvalidInput(pointer, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: CodeInvalidInput, Message: "invalid input", Violations: []schemas.Violation{{Pointer: pointer, Message: msg}}}
}

// ReplyError returns the *Error carried by a reply message, or nil when the
// reply is a success. Callers of run.<algorithm> use it to tell outputs from
// errors without knowing the wire format.
func ReplyError(msg *nats.Msg) *Error {
	code := msg.Header.Get(HeaderErrorCode)
	if code == "" {
		return nil
	}
	e := &Error{}
	if err := json.Unmarshal(msg.Data, e); err != nil || e.Code == 0 {
		// A micro service that is not a pnp runner: headers only.
		e = &Error{Message: msg.Header.Get(HeaderError)}
		e.Code, _ = strconv.Atoi(code)
		if e.Code == 0 {
			e.Code = CodeInternal
		}
	}
	if e.Message == "" {
		e.Message = msg.Header.Get(HeaderError)
	}
	e.Instance = msg.Header.Get(HeaderInstance)
	e.NotStarted = msg.Header.Get(HeaderNotStarted) == "true"
	return e
}
