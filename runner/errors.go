package runner

import (
	"errors"

	"github.com/pnpworker/pnpworker/protocol"
)

// Error is an error reply of the protocol (protocol.Error): a code, a
// message that is safe to show the caller, and the schema violations.
//
// Algorithms return an *Error (or wrap one) to choose the code; any other
// error becomes a 500 whose message is not sent, only logged.
type Error = protocol.Error

// Error codes an algorithm may return, those of the protocol
// (protocol.CodeInvalidInput, ...).
const (
	CodeInvalidInput  = protocol.CodeInvalidInput
	CodeNotFound      = protocol.CodeNotFound
	CodeTooLarge      = protocol.CodeTooLarge
	CodeUnprocessable = protocol.CodeUnprocessable
	CodeInternal      = protocol.CodeInternal
	CodeBadGateway    = protocol.CodeBadGateway
	CodeUnavailable   = protocol.CodeUnavailable
	CodeDeadline      = protocol.CodeDeadline
)

// Sentinels for errors.Is, those of the protocol: errors.Is(err,
// ErrInvalidInput) is true for any *Error with code 400, wherever it came
// from (an algorithm or a reply).
var (
	ErrInvalidInput  = protocol.ErrInvalidInput
	ErrNotFound      = protocol.ErrNotFound
	ErrTooLarge      = protocol.ErrTooLarge
	ErrUnprocessable = protocol.ErrUnprocessable
	ErrInternal      = protocol.ErrInternal
	ErrBadGateway    = protocol.ErrBadGateway
	ErrUnavailable   = protocol.ErrUnavailable
	ErrDeadline      = protocol.ErrDeadline
)

// Errorf returns an *Error with code and a formatted message
// (protocol.Errorf).
func Errorf(code int, format string, args ...any) error {
	return protocol.Errorf(code, format, args...)
}

// Reject returns a 422 error: the input satisfied the schema but the
// algorithm cannot use it (text too short to classify, image unreadable).
// The message is shown to the caller (protocol.Reject).
func Reject(format string, args ...any) error {
	return protocol.Reject(format, args...)
}

// InvalidInput returns a 400 error about one location of the input, for
// checks a JSON Schema cannot express (protocol.InvalidInput).
func InvalidInput(pointer, format string, args ...any) error {
	return protocol.InvalidInput(pointer, format, args...)
}

// asError classifies err into the *Error sent to the caller.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		if c.Message == "" {
			c.Message = ErrInternal.Message
		}
		if c.Err == nil && e != err {
			c.Err = err
		}
		return &c
	}
	return &Error{Code: CodeInternal, Message: ErrInternal.Message, Err: err}
}
