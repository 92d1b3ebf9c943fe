package jobs

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// HeaderSize counts a header block as the client sends it, which is what
// the server's max payload limits next to the body.
func TestHeaderSize(t *testing.T) {
	h := nats.Header{"A": {"1"}, "Bc": {"22", "333"}}
	// NATS/1.0\r\n + A: 1\r\n + Bc: 22\r\n + Bc: 333\r\n + \r\n
	if got, want := HeaderSize(h), 10+6+8+9+2; got != want {
		t.Errorf("HeaderSize = %d, want %d", got, want)
	}
	if HeaderSize(nil) != 0 {
		t.Error("HeaderSize(nil) != 0")
	}
}

func TestResultErr(t *testing.T) {
	timeout := &protocol.Error{Code: protocol.CodeDeadline, Message: "took too long"}
	for _, tc := range []struct {
		name    string
		r       Result
		want    string // "" when Err is nil
		unwraps *protocol.Error
	}{
		{"succeeded", Result{JobID: "j1", Status: StatusSucceeded}, "", nil},
		{"retrying with an error is no failure yet", Result{JobID: "j1", Status: StatusRetrying, Error: timeout}, "", nil},
		{"failed", Result{JobID: "j1", Status: StatusFailed, Error: timeout}, "job j1 failed: 504 took too long", timeout},
		{"failed without an error", Result{JobID: "j1", Status: StatusFailed}, "job j1 failed", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Err()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Err() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Err() = %v, want %q", err, tc.want)
			}
			var pe *protocol.Error
			if got := errors.As(err, &pe); got != (tc.unwraps != nil) || (got && pe != tc.unwraps) {
				t.Errorf("errors.As found %v (%v), want %v", pe, got, tc.unwraps)
			}
			if tc.unwraps != nil && !errors.Is(err, protocol.ErrDeadline) {
				t.Errorf("errors.Is(%v, protocol.ErrDeadline) = false", err)
			}
		})
	}
}
