package deploy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/runner"
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
	for _, subject := range []string{"run.language_detection", "run.language_detection.*", "$SRV.PING.language_detection",
		asPublished("meme_runner", "$KV.discovery.language_detection.*")} {
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
// account of its own. Every user of nats.conf is one of roles (so the
// per-role tests, consumerGrants among them, cover it), and no user of
// APP may serve an algorithm: whoever takes run.<algorithm> runs foreign
// code and belongs in a team's account.
func TestEveryRunnerTeamHasItsOwnAccount(t *testing.T) {
	accounts := teamOf(t)
	for _, u := range loadConf(t, "nats.conf").Users {
		if !slices.Contains(roles, u.Username) {
			t.Errorf("user %s of nats.conf is not one of the roles the tests in deploy/ check (%v)", u.Username, roles)
		}
		if u.Account.Name != "APP" {
			continue
		}
		if u.Permissions == nil || u.Permissions.Subscribe == nil || u.Permissions.Subscribe.Allow == nil {
			t.Errorf("user %s of APP may subscribe to anything, run.<algorithm> included", u.Username)
			continue
		}
		for _, sub := range u.Permissions.Subscribe.Allow {
			subject, _, _ := strings.Cut(sub, " ")
			if server.SubjectsCollide(subject, "run.>") {
				t.Errorf("user %s of APP may subscribe to %q: it could serve an algorithm beside the streams", u.Username, sub)
			}
		}
	}
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

// servedBy is the algorithms user may serve (run.<algorithm> in the
// runners' queue group).
func servedBy(u *server.User) []string {
	var algs []string
	for _, sub := range u.Permissions.Subscribe.Allow {
		alg, ok := strings.CutSuffix(sub, " "+runner.DefaultQueueGroup)
		if ok && strings.Count(alg, ".") == 1 {
			algs = append(algs, strings.TrimPrefix(alg, "run."))
		}
	}
	return algs
}

// accountInfo is what the server of nats.conf reports of account.
func accountInfo(t *testing.T, s *server.Server, account string) *server.AccountInfo {
	t.Helper()
	a, err := s.Accountz(&server.AccountzOptions{Account: account})
	if err != nil || a.Account == nil {
		t.Fatalf("account %s: %v", account, err)
	}
	return a.Account
}

// TestTeamImportsAreTheirPermissions checks the imports of nats.conf against
// its permissions, for every runner team (also one added later): the team
// account has no JetStream of its own; each of its service imports comes
// from APP, is a subject its user may publish, and is APP's subject under
// appAPIPrefix (JetStream API and key puts) or as it is (object chunks);
// each JetStream or object subject its user may publish is imported (no
// grant that leads nowhere); nothing it imports names another team's
// algorithm or reaches what only APP's roles may touch; it imports no
// stream; its requests are answered as long as its user may answer. APP
// imports from a team
// exactly its algorithms' requests and their control plane (with the
// cancel subjects of its algorithms).
func TestTeamImportsAreTheirPermissions(t *testing.T) {
	s, _ := startConfServer(t)
	opts := loadConf(t, "nats.conf")
	own := map[string][]string{} // account -> algorithms
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		if runnerRole(u.Username) {
			own[u.Account.Name] = servedBy(u)
			users[u.Account.Name] = u
		}
	}
	forbidden := []string{"$KV.results.>", "$KV.routes.>", "$KV.served.>", "$JS.API.CONSUMER.>", "$JS.FC.>", "$JS.ACK.>",
		"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>",
		"$JS.API.STREAM.MSG.>", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES", "$JS.API.INFO",
		"jobs.>", "notify.>", "dead.>", "run.>", "$O.inputs.>", "$O.uploads.>", "$O.outputs.>"}
	for acc := range own {
		u := users[acc]
		info := accountInfo(t, s, acc)
		if info.JetStream {
			t.Errorf("account %s has JetStream of its own", acc)
		}
		imported := map[string]bool{}
		for _, im := range info.Imports {
			if im.Account == server.DEFAULT_SYSTEM_ACCOUNT {
				// The server's own (account info, and $JS.API.> answered
				// "JetStream not enabled" for an account without it).
				continue
			}
			remote, local := string(im.Subject), string(im.LocalSubject)
			if im.Account != "APP" {
				t.Errorf("%s imports %s from %s, want APP", acc, remote, im.Account)
			}
			if im.Type.String() == "stream" {
				t.Errorf("%s imports the stream %s (as %s): nothing of APP is published into a team's account", acc, remote, local)
				continue
			}
			imported[local] = true
			if !slices.Contains(u.Permissions.Publish.Allow, local) {
				t.Errorf("%s imports %s as %s, which user %s may not publish", acc, remote, local, u.Username)
			}
			if want := asPublished(u.Username, remote); local != want {
				t.Errorf("%s imports %s as %s, want %s", acc, remote, local, want)
			}
			for _, f := range forbidden {
				if server.SubjectsCollide(remote, f) {
					t.Errorf("%s imports %s, which reaches %s", acc, remote, f)
				}
			}
			for other, theirs := range own {
				for _, a := range theirs {
					if other != acc && strings.Contains(remote, a) {
						t.Errorf("%s imports %s, a subject of %s's algorithm %s", acc, remote, other, a)
					}
				}
			}
		}
		// APP keeps the way back for an answer as long as the runner may
		// answer (allow_responses), and longer than the runner relays.
		window := u.Permissions.Response.Expires
		a, err := s.LookupAccount(acc)
		if err != nil {
			t.Fatal(err)
		}
		for _, ex := range info.Exports {
			if !strings.HasPrefix(string(ex.Subject), "run.") {
				continue
			}
			th, err := a.ServiceExportResponseThreshold(string(ex.Subject))
			if err != nil || th < window || th < runner.RelayTimeout {
				t.Errorf("%s exports %s with response_threshold %s (%v), below the reply window %s or the relay timeout %s",
					acc, ex.Subject, th, err, window, runner.RelayTimeout)
			}
		}
		for _, p := range u.Permissions.Publish.Allow {
			if (strings.HasPrefix(p, appAPIPrefix+".") || strings.HasPrefix(p, "$O.")) && !imported[p] {
				t.Errorf("user %s may publish %s, which %s does not import", u.Username, p, acc)
			}
		}
	}

	app := accountInfo(t, s, "APP")
	if !app.JetStream {
		t.Error("APP has no JetStream")
	}
	got := map[string][]string{}
	for _, im := range app.Imports {
		if im.Account == server.DEFAULT_SYSTEM_ACCOUNT {
			continue
		}
		got[im.Account] = append(got[im.Account], string(im.Subject))
		if string(im.LocalSubject) != string(im.Subject) {
			t.Errorf("APP imports %s from %s as %s", im.Subject, im.Account, im.LocalSubject)
		}
	}
	for acc, algs := range own {
		want := []string{"$SRV.PING", "$SRV.INFO", "$SRV.STATS"}
		for _, a := range algs {
			want = append(want, "run."+a, "run."+a+".*", "$SRV.*."+a, "$SRV.*."+a+".*", "cancel."+a, "progress."+a)
		}
		slices.Sort(want)
		slices.Sort(got[acc])
		if !slices.Equal(got[acc], want) {
			t.Errorf("APP imports from %s %v, want %v", acc, got[acc], want)
		}
		delete(got, acc)
	}
	if len(got) > 0 {
		t.Errorf("APP imports from accounts without a runner team: %v", got)
	}
}

// TestRunnerSeesItsRegistrationsAsTheyHappen: the runner library follows
// its algorithms' registrations with a plain subscription on the subjects
// their runners put the keys on (runner/views.go): in a team's account
// $JS.APP.API.$KV.discovery.<algorithm>.*, where a put and a delete by
// another runner of the team arrive before they cross to APP, the delete
// with its KV-Operation header; and a runner of the team holds that very
// subscription, in its account.
func TestRunnerSeesItsRegistrationsAsTheyHappen(t *testing.T) {
	srv, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watcher := connect(t, url, "meme_runner")
	sub, err := watcher.SubscribeSync(asPublished(watcher.role, "$KV."+discovery.Bucket+".image_info.*"))
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	other := connect(t, url, "meme_runner")
	kv, err := other.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "image_info.seen", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "image_info.seen"); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"", "DEL"} {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the %q operation: %v", op, err)
		}
		if m.Subject != asPublished(watcher.role, "$KV."+discovery.Bucket+".image_info.seen") || m.Header.Get("KV-Operation") != op {
			t.Fatalf("got %s %v, want the key's subject with KV-Operation %q", m.Subject, m.Header, op)
		}
	}
	watcher.expectClean(t)
	other.expectClean(t)
	// From now on the subscription on the subject is the runner's.
	watcher.Close()

	c, _ := runUnder(t, url, "meme_runner", rawAlgorithm(t, "image_info", "1.0.0"))
	subject := asPublished(c.role, "$KV."+discovery.Bucket+".image_info.*")
	sz, err := srv.Subsz(&server.SubszOptions{Subscriptions: true, Account: teamOf(t)[c.role], Limit: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	held := false
	for _, sd := range sz.Subs {
		held = held || sd.Subject == subject
	}
	if !held {
		t.Errorf("the runner holds no subscription on %s", subject)
	}
	c.expectClean(t)
}
