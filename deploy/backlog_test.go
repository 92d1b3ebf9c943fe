package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/jsz"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
)

// appAccount is the account of nats.conf, the acc= value of /jsz and the
// account of a KEDA nats-jetstream trigger in this deployment.
const appAccount = "APP"

// Under nats.conf's roles, the backlog of an algorithm with no runner is
// visible where KEDA's nats-jetstream scaler reads it — /jsz of account
// APP, not "$G", which holds no stream here — from its first job: the
// controller (under its own permissions) creates the consumer, 5 jobs read
// as lag 5; a runner starting drains them to lag 0. No role hits a
// permission violation.
func TestBacklogVisibleUnderNatsConf(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, url := startConfServer(t, func(o *server.Options) { o.HTTPHost, o.HTTPPort = "127.0.0.1", -1 })
	monitor := srv.MonitorAddr().String()
	admin := connect(t, url, "admin")
	if _, err := controller.Provision(ctx, admin.js(t), controller.StoreConfig{}); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	ctlC := connect(t, url, "controller")
	ctl, err := controller.New(ctlC.Conn, controller.Config{Bind: true})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
		ctlC.expectClean(t)
	}()

	const alg = "language_detection"
	producer := connect(t, url, "producer")
	store, err := controller.OpenStore(ctx, producer.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := store.Submit(ctx, alg, []byte(`{"text":"Guten Morgen, wie geht es dir heute?"}`), controller.SubmitOptions{ID: fmt.Sprintf("backlog-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	target := jsz.Target{Account: appAccount, Stream: jobs.JobsStream, Consumer: jobs.ConsumerName(alg)}
	read := func() jsz.Reading {
		t.Helper()
		r, err := jsz.Read(ctx, nil, target, monitor)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// The controller's pass runs every 5 s.
	var r jsz.Reading
	for deadline := time.Now().Add(30 * time.Second); !r.ConsumerFound && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r = read()
	}
	if !r.ConsumerFound || r.Lag != 5 || !r.Active(0) {
		t.Fatalf("with no runner: %+v, want the consumer %s with lag 5", r, target.Consumer)
	}
	if _, err := jsz.Read(ctx, nil, jsz.Target{Account: "$G", Stream: jobs.JobsStream, Consumer: target.Consumer}, monitor); !errors.Is(err, jsz.ErrStreamNotFound) {
		t.Errorf(`account "$G" under nats.conf: %v, want %v`, err, jsz.ErrStreamNotFound)
	}

	runnerC := connect(t, url, "text_runner")
	ld, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	rn, err := runner.New(runnerC.Conn, []*runner.Algorithm{ld}, runnerC.runnerOptions(runner.WithoutProvisioning())...)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rstop := context.WithCancel(ctx)
	rdone := make(chan error, 1)
	go func() { rdone <- rn.Run(rctx) }()
	defer func() {
		rstop()
		if err := <-rdone; err != nil {
			t.Errorf("runner: %v", err)
		}
		runnerC.expectClean(t)
	}()
	for i := range 5 {
		res, err := store.WaitResult(ctx, fmt.Sprintf("backlog-%d", i), nil)
		if err != nil || res.Status != controller.StatusSucceeded {
			t.Fatalf("backlog-%d: %v %+v", i, err, res)
		}
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r = read(); r.ConsumerFound && r.Lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the runner drained the jobs: %+v, want lag 0", r)
		}
	}
	producer.expectClean(t)
}

// In a cluster KEDA's scaler reads the consumer from its leader's
// monitoring endpoint. With JOBS replicated 3 times, the backlog of an
// algorithm with no runner reads as lag 5 from the server that leads its
// consumer, found as the scaler finds it (cluster_size, then each node's
// /varz server_name against the consumer's cluster.leader).
func TestBacklogFromConsumerLeaderInCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	srvs, urls := startClusterWith(t, func(o *server.Options) { o.HTTPHost, o.HTTPPort = "127.0.0.1", -1 })
	var monitors []string
	for _, s := range srvs {
		monitors = append(monitors, s.MonitorAddr().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := connect(t, strings.Join(urls, ","), "admin")
	provisionCluster(ctx, t, admin, controller.StoreConfig{Replicas: 3, Discovery: discovery.Config{Replicas: 3, Update: true}})

	cc := connect(t, urls[2], "controller")
	ctl, err := controller.New(cc.Conn, controller.Config{Bind: true})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
		cc.expectClean(t)
	}()
	pc := connect(t, urls[0], "producer")
	ps, err := controller.OpenStore(ctx, pc.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const alg = "language_detection"
	for i := range 5 {
		if _, err := ps.Submit(ctx, alg, []byte(`{"text":"bonjour à tous, comment allez-vous ?"}`), controller.SubmitOptions{ID: fmt.Sprintf("c-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	target := jsz.Target{Account: appAccount, Stream: jobs.JobsStream, Consumer: jobs.ConsumerName(alg)}
	var r jsz.Reading
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if r, err = jsz.Read(ctx, nil, target, monitors...); err != nil {
			t.Fatal(err)
		}
		if r.ConsumerFound && r.Server != "" && r.Lag == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reading %+v, want lag 5 read from the consumer's leader", r)
		}
	}
	if r.ClusterSize != 3 || r.Server != r.Leader || !strings.HasPrefix(r.Leader, "nats-") {
		t.Errorf("reading %+v: want cluster size 3, read from the leader", r)
	}
	pc.expectClean(t)
}
