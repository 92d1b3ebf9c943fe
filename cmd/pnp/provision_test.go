package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"pnpworker/controller"
	"pnpworker/discovery"
	"pnpworker/internal/natstest"
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
	st, err := controller.OpenStore(ctx, js, controller.StoreConfig{})
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

func TestProvisionUsage(t *testing.T) {
	isolateEnv(t)
	code, _, stderr := runPnp(t, "provision", "--replicas", "9", "--server", "nats://127.0.0.1:1")
	if code != 2 || !strings.Contains(stderr, "replicas 9 out of range") {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
}
