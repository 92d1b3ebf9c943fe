package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	imageinfo "pnpworker/algo/image_info"
	languagedetection "pnpworker/algo/language_detection"
	memeclassifier "pnpworker/algo/meme_classifier"
	"pnpworker/controller"
	"pnpworker/discovery"
	"pnpworker/runner"
)

// roles are the users nats.conf defines, each with its password variable.
var roles = []string{"runner", "controller", "producer", "admin", "gateway"}

func password(role string) string { return "secret-" + role }

// setPasswords sets the environment nats.conf reads its secrets from.
func setPasswords(t *testing.T) {
	t.Helper()
	for _, r := range roles {
		t.Setenv(strings.ToUpper(r)+"_PASSWORD", password(r))
	}
}

// loadConf parses a config file of this repository as nats-server would.
func loadConf(t *testing.T, name string) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(filepath.Join("..", name))
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return opts
}

// startServer runs ../nats.conf on a free loopback port with its store in a
// temporary directory; nothing else is changed.
func startServer(t *testing.T) string {
	t.Helper()
	setPasswords(t)
	opts := loadConf(t, "nats.conf")
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0 // no monitoring listener in tests
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
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
	return s.ClientURL()
}

// client is one role's connection and the asynchronous errors the server
// sent it: denied publishes and subscriptions arrive here, not as return
// values.
type client struct {
	*nats.Conn
	role string
	mu   sync.Mutex
	errs []error
}

// connect connects as role with its password and private inbox prefix.
func connect(t *testing.T, url, role string, opts ...nats.Option) *client {
	t.Helper()
	c := &client{role: role}
	all := append([]nats.Option{
		nats.UserInfo(role, password(role)),
		nats.CustomInboxPrefix("_INBOX_" + role),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
		}),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c
}

func (c *client) js(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(c.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// violations returns the permission violations received so far.
func (c *client) violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, err := range c.errs {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
			out = append(out, err.Error())
		}
	}
	return out
}

// expectDenied waits until the server reported a permission violation
// naming subject.
func (c *client) expectDenied(t *testing.T, subject string) {
	t.Helper()
	_ = c.Flush()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range c.violations() {
			if strings.Contains(v, `"`+subject+`"`) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: no permission violation for %q; got %v", c.role, subject, c.violations())
}

// expectClean fails when the server reported any permission violation.
func (c *client) expectClean(t *testing.T) {
	t.Helper()
	_ = c.Flush()
	if v := c.violations(); len(v) > 0 {
		t.Errorf("%s: unexpected permission violations: %v", c.role, v)
	}
}

// deployment is a server running nats.conf with everything provisioned by
// the admin, a runner serving language_detection, and a controller, each
// under its own user, as compose.yaml runs them.
type deployment struct {
	url                                   string
	admin, runnerC, controllerC, producer *client
	store                                 *controller.Store
	runner                                *runner.Runner
}

func startDeployment(t *testing.T) *deployment {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &deployment{url: startServer(t)}

	d.admin = connect(t, d.url, "admin")
	if _, err := controller.Provision(ctx, d.admin.js(t), controller.StoreConfig{}); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}

	d.runnerC = connect(t, d.url, "runner")
	alg, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	d.runner, err = runner.New(d.runnerC.Conn, []*runner.Algorithm{alg}, runner.WithoutProvisioning())
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- d.runner.Run(ctx) }()

	d.controllerC = connect(t, d.url, "controller")
	ctl, err := controller.New(d.controllerC.Conn, controller.Config{Bind: true, NoRunnerDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{runDone, ctlDone} {
			select {
			case err := <-ch:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(40 * time.Second):
				t.Error("runner or controller did not stop")
			}
		}
		// Heartbeats, deregistration and draining ran under the same
		// permissions.
		for _, c := range []*client{d.runnerC, d.controllerC} {
			if c != nil {
				c.expectClean(t)
			}
		}
	})
	for name, ch := range map[string]<-chan struct{}{"runner": d.runner.Started(), "controller": ctl.Ready()} {
		select {
		case <-ch:
		case err := <-runDone:
			t.Fatalf("runner stopped: %v", err)
		case err := <-ctlDone:
			t.Fatalf("controller stopped: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not start under its nats.conf permissions", name)
		}
	}

	d.producer = connect(t, d.url, "producer")
	d.store, err = controller.OpenStore(ctx, d.producer.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatalf("producer opens the store: %v", err)
	}
	return d
}

func (d *deployment) clients() []*client {
	return []*client{d.admin, d.runnerC, d.controllerC, d.producer}
}

