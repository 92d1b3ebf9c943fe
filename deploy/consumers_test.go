package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	imageinfo "github.com/pnpworker/pnpworker/algo/image_info"
	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

// allStreams are the streams pnp provision creates.
var allStreams = []string{
	"KV_" + discovery.Bucket, "KV_" + rollout.Bucket, controller.JobsStream, controller.DeadStream,
	"KV_" + controller.ResultsBucket, "OBJ_" + controller.InputsBucket, "OBJ_" + controller.OutputsBucket,
	rollout.CompareStream, rollout.HistoryStream,
}

// startConfServer starts an embedded server with the real nats.conf on a
// loopback port and a store of its own, and returns it with its URL (for
// tests that read its subscriptions). adjust, if any, changes the options
// last (a test that reads the monitoring endpoints turns them on).
func startConfServer(t *testing.T, adjust ...func(*server.Options)) (*server.Server, string) {
	t.Helper()
	setPasswords(t)
	opts := loadConf(t, "nats.conf")
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0 // no monitoring listener in tests
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	for _, f := range adjust {
		f(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s, s.ClientURL()
}

// provisionEverything provisions, as the admin, every stream pnp provision
// creates, with cfg for the job streams and discovery.
func provisionEverything(t *testing.T, admin *client, cfg controller.StoreConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := admin.js(t)
	if _, err := controller.Provision(ctx, js, cfg); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	if _, err := rollout.Provision(ctx, js, rollout.Config{}); err != nil {
		t.Fatalf("admin provisions routes: %v", err)
	}
	if _, err := rollout.ProvisionCompare(ctx, js, rollout.CompareConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rollout.ProvisionHistory(ctx, js, rollout.HistoryConfig{}); err != nil {
		t.Fatal(err)
	}
}

// consumerCounts returns, read as the admin, how many consumers each
// provisioned stream has.
func consumerCounts(t *testing.T, admin *client) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int{}
	for _, name := range allStreams {
		st, err := admin.js(t).Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = st.CachedInfo().State.Consumers
	}
	return out
}

// expectRefused sends a JetStream API request and waits for its outcome:
// the server's permission violation naming subject (refused), or a reply
// (the request passed the permissions; reported as an error).
func (c *client) expectRefused(t *testing.T, subject string, body []byte) {
	t.Helper()
	if reply, ok := c.apiOutcome(t, subject, body); ok {
		t.Errorf("%s may publish %s: the server answered %s", c.role, subject, reply)
	}
}

// expectAnswered is expectRefused's converse: the request must pass the
// permissions and be answered.
func (c *client) expectAnswered(t *testing.T, subject string, body []byte) {
	t.Helper()
	if _, ok := c.apiOutcome(t, subject, body); !ok {
		t.Errorf("%s may not publish %s", c.role, subject)
	}
}

// apiOutcome publishes a request on subject and reports the reply, if
// any, once it or the permission violation for subject arrived.
func (c *client) apiOutcome(t *testing.T, subject string, body []byte) (string, bool) {
	t.Helper()
	inbox := c.NewRespInbox()
	sub, err := c.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.PublishRequest(subject, inbox, body); err != nil {
		t.Fatal(err)
	}
	_ = c.Flush()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range c.violations() {
			if strings.Contains(v, `"`+subject+`"`) {
				return "", false
			}
		}
		if m, err := sub.NextMsg(10 * time.Millisecond); err == nil {
			return string(m.Data), true
		}
	}
	t.Fatalf("%s: neither a reply nor a permission violation for %s in 20 s", c.role, subject)
	return "", false
}

// consumerRequest is the body of a consumer create request on stream.
func consumerRequest(t *testing.T, stream string, cfg map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"stream_name": stream, "config": cfg})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// filterOf is a literal subject of stream, for the create subject that
// names a filter: on discovery, the attacker's own key.
func filterOf(stream string) string {
	switch {
	case stream == "KV_"+discovery.Bucket:
		return "$KV." + discovery.Bucket + ".image_info.attack"
	case strings.HasPrefix(stream, "KV_"):
		return "$KV." + strings.TrimPrefix(stream, "KV_") + ".x"
	case strings.HasPrefix(stream, "OBJ_"):
		return "$O." + strings.TrimPrefix(stream, "OBJ_") + ".M.x"
	default:
		return strings.ToLower(stream) + ".x"
	}
}

