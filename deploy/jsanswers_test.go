package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// countingRunner runs, under role, an algorithm called name that accepts
// any object and counts its runs.
func countingRunner(t *testing.T, url, role, name string, runs *atomic.Int64) {
	t.Helper()
	a, err := runner.NewRawAlgorithm(runner.Spec{Name: name, Version: "1.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`)},
		func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			runs.Add(1)
			return json.RawMessage(`{"ran":true}`), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	runUnder(t, url, role, a)
}

// taken is how many messages the runners of alg have taken in on its
// subjects, by any outcome (run, refused, dropped, answered with an
// error), read from $SRV.STATS as the admin.
func taken(t *testing.T, admin *client, alg string) int64 {
	t.Helper()
	msg, err := admin.Request("$SRV.STATS."+alg, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("stats of %s: %v", alg, err)
	}
	var st struct {
		Endpoints []struct {
			Data map[string]json.RawMessage `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) == 0 {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	d := st.Endpoints[0].Data
	num := func(k string) int64 {
		var n int64
		_ = json.Unmarshal(d[k], &n)
		return n
	}
	var errs map[string]int64
	_ = json.Unmarshal(d["errors_by_code"], &errs)
	refused := num("refused_jetstream")
	n := num("served") + num("dropped_no_reply_subject") + refused
	for _, v := range errs {
		n += v
	}
	// A refusal answered 400 is an error reply too.
	return n - min(refused, errs["400"])
}

// TestJetStreamAnswersRunNothingUnderNatsConf makes, under nats.conf,
// JetStream deliver into run.language_detection in every way the roles
// allow. A runner team names reply subjects of its own account only
// (TestRunnerTeamsAreIsolated), so what remains is APP's roles: as the
// producer, a batch direct get of bucket inputs and a direct get of one
// chunk, answered into run.language_detection; as the gateway, a push
// consumer of discovery (on a key a runner wrote) delivering there. A
// runner of language_detection must run none of them, and must not answer
// a request whose reply subject is a results key (it would write over a
// job's result); a plain request still runs.
func TestJetStreamAnswersRunNothingUnderNatsConf(t *testing.T) {
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var runs atomic.Int64
	countingRunner(t, url, "text_runner", "language_detection", &runs)

	// What the attacks deliver: objects in bucket inputs, stored by a
	// producer, and a discovery key a runner wrote.
	producer := connect(t, url, "producer")
	obj, err := producer.js(t).ObjectStore(ctx, controller.InputsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := obj.PutBytes(ctx, fmt.Sprintf("o%d", i), []byte(`{"text":"input chosen by the attacker"}`)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := admin.js(t).Stream(ctx, "OBJ_"+controller.InputsBucket)
	if err != nil {
		t.Fatal(err)
	}
	stored := int64(st.CachedInfo().State.Msgs)
	writer := connect(t, url, "meme_runner")
	kv, err := writer.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "meme_classifier.attack", []byte(`{"text":"input chosen by the attacker"}`)); err != nil {
		t.Fatal(err)
	}
	attacker := producer

	for _, a := range []struct {
		name     string
		attack   func(t *testing.T)
		messages int64 // arriving on run.language_detection
	}{
		{"producer: batch direct get of inputs", func(t *testing.T) {
			if err := attacker.PublishRequest("$JS.API.DIRECT.GET.OBJ_"+controller.InputsBucket, "run.language_detection",
				[]byte(`{"seq":1,"batch":1000}`)); err != nil {
				t.Fatal(err)
			}
		}, stored + 1}, // every message of the bucket and the end of the batch
		{"producer: direct get of one chunk of inputs", func(t *testing.T) {
			if err := attacker.PublishRequest("$JS.API.DIRECT.GET.OBJ_"+controller.InputsBucket, "run.language_detection",
				[]byte(`{"seq":1}`)); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"gateway: push consumer of discovery", func(t *testing.T) {
			gw := connect(t, url, "gateway")
			// No deliver group: in APP, run.language_detection is the
			// import of TEXT's service, a plain subscription.
			cfg := consumerRequest(t, "KV_"+discovery.Bucket, map[string]any{"name": "inject", "deliver_subject": "run.language_detection",
				"filter_subject": "$KV.discovery.meme_classifier.attack",
				"deliver_policy": "all", "ack_policy": "explicit", "max_deliver": 1})
			gw.expectAnswered(t, "$JS.API.CONSUMER.CREATE.KV_discovery.inject.$KV.discovery.meme_classifier.attack", cfg)
		}, 1},
	} {
		t.Run(a.name, func(t *testing.T) {
			before, ran := taken(t, admin, "language_detection"), runs.Load()
			start := time.Now()
			a.attack(t)
			_ = attacker.Flush()
			natstest.Eventually(t, 60*time.Second, func() bool {
				return taken(t, admin, "language_detection") >= before+a.messages
			}, "run.language_detection did not receive the %d messages", a.messages)
			t.Logf("%d messages delivered on run.language_detection within %s, %d runs", a.messages,
				time.Since(start).Round(time.Millisecond), runs.Load()-ran)
			if n := runs.Load() - ran; n != 0 {
				t.Errorf("language_detection ran %d times (of %d messages delivered in %s) on what JetStream delivered",
					n, a.messages, time.Since(start).Round(time.Millisecond))
			}
		})
	}
	attacker.expectClean(t)
	writer.expectClean(t)

	// A runner may publish on its own algorithms' pinned subjects: with
	// the reply subject a key of results, the answer would be a write
	// over that job's result, allowed by allow_responses.
	t.Run("text_runner: request with a results key as reply subject", func(t *testing.T) {
		self := connect(t, url, "text_runner")
		before, ran := taken(t, admin, "language_detection"), runs.Load()
		if err := self.PublishRequest(discovery.PinnedSubject("language_detection", "1.0.0"), "$KV.results.victim",
			[]byte(`{"text":"x"}`)); err != nil {
			t.Fatal(err)
		}
		_ = self.Flush()
		natstest.Eventually(t, 60*time.Second, func() bool {
			return taken(t, admin, "language_detection") >= before+1
		}, "run.language_detection did not receive the request")
		results, err := admin.js(t).KeyValue(ctx, controller.ResultsBucket)
		if err != nil {
			t.Fatal(err)
		}
		// The answer, if any, was sent before the stats counted it.
		if e, err := results.Get(ctx, "victim"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("the runner's answer was written as job victim's result: %v %s", err, valueOf(e))
		}
		if n := runs.Load() - ran; n != 0 {
			t.Errorf("language_detection ran %d times", n)
		}
	})

	// Requests of the system are served as before.
	m, err := admin.Request("run.language_detection", []byte(`{"text":"hello"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := protocol.ReplyError(m); e != nil {
		t.Fatalf("a plain request: %v", e)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("language_detection ran %d times, want the plain request's 1", n)
	}
}

func valueOf(e jetstream.KeyValueEntry) string {
	if e == nil {
		return ""
	}
	return string(e.Value())
}

// TestForgedNotificationsAreIgnored sends, under nats.conf, what a role of
// APP that reads a bucket by direct get can have delivered on notify.<x>
// (a forged final record it stored, answered there by a direct get; a
// JetStream API answer) next to a genuine notification of a job: here the
// producer, with a record in bucket inputs. (A runner team's answers stay
// in its own account: TestRunnerTeamsAreIsolated.)
// controller.DecodeNotification, which every notify reader of the project
// uses, takes only the genuine one. A job carrying JetStream's headers
// itself still runs: the controller does not pass a job's headers on to
// the runner.
func TestForgedNotificationsAreIgnored(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var got []*nats.Msg
	if _, err := d.producer.Subscribe("notify.orders", func(m *nats.Msg) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.producer.Flush(); err != nil {
		t.Fatal(err)
	}

	attacker := connect(t, d.url, "producer")
	now := time.Now().UTC()
	forged, _ := json.Marshal(controller.Result{JobID: "order-17", Algorithm: "language_detection", Status: controller.StatusSucceeded,
		Output: json.RawMessage(`{"language":"forged"}`), Attempts: 1, SubmittedAt: now, StartedAt: now, FinishedAt: &now})
	chunk := "$O." + controller.InputsBucket + ".C.forged"
	if _, err := attacker.js(t).Publish(ctx, chunk, forged); err != nil {
		t.Fatal(err)
	}
	if err := attacker.PublishRequest("$JS.API.DIRECT.GET.OBJ_"+controller.InputsBucket, "notify.orders", []byte(`{"last_by_subj":"`+chunk+`"}`)); err != nil {
		t.Fatal(err)
	}
	if err := attacker.PublishRequest("$JS.API.STREAM.INFO.OBJ_"+controller.InputsBucket, "notify.orders", nil); err != nil {
		t.Fatal(err)
	}
	_ = attacker.Flush()

	// A genuine job, whose own headers name JetStream's: they are
	// stored with the job, and never reach the runner.
	sub, err := d.store.Submit(ctx, "language_detection", []byte(`{"text":"Der schnelle braune Fuchs springt über den faulen Hund"}`),
		controller.SubmitOptions{ID: "order-18", Notify: "notify.orders",
			Header: nats.Header{"Nats-Stream": {"JOBS"}, "Nats-Sequence": {"1"}, "Nats-Subject": {"jobs.language_detection"}, "Nats-Time-Stamp": {now.Format(time.RFC3339Nano)}}})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3
	}, "notify.orders did not receive the two forged messages and the job's notification")

	mu.Lock()
	defer mu.Unlock()
	var accepted []string
	for _, m := range got {
		r, err := controller.DecodeNotification(m)
		switch {
		case err == nil:
			accepted = append(accepted, r.JobID)
		case !errors.Is(err, controller.ErrNotNotification):
			t.Errorf("refused with %v, not ErrNotNotification", err)
		}
	}
	if len(accepted) != 1 || accepted[0] != sub.ID {
		t.Fatalf("notify reader accepted %v of %d messages on notify.orders; want only job %s's", accepted, len(got), sub.ID)
	}
	res, err := d.store.Result(ctx, sub.ID)
	if err != nil || res.Status != controller.StatusSucceeded {
		t.Fatalf("the job with JetStream's headers: %+v %v", res, err)
	}
	attacker.expectClean(t)
}
