package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

const testTTL = 3 * time.Second

func record(alg, inst string) discovery.Registration {
	return discovery.Registration{
		Algorithm: alg, Version: "1.0.0", Instance: inst,
		Subject: "run." + alg, QueueGroup: "runners",
		InputSchema: json.RawMessage(`{"type":"object"}`), OutputSchema: json.RawMessage(`{}`),
		TimeoutMS: 1000, MaxConcurrency: 4, StartedAt: time.Now().UTC(),
	}
}

func provision(t *testing.T, nc *nats.Conn) *discovery.Registry {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := discovery.Provision(context.Background(), js, discovery.Config{TTL: testTTL})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func runCache(t *testing.T, reg *discovery.Registry) *discovery.Cache {
	t.Helper()
	c := reg.NewCache(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("cache never became ready")
	}
	return c
}

func keysOf(recs []discovery.Registration) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Key())
	}
	return out
}

func TestProvisionIsIdempotent(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	provision(t, nc)
	reg := provision(t, nc)
	st, err := reg.KeyValue().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != testTTL || st.History() != 1 || st.(*jetstream.KeyValueBucketStatus).LimitMarkerTTL() != testTTL {
		t.Fatalf("bucket: ttl %s history %d", st.TTL(), st.History())
	}
	if _, err := discovery.Provision(context.Background(), mustJS(t, nc), discovery.Config{TTL: time.Second}); err == nil {
		t.Fatal("a TTL below 3s must be refused")
	}
	opened, err := discovery.Open(context.Background(), mustJS(t, nc), discovery.Config{})
	if err != nil || opened.TTL() != testTTL {
		t.Fatalf("open: %v ttl %v", err, opened.TTL())
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestOpenWithoutBucket(t *testing.T) {
	s := natstest.Start(t)
	_, err := discovery.Open(context.Background(), mustJS(t, s.Connect()), discovery.Config{})
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("open of a missing bucket: %v", err)
	}
}

func TestRegisterListLookupDeregister(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	ctx := context.Background()
	for _, r := range []discovery.Registration{record("ocr", "a"), record("ocr", "b"), record("lang", "c")} {
		if err := reg.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	all, err := reg.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keysOf(all), " "); got != "lang.c ocr.a ocr.b" {
		t.Fatalf("list = %s", got)
	}
	ocr, err := reg.Lookup(ctx, "ocr")
	if err != nil || strings.Join(keysOf(ocr), " ") != "ocr.a ocr.b" {
		t.Fatalf("lookup = %v %v", keysOf(ocr), err)
	}
	if ocr[0].HeartbeatAt.IsZero() || ocr[0].Timeout() != time.Second {
		t.Errorf("record = %+v", ocr[0])
	}
	if err := reg.Deregister(ctx, "ocr.a"); err != nil {
		t.Fatal(err)
	}
	ocr, _ = reg.Lookup(ctx, "ocr")
	if strings.Join(keysOf(ocr), " ") != "ocr.b" {
		t.Fatalf("after deregister: %v", keysOf(ocr))
	}
	if _, err := reg.Lookup(ctx, "bad name!"); err == nil {
		t.Error("lookup of an invalid name must fail")
	}
}

func TestInvalidRecordsAreRefusedAndIgnored(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	ctx := context.Background()
	bad := record("ocr", "x")
	bad.Version = "latest"
	if err := reg.Register(ctx, bad); !errors.Is(err, discovery.ErrInvalidRecord) {
		t.Fatalf("register invalid: %v", err)
	}
	c := runCache(t, reg)
	kv := reg.KeyValue()
	// Hostile or broken writers, straight into the bucket.
	shadow, _ := json.Marshal(record("ocr", "victim"))
	for key, val := range map[string][]byte{
		"ocr.garbage":   []byte("{not json"),
		"ocr.array":     []byte(`[1,2,3]`),
		"ocr.nofields":  []byte(`{"algorithm":"ocr"}`),
		"ocr.shadowing": shadow, // a record that claims another key
	} {
		if _, err := kv.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Register(ctx, record("ocr", "good")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 1 }, "cache never saw the good record")
	if got := keysOf(c.All()); len(got) != 1 || got[0] != "ocr.good" {
		t.Fatalf("cache = %v", got)
	}
	var skipped []string
	list, err := reg.List(ctx, func(key string, err error) { skipped = append(skipped, key) })
	if err != nil || len(list) != 1 || len(skipped) != 4 {
		t.Fatalf("list = %v, skipped %v, err %v", keysOf(list), skipped, err)
	}
}

func TestKeepaliveRenewsAndDeregisters(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	c := runCache(t, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if err := reg.Register(ctx, record("ocr", "k")); err != nil {
		t.Fatal(err)
	}
	go func() { reg.Keepalive(ctx, record("ocr", "k"), zerolog.Nop()); close(done) }()
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 1 }, "never registered")
	first := c.Lookup("ocr")[0].HeartbeatAt
	// Outlive the TTL: renewals keep the record alive.
	natstest.Eventually(t, 2*testTTL, func() bool {
		l := c.Lookup("ocr")
		return len(l) == 1 && l[0].HeartbeatAt.Sub(first) >= testTTL
	}, "record was not renewed past its TTL")
	cancel()
	<-done
	// Deregistered, not left to expire: the key, renewed well within its
	// TTL, is gone at once, and the cache follows.
	if _, err := reg.KeyValue().Get(context.Background(), record("ocr", "k").Key()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after Keepalive returned, the key is still there (%v): not deregistered", err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 0 }, "deregistration not seen by the cache")
}

func TestDeadInstanceExpires(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	c := runCache(t, reg)
	changed := c.Changed()

	// A runner with its own connection that dies without saying goodbye.
	dying := s.Connect()
	dreg := provision(t, dying)
	if err := dreg.Register(context.Background(), record("ocr", "dead")); err != nil {
		t.Fatal(err)
	}
	go dreg.Keepalive(context.Background(), record("ocr", "dead"), zerolog.Nop())
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 1 }, "never registered")
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Error("Changed was not signalled")
	}
	died := time.Now()
	dying.Close()
	natstest.Eventually(t, testTTL+3*time.Second, func() bool { return len(c.Lookup("ocr")) == 0 },
		"dead instance still listed %s after its connection closed", testTTL)
	t.Logf("dead instance dropped %s after its connection closed (ttl %s)", time.Since(died).Round(10*time.Millisecond), testTTL)
	if _, err := reg.KeyValue().Get(context.Background(), "ocr.dead"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("key still readable: %v", err)
	}
}

