package main

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/jsz"
	"github.com/pnpworker/pnpworker/jobs"
)

// pnp up --nats-monitor serves the embedded server's monitoring endpoints,
// and the banner says where: jobs for a declared algorithm nobody serves show as
// its consumer's backlog where KEDA's nats-jetstream scaler reads it, with
// the embedded server's account "$G".
func TestUpNatsMonitorShowsBacklog(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn", "--nats-monitor", "127.0.0.1:0")
	up.waitOutput(t, "Ctrl-C stops it.")
	m := regexp.MustCompile(`monitor   http://(127\.0\.0\.1:\d+)/jsz\?acc=\$G&consumers=true&config=true`).FindStringSubmatch(up.stdout.String())
	if m == nil {
		t.Fatalf("banner names no monitoring endpoint:\n%s", up.stdout.String())
	}
	// Declared, as for runners an autoscaler starts from zero: pnp submit
	// refuses jobs for a name nobody declared or served.
	if code, _, stderr := runPnp(t, "algorithms", "declare", "--server", "nats://"+addr, "nobody_yet"); code != 0 {
		t.Fatalf("declare: exit %d\n%s", code, stderr)
	}
	for i := range 5 {
		if code, _, stderr := runPnp(t, "submit", "--server", "nats://"+addr, "--id", fmt.Sprintf("wait-%d", i), "nobody_yet", `{}`); code != 0 {
			t.Fatalf("submit: exit %d\n%s", code, stderr)
		}
	}
	target := jsz.Target{Account: "$G", Stream: jobs.JobsStream, Consumer: jobs.ConsumerName("nobody_yet")}
	var r jsz.Reading
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		r, err = jsz.Read(ctx, nil, target, m[1])
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if r.ConsumerFound || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !r.ConsumerFound || r.Lag != 5 {
		t.Fatalf("reading %+v, want the consumer %s with lag 5", r, target.Consumer)
	}
}
