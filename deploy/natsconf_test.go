package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	imageinfo "github.com/pnpworker/pnpworker/algo/image_info"
	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

// roles are the users nats.conf defines, each with its password variable.
var roles = []string{"meme_runner", "text_runner", "py_runner", "controller", "producer", "admin", "gateway"}

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
	_, url := startConfServer(t)
	return url
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

// appAPIPrefix is where a runner team's account imports APP's JetStream
// API (nats.conf; pnp runner --js-api-prefix).
const appAPIPrefix = "$JS.APP.API"

// runnerRole reports whether role is a runner team's user, in an account
// of its own that reaches JetStream under appAPIPrefix.
func runnerRole(role string) bool { return strings.HasSuffix(role, "_runner") }

// asPublished is the subject role publishes to reach subject s of APP: a
// runner team's user reaches APP's JetStream API and key-value puts under
// appAPIPrefix (its account's imports), object chunks as they are.
func asPublished(role, s string) string {
	if !runnerRole(role) {
		return s
	}
	if rest, ok := strings.CutPrefix(s, "$JS.API."); ok {
		return appAPIPrefix + "." + rest
	}
	if strings.HasPrefix(s, "$KV.") {
		return appAPIPrefix + "." + s
	}
	return s
}

func (c *client) js(t *testing.T) jetstream.JetStream {
	t.Helper()
	var (
		js  jetstream.JetStream
		err error
	)
	if runnerRole(c.role) {
		js, err = jetstream.NewWithAPIPrefix(c.Conn, appAPIPrefix)
	} else {
		js, err = jetstream.New(c.Conn)
	}
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// runnerOptions are opts with, for a runner team's user, the JetStream API
// prefix of its account first.
func (c *client) runnerOptions(opts ...runner.Option) []runner.Option {
	if !runnerRole(c.role) {
		return opts
	}
	return append([]runner.Option{runner.WithJetStreamAPIPrefix(appAPIPrefix)}, opts...)
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
	c.expectViolation(t, `"`+subject+`"`)
}

// expectViolation waits until the server reported a permission violation
// whose text contains quoted (a subject in quotes, or the start of one).
// The server reports a violation within a round trip, so the 10 s bound is
// only ever reached when there is none.
func (c *client) expectViolation(t *testing.T, quoted string) {
	t.Helper()
	_ = c.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range c.violations() {
			if strings.Contains(v, quoted) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: no permission violation for %s; got %v", c.role, quoted, c.violations())
}

// expectDeniedCall runs call — a client operation that waits for a reply
// the server will not deliver, because the request it publishes is denied —
// until the permission violation for subject (quoted, or the start of it
// when prefix is set) arrives, then cancels it and requires it to have
// failed. It waits for the server's report, not for a timeout.
func (c *client) expectDeniedCall(t *testing.T, subject string, prefix bool, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	quoted := `"` + subject + `"`
	if prefix {
		quoted = `"` + subject
	}
	c.expectViolation(t, quoted)
	cancel()
	if err := <-done; err == nil {
		t.Fatalf("%s: the call publishing to %s succeeded", c.role, subject)
	}
}

// expectNeverStarts runs r until the server reports the permission
// violation quoted names, then stops it: r must not have started, must
// stop when asked, and must have registered nothing. (A runner subscribes
// before its buckets are provisioned, and a refused JetStream API call
// fails only at its timeout; stopping it first, Run may return nil.)
func (c *client) expectNeverStarts(t *testing.T, r *runner.Runner, quoted string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	c.expectViolation(t, quoted)
	select {
	case <-r.Started():
		t.Fatalf("%s: the runner started", c.role)
	default:
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the runner did not stop within 30s", c.role)
	}
	select {
	case <-r.Started():
		t.Fatalf("%s: the runner started", c.role)
	default:
	}
	if n := len(r.Instances()); n != 0 {
		t.Fatalf("%s: %d registrations", c.role, n)
	}
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
// the admin, a runner serving language_detection (user text_runner), and a
// controller, each under its own user, as compose.yaml runs them.
type deployment struct {
	url                                   string
	admin, runnerC, controllerC, producer *client
	store                                 *controller.Store
	runner                                *runner.Runner
	// metrics is the controller's registry.
	metrics *prometheus.Registry
}

func startDeployment(t *testing.T) *deployment {
	t.Helper()
	return startDeploymentWith(t, controller.StoreConfig{})
}

// startDeploymentWith is startDeployment with the admin provisioning cfg.
func startDeploymentWith(t *testing.T, cfg controller.StoreConfig) *deployment {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &deployment{url: startServer(t), metrics: prometheus.NewRegistry()}

	d.admin = connect(t, d.url, "admin")
	if cfg.OutputAlgorithms == nil {
		cfg.OutputAlgorithms = outputAlgorithms // as compose.yaml provisions
	}
	if _, err := controller.Provision(ctx, d.admin.js(t), cfg); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}

	d.runnerC = connect(t, d.url, "text_runner")
	alg, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	d.runner, err = runner.New(d.runnerC.Conn, []*runner.Algorithm{alg}, d.runnerC.runnerOptions(runner.WithoutProvisioning())...)
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- d.runner.Run(ctx) }()

	d.controllerC = connect(t, d.url, "controller")
	ctl, err := controller.New(d.controllerC.Conn, controller.Config{Bind: true, NoRunnerDelay: 200 * time.Millisecond, Metrics: d.metrics})
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
		// pnp jobs ls: batched direct gets backwards through KV_results.
		page, err := d.store.ListJobs(ctx, jobs.ListOptions{Algorithm: "language_detection", Status: jobs.StatusSucceeded, Limit: 10})
		if err != nil || !slices.ContainsFunc(page.Jobs, func(r jobs.Result) bool { return r.JobID == sub.ID }) {
			t.Fatalf("producer lists jobs: %v %+v", err, page)
		}
	})

	t.Run("producer is told of an unknown algorithm", func(t *testing.T) {
		err := d.store.CheckKnown(ctx, "language_detecton")
		var unknown *jobs.UnknownAlgorithmError
		if !errors.As(err, &unknown) || !slices.Contains(unknown.Suggestions, "language_detection") {
			t.Fatalf("CheckKnown: %v, want an unknown algorithm suggesting language_detection", err)
		}
		if err := d.store.CheckKnown(ctx, "language_detection"); err != nil {
			t.Fatalf("CheckKnown of a served algorithm: %v", err)
		}
		d.producer.expectClean(t)
	})

	t.Run("py_runner serves the Python worker of compose.yaml", func(t *testing.T) {
		py := "/usr/bin/python3"
		if _, err := os.Stat(py); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("no %s (CI installs it)", py)
			}
			t.Skipf("no %s", py)
		}
		c := connect(t, d.url, "py_runner")
		w, err := worker.New(c.Conn, worker.Config{
			Command:       []string{py, "../sdk/python/pnpworker.py", "../examples/python/runner_adapter.py"},
			RunnerOptions: c.runnerOptions(runner.WithoutProvisioning()),
		})
		if err != nil {
			t.Fatal(err)
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		}()
		for _, job := range []struct{ alg, in, want string }{
			{"text_stats", `{"text":"to be or not to be"}`, `"words":6`},
			{"iris_species", `{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}`, `"species":"setosa"`},
		} {
			sub, err := d.store.Submit(ctx, job.alg, []byte(job.in), controller.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := d.store.WaitResult(ctx, sub.ID, nil)
			if err != nil || res.Status != controller.StatusSucceeded || !strings.Contains(string(res.Output), job.want) {
				t.Fatalf("%s: %+v (%s), %v; want succeeded with %s", job.alg, res, res.Output, err, job.want)
			}
		}
		c.expectClean(t)
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
		if msg.Header.Get(protocol.HeaderInstance) == "" {
			t.Fatalf("reply without %s header: %v %s", protocol.HeaderInstance, msg.Header, msg.Data)
		}
	})

	t.Run("controller reads the queue depths for its metrics", func(t *testing.T) {
		var up, dead float64
		natstest.Eventually(t, 10*time.Second, func() bool {
			fams, err := d.metrics.Gather()
			if err != nil {
				t.Fatal(err)
			}
			up, dead = -1, -1
			for _, f := range fams {
				for _, m := range f.GetMetric() {
					switch f.GetName() {
					case "pnp_controller_queue_info_up":
						up = m.GetGauge().GetValue()
					case "pnp_controller_queue_dead":
						dead = m.GetGauge().GetValue()
					}
				}
			}
			return up == 1 && dead >= 1
		}, "the controller cannot read the queue depths under its nats.conf permissions (pnp_controller_queue_info_up, pnp_controller_queue_dead)")
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

	t.Run("meme runner serves its own algorithm", func(t *testing.T) {
		c := connect(t, d.url, "meme_runner")
		alg, err := imageinfo.New(imageinfo.Config{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := runner.New(c.Conn, []*runner.Algorithm{alg}, c.runnerOptions(runner.WithoutProvisioning())...)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		defer func() {
			rcancel()
			if err := <-done; err != nil {
				t.Errorf("meme runner: %v", err)
			}
			c.expectClean(t) // deregistration and drain included
		}()
		select {
		case <-r.Started():
		case err := <-done:
			t.Fatalf("meme runner stopped: %v", err)
		case <-ctx.Done():
			t.Fatal("meme runner did not start under its permissions")
		}
		msg, err := d.controllerC.Request("run.image_info", []byte(`{"image_url":"data:,"}`), 10*time.Second)
		if err != nil {
			t.Fatalf("controller calls run.image_info: %v", err)
		}
		if msg.Header.Get(protocol.HeaderInstance) == "" {
			t.Fatalf("reply without %s header: %v %s", protocol.HeaderInstance, msg.Header, msg.Data)
		}
		if _, err := d.admin.Request("$SRV.INFO.image_info", nil, 5*time.Second); err != nil {
			t.Fatalf("meme runner does not answer its control plane: %v", err)
		}
		c.expectClean(t)
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

	t.Run("data by reference: producer uploads, runner reads and writes its outputs, controller writes outputs, controller and producer read them", func(t *testing.T) {
		data := bytes.Repeat([]byte("input "), 300_000) // 1.8 MB, over a message
		ref, err := d.store.PutInput(ctx, "deploy/in.bin", bytes.NewReader(data))
		if err != nil {
			t.Fatalf("producer uploads: %v", err)
		}
		got, err := objref.Read(ctx, d.runnerC.js(t), ref, 0)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("runner reads %s: %d bytes, %v", ref, len(got), err)
		}
		for _, w := range []struct {
			c      *client
			bucket string
		}{{d.runnerC, objref.OutputsBucketFor("language_detection")}, {d.controllerC, controller.OutputsBucket}} {
			c := w.c
			out, err := objref.Put(ctx, c.js(t), w.bucket, "deploy/"+c.role, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s writes an output: %v", c.role, err)
			}
			res := controller.Result{JobID: "x", OutputRef: out.String()}
			if got, err := d.store.Output(ctx, res, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("producer reads %s: %d bytes, %v", out, len(got), err)
			}
			if got, err := objref.Read(ctx, d.controllerC.js(t), out, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("controller reads %s: %d bytes, %v", out, len(got), err)
			}
		}
	})

	for _, c := range d.clients() {
		c.expectClean(t)
	}
}

// TestRolesDenied checks each forbidden action is refused by the server.
// Denied publishes and subscriptions are reported asynchronously, so each
// case waits for the permission-violation error naming its subject; calls
// that wait for a reply are cancelled once it arrived, never left to time
// out.
func TestRolesDenied(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type action func(t *testing.T, c *client)
	// Subjects are APP's: a runner team's user publishes them as its
	// account imports them (asPublished), unless raw.
	rawPublish := func(subj string) action {
		return func(t *testing.T, c *client) {
			if err := c.Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, subj)
		}
	}
	publish := func(subj string) action {
		return func(t *testing.T, c *client) { rawPublish(asPublished(c.role, subj))(t, c) }
	}
	// publishMsg publishes a message with a body and headers, e.g. a
	// JetStream API request whose configuration would do harm.
	publishMsg := func(subj, body string) action {
		return func(t *testing.T, c *client) {
			subj := asPublished(c.role, subj)
			if err := c.PublishMsg(&nats.Msg{Subject: subj, Data: []byte(body)}); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, subj)
		}
	}
	request := func(subj string) action {
		return func(t *testing.T, c *client) {
			c.expectDeniedCall(t, subj, false, func(ctx context.Context) error {
				_, err := c.RequestWithContext(ctx, subj, []byte(`{"text":"hello world"}`))
				return err
			})
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
	// A push consumer on the results stream that would deliver every
	// result into a runner's request subject.
	pushIntoRun := `{"stream_name":"KV_results","config":{"name":"spy","deliver_subject":"run.meme_classifier","deliver_policy":"all","ack_policy":"none"}}`
	cases := []struct {
		name string
		role string
		do   action
	}{
		{"runner publishes a job", "text_runner", publish("jobs.language_detection")},
		{"runner subscribes to run.> outside its queue group", "text_runner", subscribe("run.>")},
		{"runner subscribes to run.x without a queue group", "text_runner", subscribe("run.language_detection")},
		{"runner joins another queue group", "text_runner", queueSubscribe("run.language_detection", "thieves")},
		{"runner serves every algorithm in the queue group", "text_runner", queueSubscribe("run.>", "runners")},
		{"text runner serves meme_classifier", "text_runner", queueSubscribe("run.meme_classifier", "runners")},
		{"meme runner serves language_detection", "meme_runner", queueSubscribe("run.language_detection", "runners")},
		{"py runner serves language_detection", "py_runner", queueSubscribe("run.language_detection", "runners")},
		{"py runner registers language_detection", "py_runner", publish("$KV.discovery.language_detection.fake")},
		{"text runner serves iris_species", "text_runner", queueSubscribe("run.iris_species", "runners")},
		{"py runner reads the text runner's inbox", "py_runner", subscribe("_INBOX_text_runner.>")},
		{"meme runner registers language_detection", "meme_runner", publish("$KV.discovery.language_detection.fake")},
		{"meme runner deletes a language_detection key", "meme_runner", publish("$KV.discovery.language_detection.x")},
		{"meme runner answers language_detection's control plane", "meme_runner", subscribe("$SRV.PING.language_detection")},
		{"meme runner reads the text runner's inbox", "meme_runner", subscribe("_INBOX_text_runner.>")},
		{"runner reads the controller's inbox", "text_runner", subscribe("_INBOX_controller.>")},
		{"runner forges a reply to an inbox", "text_runner", publish("_INBOX_controller.forged")},
		{"runner calls another runner", "text_runner", request("run.language_detection")},
		{"runner writes a result", "text_runner", publish("$KV.results.forged")},
		{"runner writes a result in its account's own terms", "text_runner", rawPublish("$KV.results.forged")},
		{"runner reads a result", "meme_runner", publish("$JS.API.DIRECT.GET.KV_results.$KV.results.x")},
		{"meme runner reads language_detection's registrations", "meme_runner", publish("$JS.API.DIRECT.GET.KV_discovery.$KV.discovery.language_detection.x")},
		{"meme runner calls language_detection", "meme_runner", rawPublish("run.language_detection")},
		{"meme runner calls language_detection's pinned subject", "meme_runner", rawPublish("run.language_detection.v1_0_0")},
		{"meme runner serves language_detection's pinned subject", "meme_runner", queueSubscribe("run.language_detection.*", "runners")},
		{"runner reaches APP's JetStream unprefixed", "meme_runner", rawPublish("$JS.API.STREAM.INFO.KV_discovery")},
		{"runner provisions the discovery bucket", "text_runner", publish("$JS.API.STREAM.CREATE.KV_discovery")},
		{"runner reads jobs", "text_runner", publish("$JS.API.CONSUMER.CREATE.JOBS")},
		{"producer calls run.x", "producer", request("run.language_detection")},
		{"producer serves run.x", "producer", queueSubscribe("run.language_detection", "runners")},
		{"producer reads the runner's inbox", "producer", subscribe("_INBOX_text_runner.>")},
		{"producer reads the default inbox", "producer", subscribe("_INBOX.>")},
		{"producer forges a result", "producer", publish("$KV.results.forged")},
		{"producer writes discovery", "producer", publish("$KV.discovery.language_detection.fake")},
		{"producer reads jobs", "producer", publish("$JS.API.CONSUMER.CREATE.JOBS")},
		{"producer reads dead letters", "producer", publish("$JS.API.CONSUMER.CREATE.DEAD")},
		{"producer pushes results into run.x", "producer", publishMsg("$JS.API.CONSUMER.CREATE.KV_results.spy", pushIntoRun)},
		{"producer creates an unnamed consumer on results", "producer", publishMsg("$JS.API.CONSUMER.CREATE.KV_results", `{"stream_name":"KV_results","config":{"ack_policy":"none"}}`)},
		{"producer creates a durable consumer on results", "producer", publishMsg("$JS.API.CONSUMER.CREATE.KV_results.spy", `{"stream_name":"KV_results","config":{"name":"spy","durable_name":"spy","ack_policy":"none"}}`)},
		{"producer creates a durable on results, old API", "producer", publishMsg("$JS.API.CONSUMER.DURABLE.CREATE.KV_results.spy", `{"stream_name":"KV_results","config":{"durable_name":"spy","ack_policy":"none"}}`)},
		{"producer deletes a stream", "producer", publish("$JS.API.STREAM.DELETE.JOBS")},
		{"producer writes a dead letter", "producer", publish("dead.language_detection")},
		{"controller writes a discovery key", "controller", publish("$KV.discovery.language_detection.fake")},
		{"controller publishes a job", "controller", publish("jobs.language_detection")},
		{"controller creates a stream", "controller", publish("$JS.API.STREAM.CREATE.EVIL")},
		{"controller deletes JOBS", "controller", publish("$JS.API.STREAM.DELETE.JOBS")},
		{"controller serves run.x", "controller", queueSubscribe("run.language_detection", "runners")},
		{"controller reads the producer's inbox", "controller", subscribe("_INBOX_producer.>")},
		{"controller publishes outside notify.>", "controller", publish("anything.else")},
		{"runner writes an input", "meme_runner", publish("$O.inputs.C.forged")},
		{"runner deletes outputs", "text_runner", publish("$JS.API.STREAM.PURGE.OBJ_outputs")},
		{"runner creates a consumer on inputs", "meme_runner", publish("$JS.API.CONSUMER.CREATE.OBJ_inputs.x.$O.inputs.C.x")},
		{"producer writes an output", "producer", publish("$O.outputs.M.forged")},
		{"producer writes an algorithm's output", "producer", publish("$O.outputs_language_detection.M.forged")},
		{"producer writes an upload", "producer", publish("$O.uploads.C.forged")},
		{"runner writes the controller's outputs", "text_runner", publish("$O.outputs.M.forged")},
		{"runner writes another algorithm's outputs", "text_runner", publish("$O.outputs_meme_classifier.C.forged")},
		{"meme runner writes language_detection's outputs", "meme_runner", publish("$O.outputs_language_detection.M.forged")},
		{"runner purges its own outputs", "meme_runner", publish("$JS.API.STREAM.PURGE.OBJ_outputs_meme_classifier")},
		{"controller writes an algorithm's output", "controller", publish("$O.outputs_language_detection.C.forged")},
		{"controller purges outputs", "controller", publish("$JS.API.STREAM.PURGE.OBJ_outputs")},
		{"producer purges inputs", "producer", publish("$JS.API.STREAM.PURGE.OBJ_inputs")},
		{"producer creates a consumer on outputs", "producer", publish("$JS.API.CONSUMER.CREATE.OBJ_outputs.x.$O.outputs.C.x")},
		{"controller reads an input", "controller", publish("$JS.API.DIRECT.GET.OBJ_inputs.$O.inputs.M.x")},
		{"controller writes an input", "controller", publish("$O.inputs.C.forged")},
		{"admin reads the runner's inbox", "admin", subscribe("_INBOX_text_runner.>")},
		{"admin forges a reply into the controller's inbox", "admin", publish("_INBOX_controller.forged")},
		{"admin forges a reply into the meme runner's inbox", "admin", publish("_INBOX_meme_runner.forged")},
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
		c.expectDeniedCall(t, "$KV.results.forged", false, func(ctx context.Context) error {
			_, err := kv.Put(ctx, "forged", []byte(`{}`))
			return err
		})
	})

	t.Run("producer's kv watch through JetStream fails", func(t *testing.T) {
		c := connect(t, d.url, "producer")
		kv, err := c.js(t).KeyValue(ctx, controller.ResultsBucket)
		if err != nil {
			t.Fatal(err)
		}
		c.expectDeniedCall(t, "$JS.API.CONSUMER.CREATE.KV_results", true, func(ctx context.Context) error {
			w, err := kv.Watch(ctx, "some-job")
			if err == nil {
				_ = w.Stop()
			}
			return err
		})
	})

	t.Run("controller cannot provision", func(t *testing.T) {
		c := connect(t, d.url, "controller")
		// Provisioning starts with JetStream API calls the role may not
		// make ($JS.API.INFO, then stream creation).
		c.expectDeniedCall(t, "$JS.API.", true, func(ctx context.Context) error {
			_, err := controller.Provision(ctx, c.js(t), controller.StoreConfig{})
			return err
		})
	})

	t.Run("runner without WithoutProvisioning fails to start", func(t *testing.T) {
		c := connect(t, d.url, "text_runner")
		alg, err := languagedetection.New()
		if err != nil {
			t.Fatal(err)
		}
		r, err := runner.New(c.Conn, []*runner.Algorithm{alg}, c.runnerOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		// The runner tries to provision the discovery bucket, which its
		// user may not: the server refuses that JetStream API call, and
		// the runner never starts (nor registers).
		c.expectNeverStarts(t, r, `"`+asPublished(c.role, "$JS.API."))
	})

	t.Run("runner without its account's JetStream prefix fails to start", func(t *testing.T) {
		c := connect(t, d.url, "text_runner")
		alg, err := languagedetection.New()
		if err != nil {
			t.Fatal(err)
		}
		r, err := runner.New(c.Conn, []*runner.Algorithm{alg}, runner.WithoutProvisioning())
		if err != nil {
			t.Fatal(err)
		}
		// Its account has no JetStream of its own: binding to discovery
		// under $JS.API is refused, and the runner never starts.
		c.expectNeverStarts(t, r, `"$JS.API.STREAM.INFO.KV_discovery"`)
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
		// The reply subscription on the shared prefix is what is denied.
		c.expectDeniedCall(t, "_INBOX.", true, func(ctx context.Context) error {
			_, err := c.js(t).KeyValue(ctx, controller.ResultsBucket)
			return err
		})
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
	longest := protocol.DefaultTimeout
	for _, a := range builtins(t) {
		longest = max(longest, a.Spec().Timeout)
	}
	found := 0
	for _, u := range opts.Users {
		if !strings.HasSuffix(u.Username, "_runner") {
			continue
		}
		found++
		rp := u.Permissions.Response
		if rp == nil || rp.MaxMsgs != 1 || rp.Expires <= longest {
			t.Errorf("%s allow_responses = %+v; want one reply within more than %s", u.Username, rp, longest)
		}
	}
	if found != 3 {
		t.Errorf("want the users meme_runner, text_runner and py_runner, found %d runner users", found)
	}

	t.Run("account storage holds every stream's limit, three times", func(t *testing.T) {
		url := startServer(t)
		admin := connect(t, url, "admin")
		js := admin.js(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := js.AccountInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The defaults of pnp provision, with compose.yaml's
		// outputs_<algorithm> buckets, replicated 3 times in a cluster,
		// must be reservable with room left.
		sum := int64(controller.DefaultJobsMaxBytes + controller.DefaultDeadMaxBytes + controller.DefaultResultsMaxBytes + discovery.DefaultMaxBytes +
			2*controller.DefaultObjectsMaxBytes + // inputs and outputs
			controller.DefaultUploadsMaxBytes +
			int64(len(outputAlgorithms))*objref.DefaultAlgorithmOutputsMaxBytes + // as compose.yaml provisions
			rollout.DefaultMaxBytes + rollout.DefaultCompareMaxBytes + rollout.DefaultHistoryMaxBytes)
		if info.Limits.MaxStore < 3*sum || info.Limits.MaxStore > opts.JetStreamMaxStore {
			t.Errorf("account max_file %d: want at least 3 × %d (the default stream limits at replicas 3) and at most the server's %d", info.Limits.MaxStore, sum, opts.JetStreamMaxStore)
		}
		// max_bytes_required: a stream without max_bytes is refused, so no
		// stream can grow into another's reservation.
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "UNBOUNDED", Subjects: []string{"unbounded.>"}})
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10113 {
			t.Errorf("a stream without max_bytes: want error 10113 (max bytes required), got %v", err)
		}
	})

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

// TestFullJobsUnderNatsConf floods JOBS as the producer under nats.conf
// (account limits, max_bytes_required) until it is full. The producer gets
// ErrJobsFull; the runner's heartbeats, made with its own narrow user, keep
// renewing its key, and nobody sees a permission error or a failed write.
func TestFullJobsUnderNatsConf(t *testing.T) {
	d := startDeploymentWith(t, controller.StoreConfig{
		JobsMaxBytes: 2 << 20,
		// Heartbeats every second, so two renewals take two seconds.
		Discovery: discovery.Config{TTL: 3 * time.Second},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	body := []byte(`{"pad":"` + strings.Repeat("x", 32<<10) + `"}`)
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		_, full = d.store.Submit(ctx, "nobody_serves_this", body, controller.SubmitOptions{})
	}
	if !errors.Is(full, controller.ErrJobsFull) {
		t.Fatalf("want ErrJobsFull once JOBS holds 2 MiB, got %v", full)
	}

	// Read as admin: the producer may not read discovery.
	kv, err := d.admin.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	key := d.runner.Instances()[0]
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("the runner's key %s is gone after the flood: %v", key, err)
	}
	start := e.Revision()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatalf("the runner's key %s is gone: %v", key, err)
		}
		if e.Revision() >= start+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runner's key was not renewed twice in 20 s with JOBS full (revision %d)", e.Revision())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range d.clients() {
		c.expectClean(t)
	}
}

// TestDiscoveryRollupRecovers shows what nats.conf cannot prevent and the
// mitigation docs/DEPLOY.md describes: a runner user may put a message with
// `Nats-Rollup: all` on one of its own keys, which empties the whole
// discovery bucket (permissions cannot look at headers, and the bucket
// needs roll-ups for its expiry markers). Every runner registers again at
// its next heartbeat, so the bucket is whole again within TTL/3.
func TestDiscoveryRollupRecovers(t *testing.T) {
	d := startDeploymentWith(t, controller.StoreConfig{Discovery: discovery.Config{TTL: 3 * time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := d.admin.js(t).KeyValue(ctx, discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	key := d.runner.Instances()[0]
	if _, err := kv.Get(ctx, key); err != nil {
		t.Fatal(err)
	}
	// Refusing roll-ups on the bucket is not an option: its expiry
	// markers need them, and the server turns them back on.
	st, err := d.admin.js(t).Stream(ctx, "KV_"+discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowRollup = false
	updated, err := d.admin.js(t).UpdateStream(ctx, cfg)
	if err == nil && !updated.CachedInfo().Config.AllowRollup {
		t.Fatal("the server now accepts allow_rollup_hdrs: false with limit markers: use it for discovery and update docs/DEPLOY.md")
	}

	attacker := connect(t, d.url, "meme_runner")
	// In its team's account the key's subject is under the API prefix.
	msg := &nats.Msg{Subject: appAPIPrefix + ".$KV.discovery.meme_classifier.x", Data: []byte("{}"), Header: nats.Header{}}
	msg.Header.Set("Nats-Rollup", "all")
	if _, err := attacker.js(t).PublishMsg(ctx, msg); err != nil {
		t.Fatalf("roll-up: %v", err)
	}
	if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the roll-up left the text runner's key in place (err %v): the threat is gone, update docs/DEPLOY.md", err)
	}
	// Back within one heartbeat period (TTL/3 = 1 s here), polled.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := kv.Get(ctx, key); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the runner did not register again after the roll-up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestComposeMatchesNatsConf checks compose.yaml against nats.conf without
// docker: every service's NATS user exists, takes its password from
// <USER>_PASSWORD and its inbox prefix is _INBOX_<user>, runner services
// reach JetStream under their account's prefix, and every runner
// service's --algorithms (and the algorithms its --worker describes, asked
// of the SDK with --describe on the files deploy/python-worker.Dockerfile
// copies) are ones its user may serve (queue group runners) and register.
// A mismatch would only show as a runner that cannot start.
func TestComposeMatchesNatsConf(t *testing.T) {
	setPasswords(t)
	opts := loadConf(t, "nats.conf")
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	raw, err := os.ReadFile(filepath.Join("..", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type service struct{ user, password, inbox, jsPrefix, algorithms, worker, outputs string }
	services := map[string]*service{}
	var cur *service
	inServices := false
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case line == "services:":
			inServices = true
			continue
		case len(line) > 0 && line[0] != ' ' && line[0] != '#':
			inServices = false
		}
		if !inServices {
			continue
		}
		if strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && strings.HasSuffix(line, ":") {
			cur = &service{}
			services[strings.TrimSuffix(strings.TrimSpace(line), ":")] = cur
			continue
		}
		if cur == nil {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		switch k {
		case "NATS_USER":
			cur.user = v
		case "NATS_PASSWORD":
			cur.password = v
		case "NATS_INBOX_PREFIX":
			cur.inbox = v
		case "NATS_JS_API_PREFIX":
			cur.jsPrefix = v
		case "PNP_OUTPUT_ALGORITHMS":
			cur.outputs = v
		case "command":
			if i := strings.Index(v, `"--algorithms", "`); i >= 0 {
				rest := v[i+len(`"--algorithms", "`):]
				cur.algorithms = rest[:strings.IndexByte(rest, '"')]
			}
			if i := strings.Index(v, `"--worker", "`); i >= 0 {
				rest := v[i+len(`"--worker", "`):]
				cur.worker = rest[:strings.IndexByte(rest, '"')]
			}
		}
	}
	var provisioned []string
	if p := services["provision"]; p != nil && p.outputs != "" {
		provisioned = strings.Split(p.outputs, ",")
	}
	if !slices.Equal(provisioned, outputAlgorithms) {
		t.Errorf("provision's PNP_OUTPUT_ALGORITHMS %v, want %v (the buckets the tests in deploy/ provision)", provisioned, outputAlgorithms)
	}
	runners := 0
	for name, s := range services {
		if s.user == "" {
			continue
		}
		u, ok := users[s.user]
		if !ok {
			t.Errorf("service %s: user %q is not in nats.conf", name, s.user)
			continue
		}
		wantPw := strings.ToUpper(s.user) + "_PASSWORD"
		if !strings.HasPrefix(s.password, "${"+wantPw+":") {
			t.Errorf("service %s: password %s, want ${%s...}", name, s.password, wantPw)
		}
		if s.inbox != "_INBOX_"+s.user {
			t.Errorf("service %s: inbox prefix %q, want _INBOX_%s", name, s.inbox, s.user)
		}
		// A runner team's account reaches JetStream under appAPIPrefix
		// ("$$" is compose's escaped "$"); APP's roles under their own.
		wantPrefix := ""
		if runnerRole(s.user) {
			wantPrefix = strings.ReplaceAll(appAPIPrefix, "$", "$$")
		}
		if s.jsPrefix != wantPrefix {
			t.Errorf("service %s: NATS_JS_API_PREFIX %q, want %q", name, s.jsPrefix, wantPrefix)
		}
		if s.algorithms == "" {
			continue
		}
		runners++
		algs := strings.Split(s.algorithms, ",")
		if s.algorithms == "none" {
			algs = nil
		}
		if s.worker != "" {
			algs = append(algs, workerAlgorithms(t, s.worker)...)
		}
		if len(algs) == 0 {
			t.Errorf("service %s serves nothing", name)
		}
		for _, alg := range algs {
			if !slices.Contains(u.Permissions.Subscribe.Allow, "run."+alg+" runners") {
				t.Errorf("service %s serves %s, which user %s may not serve", name, alg, s.user)
			}
			if !slices.Contains(u.Permissions.Publish.Allow, asPublished(s.user, "$KV.discovery."+alg+".*")) {
				t.Errorf("service %s serves %s, which user %s may not register", name, alg, s.user)
			}
			checkOutputsBucket(t, users, name, s.user, alg, provisioned)
		}
	}
	if runners != 3 {
		t.Errorf("found %d runner services in compose.yaml, want 3 (meme-runner, text-runner, py-runner)", runners)
	}
}

// workerFiles are the files deploy/python-worker.Dockerfile copies into the
// image, by their path there.
var workerFiles = map[string]string{
	"/opt/pnp/pnpworker.py":             "sdk/python/pnpworker.py",
	"/opt/pnp/worker/runner_adapter.py": "examples/python/runner_adapter.py",
}

// workerAlgorithms runs a compose --worker command's SDK with --describe on
// this repository's copies of its files and returns the algorithms the
// worker serves.
func workerAlgorithms(t *testing.T, command string) []string {
	t.Helper()
	f := strings.Fields(command)
	if len(f) != 3 || !strings.HasPrefix(f[0], "python3") || workerFiles[f[1]] == "" || workerFiles[f[2]] == "" {
		t.Fatalf("--worker %q: want python3 with the SDK and a module the image holds (%v)", command, workerFiles)
	}
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no %s to describe the worker (CI installs it)", py)
		}
		t.Skipf("no %s to describe the worker %q", py, command)
	}
	out, err := exec.Command(py, filepath.Join("..", workerFiles[f[1]]), "--describe", filepath.Join("..", workerFiles[f[2]])).Output()
	if err != nil {
		t.Fatalf("describe %q: %v", command, err)
	}
	var hello struct {
		Algorithms []struct{ Name string } `json:"algorithms"`
	}
	if err := json.Unmarshal(out, &hello); err != nil {
		t.Fatalf("describe %q: %v\n%s", command, err, out)
	}
	var names []string
	for _, a := range hello.Algorithms {
		names = append(names, a.Name)
	}
	return names
}

// TestControllerMarksServedUnderNatsConf: the controller, bound under its
// own user, marks the algorithms its runners serve in bucket served (the
// expiry sweep reads the marks), with no permission violation.
func TestControllerMarksServedUnderNatsConf(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := d.admin.js(t).KeyValue(ctx, controller.ServedBucket)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		_, err := kv.Get(ctx, "language_detection")
		return err == nil
	}, "no served mark for language_detection")
	d.controllerC.expectClean(t)
}