// Runner users run foreign code and may create no consumer at all, on any
// stream, in any form: a consumer's deliver subject is not checked against
// its creator's permissions, so a push consumer created by a runner made
// the server deliver the runner's own registration — an image_info input —
// into run.image_info again and again (and a forged record into
// notify.<x>), long after the runner was gone. Each attempt must be
// refused by the server, and no stream may have a consumer afterwards.
func TestRunnersCreateNoConsumer(t *testing.T) {
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The attacker's payload: its own registration key, which it may
	// write, holding a valid image_info input.
	attacker := connect(t, url, "meme_runner")
	kv, err := attacker.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "image_info.attack", []byte(`{"image_url":"data:,"}`)); err != nil {
		t.Fatal(err)
	}
	// Who would receive what the attack delivers: the image_info runners'
	// queue group, and a producer waiting for a notification.
	var runs, notified atomic.Int64
	victim := connect(t, url, "meme_runner")
	if _, err := victim.QueueSubscribe("run.image_info", runner.DefaultQueueGroup, func(*nats.Msg) { runs.Add(1) }); err != nil {
		t.Fatal(err)
	}
	producer := connect(t, url, "producer")
	if _, err := producer.Subscribe("notify.forged", func(*nats.Msg) { notified.Add(1) }); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{victim, producer} {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	n := 0
	attackStart := time.Now()
	var attackers []*client
	for _, role := range []string{"meme_runner", "text_runner", "py_runner"} {
		c := connect(t, url, role)
		attackers = append(attackers, c)
		for _, stream := range allStreams {
			// ack_wait 10 ms, never acknowledged (a reply is no ack):
			// each record is delivered again every 10 ms.
			push := func(deliver string) map[string]any {
				n++
				cfg := map[string]any{"name": fmt.Sprintf("c%d", n), "deliver_subject": deliver, "deliver_policy": "all",
					"ack_policy": "explicit", "ack_wait": int64(10 * time.Millisecond), "max_deliver": -1}
				if strings.HasPrefix(deliver, "run.") {
					// Delivered to the runners' queue group, one runner each time.
					cfg["deliver_group"] = runner.DefaultQueueGroup
				}
				return cfg
			}
			pull := func() map[string]any {
				n++
				return map[string]any{"durable_name": fmt.Sprintf("c%d", n), "ack_policy": "explicit"}
			}
			for _, a := range []struct {
				name string
				cfg  map[string]any
				subj func(cfg map[string]any) string
			}{
				{"push into run.image_info", push("run.image_info"), func(cfg map[string]any) string {
					return "$JS.API.CONSUMER.CREATE." + stream + "." + cfg["name"].(string)
				}},
				{"push into notify.forged, filtered", push("notify.forged"), func(cfg map[string]any) string {
					cfg["filter_subject"] = filterOf(stream)
					return "$JS.API.CONSUMER.CREATE." + stream + "." + cfg["name"].(string) + "." + filterOf(stream)
				}},
				{"push into run.language_detection, unnamed", push("run.language_detection"), func(cfg map[string]any) string {
					delete(cfg, "name")
					return "$JS.API.CONSUMER.CREATE." + stream
				}},
				{"durable pull", pull(), func(cfg map[string]any) string {
					return "$JS.API.CONSUMER.DURABLE.CREATE." + stream + "." + cfg["durable_name"].(string)
				}},
				{"named pull", pull(), func(cfg map[string]any) string {
					return "$JS.API.CONSUMER.CREATE." + stream + "." + cfg["durable_name"].(string)
				}},
			} {
				t.Run(role+"/"+stream+"/"+a.name, func(t *testing.T) {
					subject := asPublished(role, a.subj(a.cfg))
					c.expectRefused(t, subject, consumerRequest(t, stream, a.cfg))
				})
			}
		}
		// The library's own ways: an ordered KV watch and a pull consumer.
		t.Run(role+"/kv watch", func(t *testing.T) {
			kv, err := c.js(t).KeyValue(ctx, discovery.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			c.expectDeniedCall(t, asPublished(role, "$JS.API.CONSUMER.CREATE.KV_discovery"), true, func(ctx context.Context) error {
				w, err := kv.WatchAll(ctx)
				if err == nil {
					_ = w.Stop()
				}
				return err
			})
		})
		t.Run(role+"/pull consumer on JOBS", func(t *testing.T) {
			c.expectDeniedCall(t, asPublished(role, "$JS.API.CONSUMER.CREATE.JOBS"), true, func(ctx context.Context) error {
				_, err := c.js(t).CreateConsumer(ctx, controller.JobsStream, jetstream.ConsumerConfig{Durable: "thief"})
				return err
			})
		})
	}

	counts := consumerCounts(t, admin)
	for _, got := range counts {
		if got != 0 {
			// Show what the attack does while it is possible, and after
			// the attackers are gone.
			during, ranFor := runs.Load(), time.Since(attackStart)
			for _, c := range append(attackers, attacker) {
				c.Close()
			}
			runs.Store(0)
			gone := time.Now()
			for time.Since(gone) < 10*time.Second && runs.Load() < 100 {
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatalf("runner users created consumers (%v): run.image_info received %d requests in the %s of the attack, "+
				"and %d more in the %s after every runner user had disconnected; notify.forged received %d records",
				counts, during, ranFor.Round(time.Millisecond), runs.Load(), time.Since(gone).Round(time.Millisecond), notified.Load())
		}
	}
}

// consumerGrants says, per role, on which streams nats.conf lets it create
// consumers with the subjects that name the consumer
// ($JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>]); nobody but the
// admin may use the unnamed or the durable create subject.
var consumerGrants = map[string][]string{
	"meme_runner": nil,
	"text_runner": nil,
	"py_runner":   nil,
	"producer":    nil,
	"controller":  {controller.JobsStream, "KV_" + discovery.Bucket, "KV_" + rollout.Bucket},
	"gateway":     {"KV_" + discovery.Bucket, "KV_" + controller.ResultsBucket, controller.DeadStream, "KV_" + rollout.Bucket, rollout.CompareStream},
	"admin":       allStreams,
}

// TestConsumerGrantsPerRole checks, for every role and every stream, each
// subject that creates a consumer against consumerGrants (a runner team's
// user under its account's prefix and without it). An allowed
// request names another stream in its body, so the server answers it with
// an error and creates nothing.
func TestConsumerGrantsPerRole(t *testing.T) {
	_, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	for _, role := range roles {
		c := connect(t, url, role)
		for _, stream := range allStreams {
			body := consumerRequest(t, "NOT_"+stream, map[string]any{"name": "probe", "ack_policy": "explicit"})
			granted := false
			for _, s := range consumerGrants[role] {
				granted = granted || s == stream
			}
			for _, f := range []struct {
				subject string
				named   bool
			}{
				{"$JS.API.CONSUMER.CREATE." + stream + ".probe_" + role, true},
				{"$JS.API.CONSUMER.CREATE." + stream + ".probe_" + role + "." + filterOf(stream), true},
				{"$JS.API.CONSUMER.CREATE." + stream, false},
				{"$JS.API.CONSUMER.DURABLE.CREATE." + stream + ".probe_" + role, false},
			} {
				allowed := role == "admin" || (granted && f.named)
				// A runner team's user tries APP's JetStream through its
				// account's import and its own account's $JS.API.
				subjects := []string{asPublished(role, f.subject)}
				if subjects[0] != f.subject {
					subjects = append(subjects, f.subject)
				}
				for _, subject := range subjects {
					t.Run(fmt.Sprintf("%s %s allowed=%v", role, subject, allowed), func(t *testing.T) {
						if allowed {
							c.expectAnswered(t, subject, body)
						} else {
							c.expectRefused(t, subject, body)
						}
					})
				}
			}
		}
	}
	for stream, n := range consumerCounts(t, admin) {
		if n != 0 {
			t.Errorf("the probes created %d consumers on %s", n, stream)
		}
	}
}

// runUnder runs algs under role until the test ends, with the runner
// library as compose.yaml runs it (--no-provision), and returns a function
// that stops it.
func runUnder(t *testing.T, url, role string, algs ...*runner.Algorithm) (*client, func()) {
	t.Helper()
	c := connect(t, url, role)
	r, err := runner.New(c.Conn, algs, c.runnerOptions(runner.WithoutProvisioning(), runner.WithDrainTimeout(5*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", role, err)
		}
		c.expectClean(t) // deregistration and drain included
	}
	t.Cleanup(stop)
	select {
	case <-r.Started():
	case err := <-done:
		t.Fatalf("%s stopped: %v", role, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start under its nats.conf permissions", role)
	}
	return c, stop
}

func rawAlgorithm(t *testing.T, name, version string) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewRawAlgorithm(runner.Spec{Name: name, Version: version,
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`)},
		func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{"ok":true}`), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// queueMembers is how many subscriptions in the runners' queue group the
// server holds on exactly subject.
func queueMembers(t *testing.T, s *server.Server, subject string) int {
	t.Helper()
	sz, err := s.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject, Limit: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sd := range sz.Subs {
		if sd.Subject == subject && sd.Queue == runner.DefaultQueueGroup {
			n++
		}
	}
	return n
}

// Runners under nats.conf, creating no consumer, still do all they did:
// every runner user starts, registers and serves; versions follow a
// route (the other version leaves the shared queue group, the stable one
// stays), Pnp-Version reaches the version asked for, and when the stable
// version leaves, the other joins as a fallback. No stream gets a
// consumer, and no runner meets a permission violation.
func TestRunnersFollowRoutesWithoutConsumers(t *testing.T) {
	srv, url := startConfServer(t)
	admin := connect(t, url, "admin")
	provisionEverything(t, admin, controller.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	routes, err := rollout.Open(ctx, admin.js(t), rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}

	ld, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	ii, err := imageinfo.New(imageinfo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	runUnder(t, url, "text_runner", ld)
	_, stopV2 := runUnder(t, url, "text_runner", rawAlgorithm(t, "language_detection", "2.0.0"))
	runUnder(t, url, "meme_runner", ii)
	runUnder(t, url, "py_runner", rawAlgorithm(t, "text_stats", "1.0.0"), rawAlgorithm(t, "iris_species", "1.0.0"))

	call := func(subject, version string) string {
		m := &nats.Msg{Subject: subject, Data: []byte(`{"text":"Guten Morgen, wie geht es dir heute?"}`), Header: nats.Header{}}
		if version != "" {
			m.Header.Set(protocol.HeaderVersionWanted, version)
		}
		reply, err := admin.RequestMsg(m, 10*time.Second)
		if err != nil {
			return "error: " + err.Error()
		}
		if e := protocol.ReplyError(reply); e != nil {
			return fmt.Sprintf("error %d", e.Code)
		}
		return reply.Header.Get(protocol.HeaderVersion)
	}
	all := func(subject, version, want string, n int) bool {
		for range n {
			if got := call(subject, version); got != want {
				t.Logf("%s (asking for %q): %s, want %s", subject, version, got, want)
				return false
			}
		}
		return true
	}
	plain := "run.language_detection"
	for _, subject := range []string{"run.text_stats", "run.iris_species"} {
		if got := call(subject, ""); got != "1.0.0" {
			t.Fatalf("%s: %s", subject, got)
		}
	}
	if reply, err := admin.Request("run.image_info", []byte(`{"image_url":"data:,"}`), 10*time.Second); err != nil || reply.Header.Get(protocol.HeaderInstance) == "" {
		t.Fatalf("run.image_info: %v %v", err, reply)
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return queueMembers(t, srv, plain) == 2 },
		"without a route both versions should be in the shared queue group")

	if err := routes.Set(ctx, rollout.Route{Algorithm: "language_detection", Stable: "2.0.0"}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return queueMembers(t, srv, plain) == 1 },
		"1.0.0 never left the shared queue group after the route to 2.0.0")
	if !all(plain, "", "2.0.0", 20) {
		t.Fatal("the member left is not the stable version 2.0.0")
	}
	// Pnp-Version on the shared subject is forwarded by 2.0.0.
	natstest.Eventually(t, 20*time.Second, func() bool { return all(plain, "1.0.0", "1.0.0", 10) },
		"a plain request asking for 1.0.0 never reached it")
	if !all("run.language_detection.v1_0_0", "", "1.0.0", 10) {
		t.Fatal("the pinned subject of 1.0.0 does not reach it")
	}

	// The stable version goes (deregistering first): 1.0.0 falls back.
	stopV2()
	natstest.Eventually(t, 20*time.Second, func() bool { return queueMembers(t, srv, plain) == 1 && all(plain, "", "1.0.0", 10) },
		"with the stable version gone, 1.0.0 never served plain traffic")

	for stream, n := range consumerCounts(t, admin) {
		if n != 0 {
			t.Errorf("stream %s has %d consumers; runners must create none", stream, n)
		}
	}
}

// The watched buckets bound their consumers: pnp provision gives discovery
// and routes max_consumers (new buckets, and existing ones when it runs
// again), a runner starting with defaults does not undo an operator's
// value, and a flood of consumers by a system role is refused at the
// bound while what runs keeps running: jobs succeed, and a runner that
// starts after the flood serves, as it needs no consumer.
func TestWatchBucketsBoundConsumers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	maxConsumers := func(t *testing.T, js jetstream.JetStream, stream string) int {
		t.Helper()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.MaxConsumers
	}

	t.Run("provisioning sets and restores the bound", func(t *testing.T) {
		_, url := startConfServer(t)
		admin := connect(t, url, "admin")
		js := admin.js(t)
		provisionEverything(t, admin, controller.StoreConfig{})
		if got := maxConsumers(t, js, "KV_discovery"); got != discovery.DefaultMaxConsumers {
			t.Errorf("discovery max_consumers %d, want %d", got, discovery.DefaultMaxConsumers)
		}
		for _, s := range []string{"KV_routes", rollout.CompareStream, rollout.HistoryStream} {
			if got := maxConsumers(t, js, s); got != rollout.DefaultMaxConsumers {
				t.Errorf("%s max_consumers %d, want %d", s, got, rollout.DefaultMaxConsumers)
			}
		}
		// An operator's value survives processes that provision with
		// defaults (a runner or controller that may create streams).
		for _, s := range []string{"KV_discovery", "KV_routes"} {
			if err := discovery.SetMaxConsumers(ctx, js, s, 300); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := discovery.Provision(ctx, js, discovery.Config{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rollout.Provision(ctx, js, rollout.Config{}); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"KV_discovery", "KV_routes"} {
			if got := maxConsumers(t, js, s); got != 300 {
				t.Errorf("%s: max_consumers %d after a provision with defaults, want the operator's 300", s, got)
			}
		}
		// A bucket of an existing deployment (no bound) gets it when pnp
		// provision runs again (Update).
		for _, s := range []string{"KV_discovery", "KV_routes"} {
			if err := discovery.SetMaxConsumers(ctx, js, s, -1); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := discovery.Provision(ctx, js, discovery.Config{Update: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := rollout.Provision(ctx, js, rollout.Config{Update: true}); err != nil {
			t.Fatal(err)
		}
		if got := maxConsumers(t, js, "KV_discovery"); got != discovery.DefaultMaxConsumers {
			t.Errorf("discovery max_consumers %d after pnp provision, want %d", got, discovery.DefaultMaxConsumers)
		}
		if got := maxConsumers(t, js, "KV_routes"); got != rollout.DefaultMaxConsumers {
			t.Errorf("routes max_consumers %d after pnp provision, want %d", got, rollout.DefaultMaxConsumers)
		}
	})

	t.Run("a flood is refused at the bound, and what runs keeps running", func(t *testing.T) {
		const bound = 8
		d := startDeploymentWith(t, controller.StoreConfig{Discovery: discovery.Config{MaxConsumers: bound}})
		if got := maxConsumers(t, d.admin.js(t), "KV_discovery"); got != bound {
			t.Fatalf("discovery max_consumers %d, want %d", got, bound)
		}
		flood := connect(t, d.url, "controller")
		fjs := flood.js(t)
		refused := -1
		for i := range 4 * bound {
			_, err := fjs.CreateConsumer(ctx, "KV_discovery", jetstream.ConsumerConfig{Name: fmt.Sprintf("flood%d", i),
				FilterSubject: "$KV.discovery.>", InactiveThreshold: time.Hour})
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMaximumConsumersLimit {
				refused = i
				break
			}
			if err != nil {
				t.Fatalf("consumer %d: %v", i, err)
			}
		}
		if refused < 0 {
			t.Fatalf("%d consumers created on KV_discovery, bound %d", 4*bound, bound)
		}
		if n := consumerCounts(t, d.admin)["KV_discovery"]; n != bound {
			t.Errorf("refused at %d consumers, want the bound %d", n, bound)
		}
		// Jobs still run, through the controller's own consumers.
		sub, err := d.store.Submit(ctx, "language_detection", []byte(`{"text":"bonjour tout le monde, comment allez-vous"}`), controller.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := d.store.WaitResult(ctx, sub.ID, nil); err != nil || res.Status != controller.StatusSucceeded {
			t.Fatalf("a job after the flood: %+v, %v", res, err)
		}
		// A runner starting now needs no consumer slot.
		ii, err := imageinfo.New(imageinfo.Config{})
		if err != nil {
			t.Fatal(err)
		}
		runUnder(t, d.url, "meme_runner", ii)
		reply, err := d.controllerC.Request("run.image_info", []byte(`{"image_url":"data:,"}`), 10*time.Second)
		if err != nil || reply.Header.Get(protocol.HeaderInstance) == "" {
			t.Fatalf("a runner started after the flood does not serve: %v %v", err, reply)
		}
	})
}

// TestRunnerUsersFollowTheirOwnKeys checks every runner user of nats.conf,
// also one added later by copying a block: for each algorithm it serves it
// may read that algorithm's route and discovery keys by direct get and
// subscribe to its discovery keys — what the runner library needs to
// follow routes without a consumer — and no publish permission of any
// runner user reaches a consumer API subject.
func TestRunnerUsersFollowTheirOwnKeys(t *testing.T) {
	setPasswords(t)
	opts := loadConf(t, "nats.conf")
	runners := 0
	for _, u := range opts.Users {
		if !strings.HasSuffix(u.Username, "_runner") {
			continue
		}
		runners++
		for _, sub := range u.Permissions.Subscribe.Allow {
			alg, ok := strings.CutSuffix(sub, " "+runner.DefaultQueueGroup)
			if !ok || strings.Count(alg, ".") != 1 {
				continue // only the plain run.<algorithm> lines
			}
			alg = strings.TrimPrefix(alg, "run.")
			for _, want := range []string{
				"$JS.API.DIRECT.GET.KV_routes.$KV.routes." + alg,
				"$JS.API.DIRECT.GET.KV_discovery.$KV.discovery." + alg + ".*",
				"$JS.API.STREAM.INFO.KV_routes",
				"$JS.API.STREAM.INFO.KV_discovery",
			} {
				if !slices.Contains(u.Permissions.Publish.Allow, asPublished(u.Username, want)) {
					t.Errorf("%s serves %s but may not publish %s", u.Username, alg, asPublished(u.Username, want))
				}
			}
			if sub := asPublished(u.Username, "$KV.discovery."+alg+".*"); !slices.Contains(u.Permissions.Subscribe.Allow, sub) {
				t.Errorf("%s serves %s but may not subscribe to %s", u.Username, alg, sub)
			}
		}
		for _, p := range u.Permissions.Publish.Allow {
			for _, api := range []string{"$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.>", "$JS.API.CONSUMER.DURABLE.CREATE.*.*", "$JS.FC.>"} {
				if server.SubjectsCollide(p, api) || server.SubjectsCollide(p, asPublished(u.Username, api)) {
					t.Errorf("%s may publish %s, which reaches %s", u.Username, p, api)
				}
			}
		}
	}
	if runners != 3 {
		t.Errorf("found %d runner users, want 3", runners)
	}
}
