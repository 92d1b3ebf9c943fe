package capacity

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRoles checks the parts the benchmarks stand on: the roles start and
// report, the heartbeat role's instances reach both kinds of watcher, and
// the server's and the children's figures can be read.
func TestRoles(t *testing.T) {
	const instances = 40
	srv := startServer(t, false)
	hb := startChild(t, "heartbeat", urlEnv+"="+srv.url, instancesEnv+"=40", connsEnv+"=3", algsEnv+"=7")
	hb.waitFor(t, time.Minute, "registrations", func(r report) bool { return r.Ready && r.Records == instances })
	cache := startChild(t, "cache", urlEnv+"="+srv.url)
	watch := startChild(t, "watch", urlEnv+"="+srv.url)
	for _, c := range []*child{cache, watch} {
		r := c.waitFor(t, time.Minute, "the fleet", func(r report) bool { return r.Ready && r.Records == instances })
		if r.LoadMS <= 0 || r.HeapLive == 0 {
			t.Errorf("%s: load %.3f ms, live heap %d: want both positive", c.role, r.LoadMS, r.HeapLive)
		}
		u, err := procUsage(c.pid())
		if err != nil || u.RSS == 0 {
			t.Errorf("%s: usage %+v, %v", c.role, u, err)
		}
	}
	if v := srv.varz(t); v.InMsgs < instances || v.InBytes == 0 {
		t.Errorf("varz %+v: want at least the %d registrations in", v, instances)
	}
	rc := startChild(t, "runner", urlEnv+"="+srv.url)
	rc.waitFor(t, time.Minute, "ready", func(r report) bool { return r.Ready })
	js, err := jetstream.New(srv.connect(t, "pnp capacity check"))
	if err != nil {
		t.Fatal(err)
	}
	if err := provisionRoutes(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	// Whole runners, one more instance of two of the heartbeat's
	// algorithms each: the cache sees them join the heartbeat's instances
	// and the runner's.
	fleet := startChild(t, "runners", urlEnv+"="+srv.url, instancesEnv+"=2", algsEnv+"=2")
	fleet.waitFor(t, time.Minute, "two runners", func(r report) bool { return r.Ready && r.Records == 2 })
	cache.waitFor(t, time.Minute, "the runners", func(r report) bool { return r.Records == instances+1+2 })
	bad := startChild(t, "no-such-role", urlEnv+"="+srv.url)
	select {
	case <-bad.done:
	case <-time.After(time.Minute):
		t.Fatal("an unknown role did not exit")
	}
	if err := bad.cmd.Wait(); err == nil {
		t.Error("an unknown role exited 0")
	}
}
