package protocol

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestReplyError reads error replies as a pnp runner sends them and as a
// plain micro service does, and finds no error in a success.
func TestReplyError(t *testing.T) {
	for _, tc := range []struct {
		name       string
		msg        *nats.Msg
		want       int // 0: no error
		message    string
		notStarted bool
	}{
		{"success", &nats.Msg{Data: []byte(`{"a":1}`), Header: nats.Header{HeaderInstance: {"i"}}}, 0, "", false},
		{"runner error with body", &nats.Msg{Data: []byte(`{"code":422,"message":"too short"}`), Header: nats.Header{
			HeaderErrorCode: {"422"}, HeaderError: {"too short"}, HeaderInstance: {"i"}}}, CodeUnprocessable, "too short", false},
		{"not started", &nats.Msg{Data: []byte(`{"code":503,"message":"overloaded"}`), Header: nats.Header{
			HeaderErrorCode: {"503"}, HeaderError: {"overloaded"}, HeaderNotStarted: {"true"}}}, CodeUnavailable, "overloaded", true},
		{"micro service, headers only", &nats.Msg{Data: []byte("boom"), Header: nats.Header{
			HeaderErrorCode: {"400"}, HeaderError: {"bad"}}}, CodeInvalidInput, "bad", false},
		{"micro service, code not a number", &nats.Msg{Header: nats.Header{
			HeaderErrorCode: {"x"}, HeaderError: {"bad"}}}, CodeInternal, "bad", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ReplyError(tc.msg)
			if tc.want == 0 {
				if e != nil {
					t.Fatalf("got %v, want no error", e)
				}
				return
			}
			if e == nil || e.Code != tc.want || e.Message != tc.message || e.NotStarted != tc.notStarted {
				t.Fatalf("got %+v, want code %d message %q not started %v", e, tc.want, tc.message, tc.notStarted)
			}
		})
	}
}

// TestErrorClasses holds what the codes promise: the sentinels match any
// error of their code, wrapped or not, and only 404 and 5xx are retryable.
func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		code      int
		sentinel  error
		retryable bool
	}{
		{CodeInvalidInput, ErrInvalidInput, false},
		{CodeNotFound, ErrNotFound, true},
		{CodeTooLarge, ErrTooLarge, false},
		{CodeUnprocessable, ErrUnprocessable, false},
		{CodeInternal, ErrInternal, true},
		{CodeBadGateway, ErrBadGateway, true},
		{CodeUnavailable, ErrUnavailable, true},
		{CodeDeadline, ErrDeadline, true},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			err := fmt.Errorf("call: %w", Errorf(tc.code, "x"))
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("%v is not %v", err, tc.sentinel)
			}
			var e *Error
			if !errors.As(err, &e) || e.Retryable() != tc.retryable || !ValidCode(tc.code) {
				t.Fatalf("code %d: retryable %v, valid %v; want retryable %v", tc.code, e.Retryable(), ValidCode(tc.code), tc.retryable)
			}
		})
	}
	if ValidCode(418) || errors.Is(Errorf(CodeInternal, "x"), ErrDeadline) {
		t.Fatal("418 is no code of the protocol, and a 500 is not a 504")
	}
}
