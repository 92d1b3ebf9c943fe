package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// watch runs reg.Watch until the test ends and returns its events and a
// function that stops it and returns its error.
func watch(t *testing.T, reg *discovery.Registry, heartbeats bool) (func(t *testing.T) discovery.Event, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events := make(chan discovery.Event, 100)
	done := make(chan error, 1)
	go func() { done <- reg.Watch(ctx, heartbeats, func(e discovery.Event) { events <- e }) }()
	next := func(t *testing.T) discovery.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(testTTL + 10*time.Second):
			t.Fatal("no event")
		}
		return discovery.Event{}
	}
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("watch did not return when its context ended")
		}
	}
	return next, stop
}

func TestWatch(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	ctx := context.Background()
	expect := func(t *testing.T, e discovery.Event, kind discovery.EventKind, key string) {
		t.Helper()
		if e.Kind != kind || e.Key != key {
			t.Fatalf("event %s %q (%v), want %s %q", e.Kind, e.Key, e.Err, kind, key)
		}
	}
	a := record("ocr", "a")
	if err := reg.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	next, stop := watch(t, reg, true)
	expect(t, next(t), discovery.EventJoin, "ocr.a")
	expect(t, next(t), discovery.EventListed, "")

	if err := reg.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	expect(t, next(t), discovery.EventHeartbeat, "ocr.a")
	a.Version = "2.0.0"
	if err := reg.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	if e := next(t); e.Kind != discovery.EventChange || e.Registration.Version != "2.0.0" {
		t.Fatalf("event %s %+v, want a change to 2.0.0", e.Kind, e.Registration)
	}
	if _, err := reg.KeyValue().Put(ctx, "ocr.garbage", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if e := next(t); e.Kind != discovery.EventInvalid || e.Key != "ocr.garbage" || e.Err == nil {
		t.Fatalf("event %s %q (%v), want invalid ocr.garbage with its reason", e.Kind, e.Key, e.Err)
	}
	if err := reg.Deregister(ctx, "ocr.a"); err != nil {
		t.Fatal(err)
	}
	expect(t, next(t), discovery.EventLeave, "ocr.a")
	// No heartbeat: the record expires after the bucket's max age.
	if err := reg.Register(ctx, record("ocr", "b")); err != nil {
		t.Fatal(err)
	}
	expect(t, next(t), discovery.EventJoin, "ocr.b")
	for {
		// ocr.garbage expires too, at its own time.
		if e := next(t); e.Key == "ocr.b" {
			expect(t, e, discovery.EventExpire, "ocr.b")
			break
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Watch returned %v when its context ended, want nil", err)
	}
}

// Without heartbeats, a record renewed unchanged is no event.
func TestWatchWithoutHeartbeats(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	ctx := context.Background()
	next, _ := watch(t, reg, false)
	if e := next(t); e.Kind != discovery.EventListed {
		t.Fatalf("event %s, want listed first on an empty bucket", e.Kind)
	}
	a := record("ocr", "a")
	for _, rec := range []discovery.Registration{a, a, record("ocr", "b")} {
		if err := reg.Register(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"ocr.a", "ocr.b"} {
		if e := next(t); e.Kind != discovery.EventJoin || e.Key != key {
			t.Fatalf("event %s %q, want join %s (the renewal of ocr.a is no event)", e.Kind, e.Key, key)
		}
	}
}
