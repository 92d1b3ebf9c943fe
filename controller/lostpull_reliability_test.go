package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/runner"
)

// proxy forwards TCP connections to target until cut, which closes them
// all and refuses new ones until heal.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cutOff bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cutOff {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.cutOff = false
	p.mu.Unlock()
}

// isolatable is three clustered JetStream servers; n1 reaches n2 and n3
// only through proxies, so a test can cut n1 off the cluster and back
// while n1 and its clients stay up.
type isolatable struct {
	srvs    []*server.Server
	urls    []string
	proxies []*proxy
}

func startIsolatable(t *testing.T) *isolatable {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	route := func(addr string) string { return "nats-route://" + addr }
	local := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	// proxies[2] leads to n1, which advertises it: a route to n1 that
	// n2 or n3 make by themselves after a cut goes through it too.
	c := &isolatable{proxies: []*proxy{startProxy(t, local(1)), startProxy(t, local(2)), startProxy(t, local(0))}}
	routes := [][]string{
		{route(c.proxies[0].addr()), route(c.proxies[1].addr())},
		{route(local(2))},
		{route(local(1))},
	}
	for i := range 3 {
		advertise := ""
		if i == 0 {
			advertise = c.proxies[2].addr()
		}
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "pnp", Host: "127.0.0.1", Port: ports[i],
				NoAdvertise: true, Advertise: advertise, PoolSize: -1},
			Routes: server.RoutesFromStr(strings.Join(routes[i], ",")),
			NoSigs: true, NoLog: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server n%d not ready", i+1)
		}
		c.srvs = append(c.srvs, s)
		c.urls = append(c.urls, s.ClientURL())
	}
	t.Cleanup(func() {
		for _, s := range c.srvs {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	eventually(t, 10*time.Second, func() bool { return c.srvs[0].NumRoutes() == 2 }, "n1 not routed to the cluster")
	return c
}

func (c *isolatable) isolate(t *testing.T) {
	for _, p := range c.proxies {
		p.cut()
	}
	eventually(t, 10*time.Second, func() bool {
		return c.srvs[0].NumRoutes() == 0 && c.srvs[1].NumRoutes() == 1 && c.srvs[2].NumRoutes() == 1
	}, "n1 not cut off")
}

func (c *isolatable) rejoin(t *testing.T) {
	for _, p := range c.proxies {
		p.heal()
	}
	eventually(t, 15*time.Second, func() bool { return c.srvs[0].NumRoutes() == 2 }, "n1 not back in the cluster")
}

func connectTo(t *testing.T, name string, urls ...string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.Timeout(2*time.Second), errorsTo(t, name))
	if err != nil {
		t.Fatalf("connect %v: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// When the server holding the controller's pull request drops it without
// the controller's connection going down, nothing ever tells the iterator:
// no status, no heartbeat check (armed only inside one 250 ms Next call),
// no reconnect. In production that is the JOBS consumer leader SIGKILLed
// while the controller is connected to another node; here the leader drops
// it, as it does silently, while the controller's node is cut off the
// cluster and a job arrives. The iterator used to wait forever for the
// batch it believed pending, and every later job stayed in JOBS. The
// controller now notices jobs pending while it idles and renews the
// iterator.
func TestLostPullRequestRecoversReliability(t *testing.T) {
	// Registered first, so restored after the controller stopped.
	t.Cleanup(controller.SetStallCheck(200*time.Millisecond, time.Second))
	cl := startIsolatable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	nc := connectTo(t, "test client", cl.urls[1], cl.urls[2])
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	scfg := controller.StoreConfig{ResultHistory: 64, Replicas: 3}
	var store *controller.Store
	eventually(t, 30*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		store, err = controller.Provision(pctx, js, scfg)
		return err == nil
	}, "cannot provision on the cluster")
	// The consumer exists before the controller starts so that its leader
	// can be moved off n1, the controller's node.
	name := controller.ConsumerName("lost")
	cons, err := js.CreateOrUpdateConsumer(ctx, controller.JobsStream, jetstream.ConsumerConfig{
		Durable:       name,
		FilterSubject: controller.JobsSubjectPrefix + "lost",
		AckPolicy:     jetstream.AckExplicitPolicy,
		Replicas:      3,
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() bool {
		info, err := cons.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		if info.Cluster.Leader != "n1" {
			return true
		}
		// To n2 by name: a plain stepdown may elect n1 again, round after
		// round, on a loaded machine.
		_, _ = nc.Request(fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", controller.JobsStream, name), []byte(`{"placement":{"preferred":"n2"}}`), 2*time.Second)
		return false
	}, "the consumer's leader stays on n1")

	rnc := connectTo(t, "runner", cl.urls[0])
	// The store is provisioned above: the runner only binds to it, with no
	// stream updates for a cluster still settling its leaders.
	r, err := runner.New(rnc, []*runner.Algorithm{echo(t, "lost", nil)}, runner.WithDrainTimeout(2*time.Second), runner.WithoutProvisioning())
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		_ = r.Run(rctx)
	}()
	t.Cleanup(func() { rcancel(); <-rdone })
	select {
	case <-r.Started():
	case <-time.After(30 * time.Second):
		t.Fatal("runner did not start")
	}

	cfg := fastConfig(t)
	cfg.Store = scfg
	cnc := connectTo(t, "controller", cl.urls[0])
	c, err := controller.New(cnc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan struct{})
	go func() {
		defer close(cdone)
		_ = c.Run(cctx)
	}()
	t.Cleanup(func() { ccancel(); <-cdone })
	select {
	case <-c.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("controller not ready")
	}

	succeeded := func(id string) bool {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		res, err := store.Result(rctx, id)
		return err == nil && res.Status == controller.StatusSucceeded
	}
	submit := func(id string, n int) {
		eventually(t, 20*time.Second, func() bool {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := store.Submit(sctx, "lost", fmt.Appendf(nil, `{"n":%d}`, n), controller.SubmitOptions{ID: id})
			return err == nil
		}, "cannot submit "+id)
	}
	submit("before", 0)
	eventually(t, 20*time.Second, func() bool { return succeeded("before") }, "job before the cut did not succeed")
	// The controller's iterator has a pull request waiting on the leader.
	eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting > 0
	}, "no pull request waiting")

	cl.isolate(t)
	// The leader finds no interest in the request's reply subject when it
	// has a job for it, and drops the request without a word.
	submit("after-0", 0)
	eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting == 0 && info.NumPending == 1
	}, "the leader kept the pull request")
	cl.rejoin(t)
	if cnc.Reconnects != 0 {
		t.Fatalf("the controller's connection reconnected %d times; the test needs it up throughout", cnc.Reconnects)
	}

	const n = 4
	for i := 1; i <= n; i++ {
		submit(fmt.Sprintf("after-%d", i), i)
	}
	// Generous: on a loaded machine the rejoined cluster answers 503 for
	// seconds, and jobs a replaced iterator had received come back after
	// the ack wait. Without a renewal they never finish.
	eventually(t, 60*time.Second, func() bool {
		for i := 0; i <= n; i++ {
			if !succeeded(fmt.Sprintf("after-%d", i)) {
				return false
			}
		}
		return true
	}, "jobs submitted after the pull request was lost never finished")
}
