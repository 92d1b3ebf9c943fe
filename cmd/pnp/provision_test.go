package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/rollout"
)

// TestProvision checks the one-shot provisioning step of a deployment:
// everything exists afterwards with the settings given, and a second run
// changes nothing that was not asked.
func TestProvision(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	for range 2 {
		code, stdout, stderr := runPnp(t, "provision", "--server", s.URL(), "--discovery-ttl", "9s", "--result-ttl", "1h")
		if code != 0 || !strings.HasPrefix(stdout, "provisioned ") {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	}
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := jobs.OpenStore(ctx, js, jobs.StoreConfig{})
	if err != nil {
		t.Fatalf("streams not there after provision: %v", err)
	}
	if got := st.Registry().TTL(); got != 9*time.Second {
		t.Errorf("discovery ttl %s, want 9s", got)
	}
	rs, err := st.Results().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs.TTL() != time.Hour {
		t.Errorf("results ttl %s, want 1h", rs.TTL())
	}
	if _, err := discovery.Open(ctx, js, discovery.Config{}); err != nil {
		t.Fatal(err)
	}
}

// TestProvisionLimits checks the storage limits reach the streams: given
// ones as given, the others at their defaults, JOBS refusing new jobs when
// full and DEAD dropping its oldest.
func TestProvisionLimits(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	code, stdout, stderr := runPnp(t, "provision", "--server", s.URL(),
		"--jobs-max-bytes", "2MiB", "--jobs-max-msgs", "5000", "--dead-max-bytes", "512K", "--results-max-bytes", "3MB", "--discovery-max-bytes", "1m")
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	js, err := jetstream.New(s.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := map[string]struct {
		bytes, msgs int64
		discard     jetstream.DiscardPolicy
	}{
		jobs.JobsStream:            {2 << 20, 5000, jetstream.DiscardNew},
		jobs.DeadStream:            {512 << 10, jobs.DefaultDeadMaxMsgs, jetstream.DiscardOld},
		"KV_" + jobs.ResultsBucket: {3 << 20, -1, jetstream.DiscardOld},
		"KV_" + discovery.Bucket:   {1 << 20, -1, jetstream.DiscardNew},
	}
	for name, w := range want {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		if c.MaxBytes != w.bytes || c.MaxMsgs != w.msgs || c.Discard != w.discard {
			t.Errorf("%s: max bytes %d, max msgs %d, discard %v; want %d, %d, %v", name, c.MaxBytes, c.MaxMsgs, c.Discard, w.bytes, w.msgs, w.discard)
		}
	}

	// A full JOBS: pnp submit says so, in one line, and exits 1.
	if code, _, stderr := runPnp(t, "provision", "--server", s.URL(), "--jobs-max-msgs", "1", "--jobs-max-per-algorithm", "-1"); code != 0 {
		t.Fatalf("provision --jobs-max-msgs 1: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runPnp(t, "submit", "--server", s.URL(), "--allow-unknown", "nobody", "{}"); code != 0 {
		t.Fatalf("first job: exit %d: %s", code, stderr)
	}
	code, _, stderr = runPnp(t, "submit", "--server", s.URL(), "--allow-unknown", "nobody", "{}")
	if code != 1 {
		t.Fatalf("submit to a full JOBS: exit %d, want 1: %s", code, stderr)
	}
	// Nobody serves "nobody", so submit warns first; the error is the one
	// line after the warning.
	var kept []string
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "warning: no runner is registered") {
			kept = append(kept, l)
		}
	}
	stderr = strings.Join(kept, "")
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp submit: jobs: submit \S+: job queue full: stream JOBS refused the job \(maximum messages exceeded\), at its limits of 1 GiB and 1 job,`))

	// A full algorithm: only its own jobs are refused, and the line
	// names the subject and the limit.
	if code, _, stderr := runPnp(t, "provision", "--server", s.URL(), "--jobs-max-msgs", "100", "--jobs-max-per-algorithm", "1"); code != 0 {
		t.Fatalf("provision --jobs-max-per-algorithm 1: exit %d: %s", code, stderr)
	}
	code, _, stderr = runPnp(t, "submit", "--server", s.URL(), "--allow-unknown", "nobody", "{}")
	if code != 1 {
		t.Fatalf("submit to a full algorithm: exit %d, want 1: %s", code, stderr)
	}
	kept = nil
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "warning: no runner is registered") {
			kept = append(kept, l)
		}
	}
	checkOneLineError(t, strings.Join(kept, ""), regexp.MustCompile(`^pnp submit: jobs: submit \S+: job queue full: jobs\.nobody: per-algorithm queue full \(1 job waiting in stream JOBS: maximum messages per subject exceeded\); other algorithms' jobs are still accepted`))
	if code, _, stderr := runPnp(t, "submit", "--server", s.URL(), "--allow-unknown", "somebody_else", "{}"); code != 0 {
		t.Fatalf("another algorithm's job while one is full: exit %d: %s", code, stderr)
	}

	for _, bad := range []string{"lots", "1.5G", "-2", "12X"} {
		code, _, stderr := runPnp(t, "provision", "--server", s.URL(), "--jobs-max-bytes", bad)
		if code != 2 || !strings.Contains(stderr, "want a size") {
			t.Errorf("--jobs-max-bytes %s: exit %d, stderr %s", bad, code, stderr)
		}
	}
}

func TestProvisionUsage(t *testing.T) {
	isolateEnv(t)
	code, _, stderr := runPnp(t, "provision", "--replicas", "9", "--server", "nats://127.0.0.1:1")
	if code != 2 || !strings.Contains(stderr, "replicas 9 out of range") {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
}

// TestProvisionBoundsWatchConsumers checks that pnp provision bounds the
// consumers of the discovery and routes buckets — on a new deployment, on
// an existing one without a bound when it runs again, and to the values
// given — and refuses a negative bound other than -1.
func TestProvisionBoundsWatchConsumers(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	js, err := jetstream.New(s.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(t *testing.T, discoveryWant, routesWant int) {
		t.Helper()
		for name, want := range map[string]int{"KV_" + discovery.Bucket: discoveryWant, "KV_" + rollout.Bucket: routesWant} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.MaxConsumers; got != want {
				t.Errorf("%s: max_consumers %d, want %d", name, got, want)
			}
		}
	}
	provision := func(t *testing.T, args ...string) {
		t.Helper()
		code, stdout, stderr := runPnp(t, append([]string{"provision", "--server", s.URL()}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	}
	for _, tc := range []struct {
		name                      string
		before                    int // set on both buckets before provisioning; 0: leave
		args                      []string
		discoveryWant, routesWant int
	}{
		{"new deployment", 0, nil, discovery.DefaultMaxConsumers, rollout.DefaultMaxConsumers},
		{"existing buckets without a bound", -1, nil, discovery.DefaultMaxConsumers, rollout.DefaultMaxConsumers},
		{"values given", 0, []string{"--discovery-max-consumers", "512", "--routes-max-consumers", "40"}, 512, 40},
		{"the server's limit", 0, []string{"--discovery-max-consumers", "-1", "--routes-max-consumers", "-1"}, -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != 0 {
				for _, name := range []string{"KV_" + discovery.Bucket, "KV_" + rollout.Bucket} {
					if err := discovery.SetMaxConsumers(ctx, js, name, tc.before); err != nil {
						t.Fatal(err)
					}
				}
			}
			provision(t, tc.args...)
			check(t, tc.discoveryWant, tc.routesWant)
		})
	}
	for _, flag := range []string{"--discovery-max-consumers", "--routes-max-consumers"} {
		code, _, stderr := runPnp(t, "provision", "--server", s.URL(), flag, "-5")
		if code != 2 || !strings.Contains(stderr, "max consumers -5") {
			t.Errorf("%s -5: exit %d, stderr %s", flag, code, stderr)
		}
	}
}
