package runner_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// A request on run.<algorithm> asking for another version (Pnp-Version) is
// relayed: the instance that took it asks the version's pinned subject and
// passes the answer on as it came, success or error, headers included; a
// version listed in discovery that nobody serves any more is answered 404
// not started. Half the plain requests reach the instance of the other
// version (both are in the queue group), so each round of 20 is relayed
// about ten times.
func TestPnpVersionRelaysTheAnswer(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, s.Connect(), []*runner.Algorithm{wordCount(t, nil)})
	v2, _ := start(t, s.Connect(), []*runner.Algorithm{wordCount(t, func(sp *runner.Spec) { sp.Version = "2.0.0" })})
	plain := discovery.RequestSubject("word_count")
	inst := strings.TrimPrefix(v2.Instances()[0], "word_count.")
	natstest.Eventually(t, 15*time.Second, func() bool {
		return answers(t, nc, plain, "2.0.0", 10)["2.0.0"] == 10
	}, "plain requests asking for 2.0.0 never all reached it")

	ask := func(t *testing.T, body, want string) *nats.Msg {
		t.Helper()
		reply, err := nc.RequestMsg(&nats.Msg{Subject: plain, Data: []byte(body),
			Header: nats.Header{protocol.HeaderVersionWanted: {want}, protocol.HeaderJobID: {"job-1"}}}, 10*time.Second)
		if err != nil {
			t.Fatalf("request asking for %s: %v", want, err)
		}
		return reply
	}
	t.Run("success passes on with the answering instance's headers", func(t *testing.T) {
		for range 20 {
			m := ask(t, `{"text":"a b c"}`, "2.0.0")
			if er := protocol.ReplyError(m); er != nil {
				t.Fatalf("error %d %s", er.Code, er.Message)
			}
			if m.Header.Get(protocol.HeaderVersion) != "2.0.0" || m.Header.Get(protocol.HeaderInstance) != inst ||
				m.Header.Get(protocol.HeaderJobID) != "job-1" {
				t.Fatalf("headers %v: want version 2.0.0, instance %s, job job-1", m.Header, inst)
			}
			var out struct {
				Words int `json:"words"`
			}
			if err := json.Unmarshal(m.Data, &out); err != nil || out.Words != 3 {
				t.Fatalf("body %s: want 3 words", m.Data)
			}
		}
	})
	t.Run("an error answer passes on unchanged", func(t *testing.T) {
		for range 20 {
			m := ask(t, `{"text":"a","mode":"reject"}`, "2.0.0")
			er := protocol.ReplyError(m)
			if er == nil || er.Code != runner.CodeUnprocessable || m.Header.Get(protocol.HeaderVersion) != "2.0.0" ||
				m.Header.Get(protocol.HeaderInstance) != inst {
				t.Fatalf("want 2.0.0's %d, got %v %s", runner.CodeUnprocessable, m.Header, m.Data)
			}
		}
	})
	t.Run("a version listed but not served is 404 not started", func(t *testing.T) {
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		reg, err := discovery.Open(ctx, js, discovery.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ghost := discovery.Registration{Algorithm: "word_count", Version: "3.0.0", Instance: "ghost",
			Subject: discovery.PinnedSubject("word_count", "3.0.0"), QueueGroup: runner.DefaultQueueGroup,
			InputSchema: json.RawMessage(textSchema), OutputSchema: json.RawMessage(outSchema),
			TimeoutMS: 1000, MaxConcurrency: 1, StartedAt: time.Now().UTC(), HeartbeatAt: time.Now().UTC()}
		if err := reg.Register(ctx, ghost); err != nil {
			t.Fatal(err)
		}
		// Until both instances list the ghost, one of them answers 404
		// from its own list; after, every answer comes from a relay that
		// met no responder. Either is the same 404.
		for range 20 {
			m := ask(t, `{"text":"a"}`, "3.0.0")
			er := protocol.ReplyError(m)
			if er == nil || er.Code != runner.CodeNotFound || m.Header.Get(protocol.HeaderNotStarted) != "true" {
				t.Fatalf("want 404 not started, got %v %s", m.Header, m.Data)
			}
		}
	})
}
