package deploy

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/runner"
)

// startCluster runs ../nats-cluster.conf as three servers on loopback. Only
// what cannot be the same on one machine is changed: ports, store dirs and
// the route URLs (the file names nats-1..3 on port 6222).
func startCluster(t *testing.T) []string {
	t.Helper()
	_, urls := startClusterWith(t)
	return urls
}

// startClusterWith is startCluster returning the servers too, with
// adjust, if any, changing each server's options last.
func startClusterWith(t *testing.T, adjust ...func(*server.Options)) ([]*server.Server, []string) {
	t.Helper()
	var srvs []*server.Server
	setPasswords(t)
	// JetStream in a cluster needs its routes configured at start, so the
	// three route ports are picked before any server starts.
	var (
		urls   []string
		ports  []int
		routes []*url.URL
	)
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: l.Addr().String()})
		l.Close()
	}
	for i := 1; i <= 3; i++ {
		t.Setenv("NATS_SERVER_NAME", fmt.Sprintf("nats-%d", i))
		opts, err := server.ProcessConfigFile(filepath.Join("..", "nats-cluster.conf"))
		if err != nil {
			t.Fatalf("load nats-cluster.conf: %v", err)
		}
		if opts.ServerName != fmt.Sprintf("nats-%d", i) || opts.Cluster.Name != "pnp" || len(opts.Routes) != 3 {
			t.Fatalf("unexpected cluster settings: name %q cluster %q routes %v", opts.ServerName, opts.Cluster.Name, opts.Routes)
		}
		if !opts.SyncAlways || len(opts.Users) != len(roles) {
			t.Fatalf("nats.conf not included: sync always %v, %d users", opts.SyncAlways, len(opts.Users))
		}
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", ports[i-1]
		opts.Routes = routes
		opts.StoreDir = t.TempDir()
		opts.NoSigs, opts.NoLog = true, true
		for _, f := range adjust {
			f(opts)
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}
		urls = append(urls, s.ClientURL())
		srvs = append(srvs, s)
	}
	return srvs, urls
}

// provisionCluster provisions cfg as admin, retrying while the cluster
// elects its JetStream meta leader (after the routes are up).
func provisionCluster(ctx context.Context, t *testing.T, admin *client, cfg controller.StoreConfig) *controller.Store {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		store, err := controller.Provision(pctx, admin.js(t), cfg)
		pcancel()
		if err == nil {
			return store
		}
		if time.Now().After(deadline) {
			t.Fatalf("provision with replicas %d: %v", cfg.Replicas, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestClusterReplicas provisions with replicas 3 on the cluster variant and
// runs a job with the runner, controller and producer on different nodes.
func TestClusterReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	urls := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	admin := connect(t, strings.Join(urls, ","), "admin")
	// With the outputs buckets compose.yaml provisions: the account's
	// budget holds them too, at replicas 3.
	cfg := controller.StoreConfig{Replicas: 3, Discovery: discovery.Config{Replicas: 3, Update: true}, OutputAlgorithms: outputAlgorithms}
	store := provisionCluster(ctx, t, admin, cfg)
	for _, s := range []jetstream.Stream{store.Jobs(), store.Dead()} {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: want 3 replicas, got config %d cluster %+v", info.Config.Name, info.Config.Replicas, info.Cluster)
		}
	}
	for _, kv := range []jetstream.KeyValue{store.Results(), store.Registry().KeyValue()} {
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
			t.Errorf("bucket %s is not replicated 3 times", st.Bucket())
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	rc := connect(t, urls[1], "text_runner")
	alg, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(rc.Conn, []*runner.Algorithm{alg}, rc.runnerOptions(runner.WithoutProvisioning())...)
	if err != nil {
		t.Fatal(err)
	}
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(runCtx) }()
	cc := connect(t, urls[2], "controller")
	ctl, err := controller.New(cc.Conn, controller.Config{Bind: true})
	if err != nil {
		t.Fatal(err)
	}
	cdone := make(chan error, 1)
	go func() { cdone <- ctl.Run(runCtx) }()
	defer func() {
		stop()
		<-rdone
		<-cdone
	}()

	pc := connect(t, urls[0], "producer")
	ps, err := controller.OpenStore(ctx, pc.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ps.Submit(ctx, "language_detection", []byte(`{"text":"buenos días a todos, ¿cómo estáis?"}`), controller.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := ps.WaitResult(ctx, sub.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != controller.StatusSucceeded {
		t.Fatalf("want succeeded, got %+v", res)
	}
	for _, c := range []*client{admin, rc, cc, pc} {
		c.expectClean(t)
	}
}
