package deploy

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"pnpworker/controller"
	"pnpworker/discovery"
	"pnpworker/internal/natstest"
	"pnpworker/runner"
)

// forgedResult is what an attacker would like stored as a job's result.
const forgedResult = `{"job_id":"victim","algorithm":"meme_classifier","status":"succeeded","output":{"label":"forged"},"attempts":1}`

// resultsAfter runs attack, then a fence, and returns how many messages
// the results bucket stored besides the fence (by its stream's last
// sequence: a key holds one message, a later one replaces it). The fence is a put of key
// "fence" by the admin, acknowledged: the bucket's stream stores in the
// order messages reach it, and every attack below has, before it returns,
// made sure that what it sent (or what JetStream answered for it) reached
// the server ahead of the fence.
func resultsAfter(t *testing.T, admin *client, attack func(t *testing.T)) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := admin.js(t).Stream(ctx, "KV_"+controller.ResultsBucket)
	if err != nil {
		t.Fatal(err)
	}
	before := st.CachedInfo().State.LastSeq
	attack(t)
	kv, err := admin.js(t).KeyValue(ctx, controller.ResultsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "fence", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq - before - 1
}

// TestRunnersCannotForgeResults makes a runner user (meme_runner) try every
// way it has to get a message of its choosing, or a JetStream answer, into
// the results bucket: none of them is a permission the server checks (a
// reply subject is never checked), so under one account for every role
// each wrote job victim's result. With the runner teams in accounts of
// their own (nats.conf) every reply subject a runner names is a subject
// of its own account: the results bucket takes nothing, and job victim
// has no result.
func TestRunnersCannotForgeResults(t *testing.T) {
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Job victim waits in JOBS: nobody serves meme_classifier here.
	producer := connect(t, url, "producer")
	store, err := controller.OpenStore(ctx, producer.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Submit(ctx, "meme_classifier", []byte(`{"image_url":"https://example.com/a.png"}`), controller.SubmitOptions{ID: "victim"}); err != nil {
		t.Fatal(err)
	}

	attacker := connect(t, url, "meme_runner")
	akv, err := attacker.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	ownKey := "meme_classifier.attack"
	if _, err := akv.Put(ctx, ownKey, []byte(forgedResult)); err != nil {
		t.Fatal(err)
	}
	keySubject := asPublished(attacker.role, "$KV."+discovery.Bucket+"."+ownKey)
	directGet := asPublished(attacker.role, "$JS.API.DIRECT.GET.KV_"+discovery.Bucket+".$KV."+discovery.Bucket+"."+ownKey)
	target := "$KV." + controller.ResultsBucket + ".victim"

	for _, a := range []struct {
		name   string
		attack func(t *testing.T)
	}{
		{"self-bounce: a request to its own pinned subject, answered into $KV.results.<id>", func(t *testing.T) {
			answered := make(chan error, 1)
			sub, err := attacker.QueueSubscribe("run.meme_classifier.v6_6_6", runner.DefaultQueueGroup, func(m *nats.Msg) {
				// allow_responses lets it answer what it received.
				answered <- attacker.Publish(m.Reply, []byte(forgedResult))
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			if err := attacker.PublishRequest("run.meme_classifier.v6_6_6", target, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-answered:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatal("the bounced request never arrived")
			}
			// The answer reached the server before the flush's PONG.
			if err := attacker.Flush(); err != nil {
				t.Fatal(err)
			}
		}},
		{"publish ack: a put of its own discovery key acknowledged into $KV.results.<id>", func(t *testing.T) {
			if err := attacker.PublishRequest(keySubject, target, []byte(forgedResult)); err != nil {
				t.Fatal(err)
			}
			// The stream acknowledges in order: once this put is
			// acknowledged, the first one's acknowledgement went out.
			if _, err := akv.Put(ctx, ownKey, []byte(forgedResult)); err != nil {
				t.Fatal(err)
			}
		}},
		{"direct get of its own key answered into $KV.results.<id>", func(t *testing.T) {
			if err := attacker.PublishRequest(directGet, target, nil); err != nil {
				t.Fatal(err)
			}
			// The same direct get with its own inbox: answered after the
			// first one.
			if _, err := attacker.Request(directGet, nil, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}},
		{"JetStream API answer (stream info) into $KV.results.<id>", func(t *testing.T) {
			info := asPublished(attacker.role, "$JS.API.STREAM.INFO.KV_"+discovery.Bucket)
			if err := attacker.PublishRequest(info, target, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := attacker.Request(info, nil, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(a.name, func(t *testing.T) {
			n := resultsAfter(t, admin, a.attack)
			t.Logf("results bucket messages after the attack (fence excluded): %d", n)
			if n != 0 {
				t.Errorf("the attack stored %d messages in the results bucket", n)
			}
			if r, err := store.Result(ctx, "victim"); !errors.Is(err, controller.ErrNoResult) {
				t.Errorf("job victim has a result: %+v %v", r, err)
			}
		})
	}
	// Every attack used only what the runner user may do.
	attacker.expectClean(t)
}

// TestRunnerTeamsAreIsolated: a runner team reaches nothing of another team
// nor of APP's subjects outside its imports. meme_runner is refused the
// requests, registrations and outputs of language_detection (text_runner's
// team), and what JetStream answers for it into run.language_detection or
// notify.<x> goes to its own account, where nobody listens: text_runner's
// language_detection takes nothing in, the producer gets no notification.
func TestRunnerTeamsAreIsolated(t *testing.T) {
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var runs atomic.Int64
	countingRunner(t, url, "text_runner", "language_detection", &runs)
	var notified atomic.Int64
	producer := connect(t, url, "producer")
	if _, err := producer.Subscribe("notify.orders", func(*nats.Msg) { notified.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := producer.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, d := range []struct{ name, subject string }{
		{"call language_detection", "run.language_detection"},
		{"call language_detection's pinned subject", "run.language_detection.v1_0_0"},
		{"register language_detection", asPublished("meme_runner", "$KV.discovery.language_detection.x")},
		{"read language_detection's registrations", asPublished("meme_runner", "$JS.API.DIRECT.GET.KV_discovery.$KV.discovery.language_detection.x")},
		{"write language_detection's outputs", "$O.outputs_language_detection.C.x"},
		{"ask language_detection's control plane", "$SRV.PING.language_detection"},
	} {
		t.Run("meme_runner may not "+d.name, func(t *testing.T) {
			c := connect(t, url, "meme_runner")
			if err := c.Publish(d.subject, []byte(`{"text":"hello"}`)); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, d.subject)
		})
	}
	for _, subject := range []string{"run.language_detection", "run.language_detection.*", "$SRV.PING.language_detection", "$KV.discovery.language_detection.*"} {
		t.Run("meme_runner may not subscribe to "+subject, func(t *testing.T) {
			c := connect(t, url, "meme_runner")
			if _, err := c.QueueSubscribeSync(subject, runner.DefaultQueueGroup); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, subject)
		})
	}

	attacker := connect(t, url, "meme_runner")
	akv, err := attacker.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := akv.Put(ctx, "meme_classifier.attack", []byte(`{"text":"input chosen by the attacker"}`)); err != nil {
		t.Fatal(err)
	}
	directGet := asPublished(attacker.role, "$JS.API.DIRECT.GET.KV_discovery.$KV.discovery.meme_classifier.attack")
	before := taken(t, admin, "language_detection")
	for _, reply := range []string{"run.language_detection", "notify.orders"} {
		if err := attacker.PublishRequest(directGet, reply, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Answered in order: once this one is, the two above went out.
	if _, err := attacker.Request(directGet, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// A request of the system reaches the runner after anything the
	// direct gets delivered there, and the producer's notification
	// subscription sees anything published before the flush.
	if _, err := admin.Request("run.language_detection", []byte(`{"text":"hello"}`), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := producer.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return taken(t, admin, "language_detection") >= before+1 },
		"the system's request was not counted")
	if got := taken(t, admin, "language_detection") - before; got != 1 {
		t.Errorf("language_detection took in %d messages, want only the system's request: a direct get of the meme runner reached it", got)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("language_detection ran %d times, want 1", n)
	}
	if n := notified.Load(); n != 0 {
		t.Errorf("notify.orders received %d messages from the meme runner's direct gets", n)
	}
	attacker.expectClean(t)
}

// teamOf is the account of each runner user in nats.conf.
func teamOf(t *testing.T) map[string]string {
	t.Helper()
	setPasswords(t)
	out := map[string]string{}
	for _, u := range loadConf(t, "nats.conf").Users {
		if u.Account == nil {
			t.Fatalf("user %s has no account", u.Username)
		}
		out[u.Username] = u.Account.Name
	}
	return out
}

// TestEveryRunnerTeamHasItsOwnAccount: APP holds the streams and the
// system's roles and no runner user; each runner user is alone in an
// account of its own.
func TestEveryRunnerTeamHasItsOwnAccount(t *testing.T) {
	accounts := teamOf(t)
	seen := map[string]string{}
	for user, acc := range accounts {
		switch {
		case !runnerRole(user) && acc != "APP":
			t.Errorf("user %s is in account %s, want APP", user, acc)
		case runnerRole(user) && acc == "APP":
			t.Errorf("runner user %s is in APP, with the streams", user)
		case runnerRole(user) && seen[acc] != "":
			t.Errorf("runner users %s and %s share account %s", user, seen[acc], acc)
		case runnerRole(user):
			seen[acc] = user
		}
	}
	if len(seen) != 3 {
		t.Errorf("%d runner accounts, want 3 (%v)", len(seen), seen)
	}
	for _, role := range roles {
		if _, ok := accounts[role]; !ok {
			t.Errorf("role %s is not a user of nats.conf", role)
		}
	}
}