// TestRolesAllowed runs the job pipeline with every process under its own
// role: admin provisions, the runner serves with WithoutProvisioning, the
// controller binds (--no-provision), the producer submits and reads. Each
// step working, with no permission violation anywhere, is what each role
// needs.
func TestRolesAllowed(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("producer submits and reads a result", func(t *testing.T) {
		sub, err := d.store.Submit(ctx, "language_detection", []byte(`{"text":"Guten Morgen, wie geht es dir heute?"}`), controller.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.store.WaitResult(ctx, sub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != controller.StatusSucceeded || !strings.Contains(string(res.Output), "de") {
			t.Fatalf("want a succeeded German detection, got %+v (%s)", res, res.Output)
		}
		if _, err := d.store.Result(ctx, sub.ID); err != nil {
			t.Fatalf("producer reads one result: %v", err)
		}
	})

	t.Run("controller dead-letters an invalid job", func(t *testing.T) {
		sub, err := d.store.Submit(ctx, "language_detection", []byte(`{"txt":1}`), controller.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.store.WaitResult(ctx, sub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != controller.StatusFailed || res.DeadLetterSeq == 0 {
			t.Fatalf("want a failed, dead-lettered result, got %+v", res)
		}
	})

	t.Run("controller requests a runner directly", func(t *testing.T) {
		msg, err := d.controllerC.Request("run.language_detection", []byte(`{"text":"the quick brown fox jumps over the lazy dog"}`), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get(runner.HeaderInstance) == "" {
			t.Fatalf("reply without %s header: %v %s", runner.HeaderInstance, msg.Header, msg.Data)
		}
	})

	t.Run("runner answers the micro control plane", func(t *testing.T) {
		msg, err := d.admin.Request("$SRV.PING.language_detection", nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(msg.Data), "language_detection") {
			t.Fatalf("unexpected ping reply %s", msg.Data)
		}
	})

	t.Run("controller reads discovery", func(t *testing.T) {
		reg, err := discovery.Open(ctx, d.controllerC.js(t), discovery.Config{})
		if err != nil {
			t.Fatal(err)
		}
		recs, err := reg.Lookup(ctx, "language_detection")
		if err != nil || len(recs) != 1 {
			t.Fatalf("want the runner's one record, got %v, %v", recs, err)
		}
	})

	t.Run("producer receives notifications", func(t *testing.T) {
		sub, err := d.producer.SubscribeSync("notify.test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.store.Submit(ctx, "language_detection", []byte(`{"text":"bonjour tout le monde"}`), controller.SubmitOptions{Notify: "notify.test"}); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(15 * time.Second); err != nil {
			t.Fatalf("no notification: %v", err)
		}
	})

	for _, c := range d.clients() {
		c.expectClean(t)
	}
}

// TestRolesDenied checks each forbidden action is refused by the server.
// Denied publishes and subscriptions are reported asynchronously, so each
// case waits for the permission-violation error naming its subject.
func TestRolesDenied(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byRole := map[string]*client{}
	for _, c := range d.clients() {
		byRole[c.role] = c
	}
	type action func(t *testing.T, c *client)
	publish := func(subj string) action {
		return func(t *testing.T, c *client) {
			if err := c.Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, subj)
		}
	}
	request := func(subj string) action {
		return func(t *testing.T, c *client) {
			_, err := c.Request(subj, []byte(`{"text":"hello world"}`), time.Second)
			if err == nil {
				t.Fatalf("request to %s answered", subj)
			}
			c.expectDenied(t, subj)
		}
	}
	subscribe := func(subj string) action {
		return func(t *testing.T, c *client) {
			sub, err := c.SubscribeSync(subj)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			c.expectDenied(t, subj)
		}
	}
	queueSubscribe := func(subj, queue string) action {
		return func(t *testing.T, c *client) {
			sub, err := c.QueueSubscribeSync(subj, queue)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			c.expectDenied(t, subj)
		}
	}
	cases := []struct {
		name string
		role string
		do   action
	}{
		{"runner publishes a job", "runner", publish("jobs.language_detection")},
		{"runner subscribes to run.> outside its queue group", "runner", subscribe("run.>")},
		{"runner subscribes to run.x without a queue group", "runner", subscribe("run.language_detection")},
		{"runner joins another queue group", "runner", queueSubscribe("run.language_detection", "thieves")},
		{"runner reads the controller's inbox", "runner", subscribe("_INBOX_controller.>")},
		{"runner forges a reply to an inbox", "runner", publish("_INBOX_controller.forged")},
		{"runner calls another runner", "runner", request("run.language_detection")},
		{"runner writes a result", "runner", publish("$KV.results.forged")},
		{"runner provisions the discovery bucket", "runner", publish("$JS.API.STREAM.CREATE.KV_discovery")},
		{"runner reads jobs", "runner", publish("$JS.API.CONSUMER.CREATE.JOBS")},
		{"producer calls run.x", "producer", request("run.language_detection")},
		{"producer serves run.x", "producer", queueSubscribe("run.language_detection", "runners")},
		{"producer reads the runner's inbox", "producer", subscribe("_INBOX_runner.>")},
		{"producer reads the default inbox", "producer", subscribe("_INBOX.>")},
		{"producer forges a result", "producer", publish("$KV.results.forged")},
		{"producer writes discovery", "producer", publish("$KV.discovery.language_detection.fake")},
		{"producer reads jobs", "producer", publish("$JS.API.CONSUMER.CREATE.JOBS")},
		{"producer reads dead letters", "producer", publish("$JS.API.CONSUMER.CREATE.DEAD")},
		{"producer deletes a stream", "producer", publish("$JS.API.STREAM.DELETE.JOBS")},
		{"producer writes a dead letter", "producer", publish("dead.language_detection")},
		{"controller writes a discovery key", "controller", publish("$KV.discovery.language_detection.fake")},
		{"controller publishes a job", "controller", publish("jobs.language_detection")},
		{"controller creates a stream", "controller", publish("$JS.API.STREAM.CREATE.EVIL")},
		{"controller deletes JOBS", "controller", publish("$JS.API.STREAM.DELETE.JOBS")},
		{"controller serves run.x", "controller", queueSubscribe("run.language_detection", "runners")},
		{"controller reads the producer's inbox", "controller", subscribe("_INBOX_producer.>")},
		{"controller publishes outside notify.>", "controller", publish("anything.else")},
		{"admin reads the runner's inbox", "admin", subscribe("_INBOX_runner.>")},
		{"admin forges a reply into the controller's inbox", "admin", publish("_INBOX_controller.forged")},
		{"admin reads run.x", "admin", subscribe("run.language_detection")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh connection per case: the error list holds this case only.
			c := connect(t, d.url, tc.role)
			tc.do(t, c)
		})
	}

	t.Run("producer's kv put through JetStream fails", func(t *testing.T) {
		c := connect(t, d.url, "producer")
		kv, err := c.js(t).KeyValue(ctx, controller.ResultsBucket)
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := kv.Put(pctx, "forged", []byte(`{}`)); err == nil {
			t.Fatal("producer wrote a result")
		}
		c.expectDenied(t, "$KV.results.forged")
	})

	t.Run("controller cannot provision", func(t *testing.T) {
		c := connect(t, d.url, "controller")
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := controller.Provision(pctx, c.js(t), controller.StoreConfig{}); err == nil {
			t.Fatal("controller provisioned the streams")
		}
	})

	t.Run("runner without WithoutProvisioning fails to start", func(t *testing.T) {
		c := connect(t, d.url, "runner")
		alg, err := languagedetection.New()
		if err != nil {
			t.Fatal(err)
		}
		r, err := runner.New(c.Conn, []*runner.Algorithm{alg})
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		defer rcancel()
		if err := r.Run(rctx); err == nil {
			t.Fatal("runner provisioned the discovery bucket")
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		nc, err := nats.Connect(d.url)
		if err == nil {
			nc.Close()
			t.Fatal("anonymous connection accepted")
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		nc, err := nats.Connect(d.url, nats.UserInfo("producer", "guess"))
		if err == nil {
			nc.Close()
			t.Fatal("wrong password accepted")
		}
	})

	t.Run("default inbox prefix gets no replies", func(t *testing.T) {
		c := connect(t, d.url, "producer", nats.CustomInboxPrefix("_INBOX"))
		js := c.js(t)
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		if _, err := js.KeyValue(sctx, controller.ResultsBucket); err == nil {
			t.Fatal("a client on the shared _INBOX prefix got a reply")
		}
	})
}

// TestConfig checks settings of nats.conf that no client action shows.
func TestConfig(t *testing.T) {
	setPasswords(t)
	opts := loadConf(t, "nats.conf")
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("want JetStream with sync_interval always, got jetstream=%v sync_always=%v", opts.JetStream, opts.SyncAlways)
	}
	if opts.StoreDir == "" {
		t.Error("no JetStream store dir")
	}
	if opts.MaxPayload < 400*1024 {
		t.Errorf("max_payload %d is below a 100 000 character language_detection job", opts.MaxPayload)
	}
	// The runner's reply window must outlast every built-in algorithm's
	// time budget: a reply after it expires is denied.
	longest := runner.DefaultTimeout
	for _, a := range builtins(t) {
		longest = max(longest, a.Spec().Timeout)
	}
	var found bool
	for _, u := range opts.Users {
		if u.Username != "runner" {
			continue
		}
		found = true
		rp := u.Permissions.Response
		if rp == nil || rp.MaxMsgs != 1 || rp.Expires <= longest {
			t.Errorf("runner allow_responses = %+v; want one reply within more than %s", rp, longest)
		}
	}
	if !found {
		t.Error("no runner user")
	}

	t.Run("a missing password stops the server from starting", func(t *testing.T) {
		t.Setenv("PRODUCER_PASSWORD", "") // restored after the test
		os.Unsetenv("PRODUCER_PASSWORD")
		_, err := server.ProcessConfigFile(filepath.Join("..", "nats.conf"))
		if err == nil || !strings.Contains(err.Error(), "PRODUCER_PASSWORD") {
			t.Fatalf("want an error naming PRODUCER_PASSWORD, got %v", err)
		}
	})
}

func builtins(t *testing.T) []*runner.Algorithm {
	t.Helper()
	var out []*runner.Algorithm
	ld, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	mc, err := memeclassifier.New(memeclassifier.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ii, err := imageinfo.New(imageinfo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return append(out, ld, mc, ii)
}
