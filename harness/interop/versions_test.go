package interop_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

// serveVersion runs one runner of the algorithm ver_echo at version until
// the test ends.
func serveVersion(t *testing.T, s *natstest.Server, version string) {
	t.Helper()
	type in struct {
		N int `json:"n"`
	}
	type out struct {
		N       int    `json:"n"`
		Version string `json:"version"`
	}
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "ver_echo", Version: version,
		InputSchema:  []byte(`{"type":"object","properties":{"n":{"type":"integer"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["n","version"]}`),
	}, func(ctx context.Context, i in) (out, error) { return out{N: i.N, Version: version}, nil })
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(s.Connect(), []*runner.Algorithm{a}, runner.WithLogger(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-r.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}
}

var versionHeader = regexp.MustCompile(`(?m)\bPnp-Version: (\S+)\s*$`)

// answeredBy sends count requests with `nats req` and counts the
// Pnp-Version headers of the replies. The CLI prints replies (headers
// included) only for up to 20 requests per run, so it runs in chunks.
func answeredBy(t *testing.T, c *cli, count int, args ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for count > 0 {
		n := min(count, 20)
		count -= n
		stdout, stderr := c.run(t, append([]string{"req", "--count", strconv.Itoa(n)}, args...)...)
		for _, m := range versionHeader.FindAllStringSubmatch(stdout+stderr, -1) {
			got[m[1]]++
		}
	}
	return got
}

// Stock nats CLI against two versions of one algorithm: without a route
// both answer run.<algorithm>; with stable 1.0.0 all 200 plain requests are
// answered by 1.0.0 while the pinned subject and the Pnp-Version header
// reach 2.0.0; after promote plain traffic moves to 2.0.0.
func TestStockCLIFollowsRoutes(t *testing.T) {
	bin := natsCLI(t)
	s := natstest.Start(t)
	c := newCLI(t, bin, s.URL())
	serveVersion(t, s, "1.0.0")
	serveVersion(t, s, "2.0.0")
	body := `{"n":1}`

	natstest.Eventually(t, 20*time.Second, func() bool {
		got := answeredBy(t, c, 40, "run.ver_echo", body)
		return got["1.0.0"] > 0 && got["2.0.0"] > 0
	}, "without a route both versions should answer")

	js, err := jetstream.New(s.Connect())
	if err != nil {
		t.Fatal(err)
	}
	st, err := rollout.Provision(context.Background(), js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Set(context.Background(), rollout.Route{Algorithm: "ver_echo", Stable: "1.0.0", Canary: "2.0.0", Percent: 30}); err != nil {
		t.Fatal(err)
	}
	// 2.0.0 leaves the shared queue group runner.LeaveGrace after it sees
	// the route. Ten replies from 1.0.0 in a row prove nothing while both
	// are members (one chance in 1024), so wait until the server holds a
	// single member, then check that it is 1.0.0: from there on every
	// plain request must reach 1.0.0.
	natstest.Eventually(t, 10*time.Second, func() bool {
		return s.QueueSubscribers("run.ver_echo", runner.DefaultQueueGroup) == 1
	}, "2.0.0 never left the shared queue group on run.ver_echo")
	if got := answeredBy(t, c, 10, "run.ver_echo", body); len(got) != 1 || got["1.0.0"] != 10 {
		t.Fatalf("the one member left on run.ver_echo is not stable 1.0.0: answered by %v", got)
	}
	if got := answeredBy(t, c, 200, "run.ver_echo", body); len(got) != 1 || got["1.0.0"] != 200 {
		t.Fatalf("200 plain requests with stable 1.0.0 answered by %v", got)
	}
	if got := answeredBy(t, c, 10, "run.ver_echo.v2_0_0", body); len(got) != 1 || got["2.0.0"] != 10 {
		t.Fatalf("pinned requests answered by %v", got)
	}
	if got := answeredBy(t, c, 10, "run.ver_echo", "-H", "Pnp-Version:2.0.0", body); len(got) != 1 || got["2.0.0"] != 10 {
		t.Fatalf("plain requests with Pnp-Version: 2.0.0 answered by %v", got)
	}

	if _, err := st.Promote(context.Background(), "ver_echo", "test"); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	natstest.Eventually(t, 10*time.Second, func() bool {
		if s.QueueSubscribers("run.ver_echo", runner.DefaultQueueGroup) != 1 {
			return false
		}
		got := answeredBy(t, c, 10, "run.ver_echo", body)
		return len(got) == 1 && got["2.0.0"] == 10
	}, "plain traffic never moved to 2.0.0 alone after promote")
	t.Logf("plain CLI traffic on 2.0.0 only, %s after promote (including nats CLI start-up)", time.Since(promoted).Round(time.Millisecond))
}

// The second version is a Python worker (sdk/python through the worker
// bridge): routes steer it like a Go runner, and its pinned subject
// reaches it.
func TestPythonWorkerAsSecondVersion(t *testing.T) {
	py := python.Find(t)
	s := natstest.Start(t)
	nc := s.Connect()
	serveVersion(t, s, "1.0.0")
	dir := t.TempDir()
	module := filepath.Join(dir, "ver_echo_v2.py")
	if err := os.WriteFile(module, []byte(`"""Echo, version 2, in Python."""
from typing import TypedDict

VERSION = "2.0.0"


class In(TypedDict):
    n: int


class Out(TypedDict):
    n: int
    version: str


def run_ver_echo(x: In) -> Out:
    """Echoes n."""
    return {"n": x["n"], "version": VERSION}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sdk, _ := filepath.Abs("../../sdk/python/pnpworker.py")
	w, err := worker.New(s.Connect(), worker.Config{Command: []string{py, sdk, module}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	ask := func(subject string) string {
		m, err := nc.Request(subject, []byte(`{"n":3}`), 5*time.Second)
		if err != nil || protocol.ReplyError(m) != nil {
			return fmt.Sprintf("error %v %v", err, m)
		}
		return m.Header.Get(protocol.HeaderVersion)
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return ask("run.ver_echo.v2_0_0") == "2.0.0" }, "the Python worker's pinned subject never answered")

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rollout.Provision(context.Background(), js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, stable := range []string{"1.0.0", "2.0.0"} {
		if err := st.Set(context.Background(), rollout.Route{Algorithm: "ver_echo", Stable: stable}); err != nil {
			t.Fatal(err)
		}
		natstest.Eventually(t, 10*time.Second, func() bool {
			for range 20 {
				if ask("run.ver_echo") != stable {
					return false
				}
			}
			return true
		}, "plain traffic never settled on %s", stable)
	}
}
