package runner_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// answers sends n requests on subject asking for version want and counts
// the answering versions (errors by code).
func answers(t *testing.T, nc *nats.Conn, subject, want string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		reply, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: []byte(`{"text":"a b"}`),
			Header: nats.Header{protocol.HeaderVersionWanted: {want}}}, 10*time.Second)
		switch {
		case err != nil:
			got["error: "+err.Error()]++
		case protocol.ReplyError(reply) != nil:
			got[fmt.Sprintf("error %d", protocol.ReplyError(reply).Code)]++
		default:
			got[reply.Header.Get(protocol.HeaderVersion)]++
		}
	}
	return got
}

// A pinned subject names its version: a request there is served by that
// version whatever Pnp-Version asks for, never forwarded and never refused
// for the header. Only the shared subject run.<algorithm> honours the
// header; were the pinned subjects to honour it too, a request could be
// sent from version to version, and a call pinned by the controller (a
// canary's share, a shadow) or by pnp replay would reach a version it did
// not name.
func TestPinnedSubjectIgnoresPnpVersion(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, s.Connect(), []*runner.Algorithm{wordCount(t, nil)})
	start(t, s.Connect(), []*runner.Algorithm{wordCount(t, func(sp *runner.Spec) { sp.Version = "2.0.0" })})
	plain := discovery.RequestSubject("word_count")
	// Forwarding works, so each version knows the other is live: a pinned
	// subject that honoured the header would forward now.
	natstest.Eventually(t, 15*time.Second, func() bool {
		a, b := answers(t, nc, plain, "2.0.0", 10), answers(t, nc, plain, "1.0.0", 10)
		return a["2.0.0"] == 10 && b["1.0.0"] == 10
	}, "plain requests asking for a version never all reached it")

	for _, tc := range []struct {
		name, pinned, asks, want string
	}{
		{"1.0.0 pinned, 2.0.0 asked for", "1.0.0", "2.0.0", "1.0.0"},
		{"2.0.0 pinned, 1.0.0 asked for", "2.0.0", "1.0.0", "2.0.0"},
		{"1.0.0 pinned, a version nobody serves asked for", "1.0.0", "9.9.9", "1.0.0"},
		{"2.0.0 pinned, its own version asked for", "2.0.0", "2.0.0", "2.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject := discovery.PinnedSubject("word_count", tc.pinned)
			if got := answers(t, nc, subject, tc.asks, 20); len(got) != 1 || got[tc.want] != 20 {
				t.Fatalf("20 requests on %s with %s: %s: want all answered by %s, got %v",
					subject, protocol.HeaderVersionWanted, tc.asks, tc.want, got)
			}
		})
	}
}