func TestCacheSurvivesServerRestart(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := provision(t, nc)
	c := runCache(t, reg)
	ctx := context.Background()
	if err := reg.Register(ctx, record("ocr", "before")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 1 }, "never saw the first record")

	s.Restart()
	natstest.Eventually(t, 10*time.Second, nc.IsConnected, "client did not reconnect")
	// JetStream may need a moment after a restart; keep trying to register.
	natstest.Eventually(t, 10*time.Second, func() bool {
		return reg.Register(ctx, record("lang", "after")) == nil
	}, "could not register after restart")
	natstest.Eventually(t, 10*time.Second, func() bool { return len(c.Lookup("lang")) == 1 }, "cache did not see a registration made after the restart")
	if err := reg.Deregister(ctx, "ocr.before"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 0 }, "cache did not see a deletion after the restart")
}

func TestProvisionKeepsAnOperatorsBucket(t *testing.T) {
	s := natstest.Start(t)
	js := mustJS(t, s.Connect())
	ctx := context.Background()
	if _, err := discovery.Provision(ctx, js, discovery.Config{TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// A runner starting with defaults binds to it and adopts its TTL...
	reg, err := discovery.Provision(ctx, js, discovery.Config{})
	if err != nil || reg.TTL() != 30*time.Second {
		t.Fatalf("provision with defaults: ttl %v, %v", reg.TTL(), err)
	}
	// ...and only an explicit update changes it.
	reg, err = discovery.Provision(ctx, js, discovery.Config{TTL: 20 * time.Second, Update: true})
	if err != nil || reg.TTL() != 20*time.Second {
		t.Fatalf("provision with update: ttl %v, %v", reg.TTL(), err)
	}
}

func TestCacheFollowsARecreatedBucket(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := provision(t, nc)
	c := runCache(t, reg)
	ctx := context.Background()
	// Push the old stream's sequence well past what the new one will reach.
	for range 50 {
		if err := reg.Register(ctx, record("ocr", "old")); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 1 }, "never saw the first record")
	if err := mustJS(t, nc).DeleteKeyValue(ctx, discovery.Bucket); err != nil {
		t.Fatal(err)
	}
	reg2 := provision(t, nc)
	if err := reg2.Register(ctx, record("lang", "new")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 3*testTTL, func() bool {
		return len(c.Lookup("ocr")) == 0 && len(c.Lookup("lang")) == 1
	}, "cache still shows the deleted bucket's content: %v", keysOf(c.All()))
}
