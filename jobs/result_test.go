package jobs

import (
	"testing"

	"github.com/nats-io/nats.go"
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
