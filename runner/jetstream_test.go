package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// counted is a test algorithm that accepts any object and counts its runs.
func counted(t *testing.T, runs *atomic.Int64) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewRawAlgorithm(runner.Spec{Name: "counted", Version: "1.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`)},
		func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			runs.Add(1)
			return json.RawMessage(`{"ran":true}`), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// arrivals is how many messages the runner of "counted" has taken in, by
// any outcome, and how many of them it refused as JetStream deliveries.
func arrivals(t *testing.T, nc *nats.Conn) (all, refused int64) {
	t.Helper()
	msg, err := nc.Request("$SRV.STATS.counted", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	var st struct {
		Endpoints []struct {
			Data struct {
				Served   int64            `json:"served"`
				NoReply  int64            `json:"dropped_no_reply_subject"`
				Refused  int64            `json:"refused_jetstream"`
				Errors   map[string]int64 `json:"errors_by_code"`
				Rejected int64            `json:"rejected_overloaded"`
			} `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) == 0 {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	d := st.Endpoints[0].Data
	all = d.Served + d.NoReply + d.Refused
	for _, n := range d.Errors {
		all += n
	}
	if d.Refused > 0 {
		// A refusal answered 400 is counted as an error reply too.
		all -= min(d.Refused, d.Errors["400"])
	}
	return all, d.Refused
}

// TestJetStreamDeliveriesAreNotRequests points JetStream at run.counted in
// every way the server allows — direct gets answered there (one, a batch,
// a key by subject, one that finds nothing), a push consumer delivering
// into the runners' queue group — and hand-made requests that carry
// JetStream's marks or ask for the answer to be written into a bucket. None may run the algorithm; a plain request still
// does.
func TestJetStreamDeliveriesAreNotRequests(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect()
	var runs atomic.Int64
	start(t, nc, []*runner.Algorithm{counted(t, &runs)})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Valid inputs of "counted", stored where a runner may read them. (A
	// client's request with a reply subject under $JS. is refused by the
	// server itself; one under $KV. or $O. is not.)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SRC", Subjects: []string{"src.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"src.a", "src.b", "src.c", "src.d", "src.e"} {
		if _, err := js.Publish(ctx, s, []byte(`{"text":"attacker's input"}`)); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "own"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "key", []byte(`{"text":"attacker's input"}`)); err != nil {
		t.Fatal(err)
	}

	inbox := nc.NewRespInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		send     func(t *testing.T)
		messages int64 // arriving on run.counted
		want400  bool  // answered 400 (a client's reply subject)
	}{
		{"direct get answered into run.<algorithm>", func(t *testing.T) {
			publishRequest(t, nc, "$JS.API.DIRECT.GET.SRC", "run.counted", `{"seq":1}`)
		}, 1, false},
		{"batch direct get answered into run.<algorithm>", func(t *testing.T) {
			publishRequest(t, nc, "$JS.API.DIRECT.GET.SRC", "run.counted", `{"seq":1,"batch":1000}`)
		}, 6, false}, // five messages and the end of the batch
		{"direct get of a key answered into run.<algorithm>", func(t *testing.T) {
			publishRequest(t, nc, "$JS.API.DIRECT.GET.KV_own.$KV.own.key", "run.counted", "")
		}, 1, false},
		{"direct get that finds nothing", func(t *testing.T) {
			publishRequest(t, nc, "$JS.API.DIRECT.GET.SRC", "run.counted", `{"seq":999}`)
		}, 1, false},
		{"push consumer delivering into the queue group", func(t *testing.T) {
			cfg := `{"stream_name":"SRC","config":{"name":"push","deliver_subject":"run.counted","deliver_group":"runners",
				"filter_subject":"src.a","ack_policy":"explicit","max_deliver":1,"deliver_policy":"all"}}`
			if _, err := nc.Request("$JS.API.CONSUMER.CREATE.SRC.push.src.a", []byte(cfg), 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}, 1, false},
		{"client request carrying Nats-Stream", func(t *testing.T) {
			m := &nats.Msg{Subject: "run.counted", Reply: inbox, Data: []byte(`{"text":"x"}`), Header: nats.Header{"Nats-Stream": {"SRC"}, "Nats-Sequence": {"1"}}}
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}, 1, true},
		{"client request with a status", func(t *testing.T) {
			m := &nats.Msg{Subject: "run.counted", Reply: inbox, Data: []byte(`{"text":"x"}`), Header: nats.Header{"Status": {"204"}}}
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}, 1, true},
		{"reply subject is a key of a bucket", func(t *testing.T) {
			publishRequest(t, nc, "run.counted", "$KV.own.written_by_the_runner", `{"text":"x"}`)
		}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := arrivals(t, nc)
			ranBefore := runs.Load()
			tc.send(t)
			natstest.Eventually(t, 30*time.Second, func() bool {
				n, _ := arrivals(t, nc)
				return n >= before+tc.messages
			}, "run.counted did not receive %d messages", tc.messages)
			if tc.want400 {
				m, err := replies.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				if e := protocol.ReplyError(m); e == nil || e.Code != runner.CodeInvalidInput || !e.NotStarted {
					t.Fatalf("want a 400 not started, got %+v %s", e, m.Data)
				}
			}
			if n := runs.Load() - ranBefore; n != 0 {
				t.Fatalf("the algorithm ran %d times on what JetStream delivered", n)
			}
			if _, refused := arrivals(t, nc); refused == 0 {
				t.Fatal("nothing counted as refused")
			}
		})
	}
	if _, err := kv.Get(ctx, "written_by_the_runner"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the runner's answer was written into the bucket: %v", err)
	}
	if st, err := js.Stream(ctx, "SRC"); err != nil || st.CachedInfo().State.Msgs != 5 {
		t.Errorf("stream SRC after the runner's answers: %v (want its 5 messages)", err)
	}
	if m, err := replies.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("an unexpected reply: %s", m.Data)
	}

	// Our own requests are untouched.
	m := requestCounted(t, nc, `{"text":"x"}`)
	if e := protocol.ReplyError(m); e != nil || runs.Load() != 1 {
		t.Fatalf("a plain request: %v, %d runs", e, runs.Load())
	}
}

func publishRequest(t *testing.T, nc *nats.Conn, subject, reply, body string) {
	t.Helper()
	if err := nc.PublishRequest(subject, reply, []byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func requestCounted(t *testing.T, nc *nats.Conn, body string) *nats.Msg {
	t.Helper()
	m, err := nc.Request("run.counted", []byte(body), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
