package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
)

// Hostile records in the discovery bucket — not JSON, deeply nested,
// stored under another instance's key, a schema that cannot compile or
// points at a remote address — must neither crash the controller nor
// change the outcome of any job: valid jobs succeed, invalid ones fail
// with 400.
func TestHostileRegistrationsReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	h := startRunner(t, e.srv, echo(t, "poison", nil))
	kv := e.store.Registry().KeyValue()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	old := time.Now().Add(-time.Hour).UTC()
	rec := func(instance string, mutate func(map[string]any)) []byte {
		m := map[string]any{
			"algorithm": "poison", "version": "1.0.0", "instance": instance,
			"subject": "run.poison", "queue_group": "runners",
			"input_schema": map[string]any{"type": "object"}, "output_schema": map[string]any{},
			"timeout_ms": 5000, "max_concurrency": 4, "started_at": old, "heartbeat_at": old,
		}
		mutate(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	hostile := map[string][]byte{
		"poison.notjson":  []byte("\xff\xfe not json"),
		"poison.nested":   []byte(strings.Repeat(`{"a":`, 20_000) + "1" + strings.Repeat("}", 20_000)),
		"poison.big":      []byte(`{"x":"` + strings.Repeat("a", 512<<10) + `"}`),
		"poison.shadow":   rec(h.instance(), func(map[string]any) {}), // a record for the real instance under a key that is not its own
		"poison.badtypes": rec("badtypes", func(m map[string]any) { m["timeout_ms"] = "soon"; m["max_concurrency"] = json.Number("1e400") }),
		"poison.noschema": rec("noschema", func(m map[string]any) { m["input_schema"] = map[string]any{"type": 42} }),
		"poison.remote": rec("remote", func(m map[string]any) {
			m["input_schema"] = map[string]any{"$ref": "http://169.254.169.254/latest/meta-data/"}
		}),
		"poison.huge": rec("huge", func(m map[string]any) { m["timeout_ms"] = json.Number("1" + strings.Repeat("0", 40)) }),
	}
	for k, v := range hostile {
		if _, err := kv.Put(ctx, k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	codec, err := discovery.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for k, v := range hostile {
		if _, err := codec.Decode(k, v); err == nil {
			accepted++
			t.Logf("accepted as a registration: %s", k)
		}
	}

	startController(t, e, fastConfig(t))
	const n = 20
	for i := range n {
		e.submit(t, "poison", fmt.Sprintf("ok-%d", i), echoIn{N: i})
		e.submit(t, "poison", fmt.Sprintf("bad-%d", i), map[string]any{"n": "not a number"})
	}
	for i := range n {
		if r := e.waitResult(t, fmt.Sprintf("ok-%d", i)); r.Status != controller.StatusSucceeded {
			t.Errorf("ok-%d: %s %v", i, r.Status, r.Error)
		}
		if r := e.waitResult(t, fmt.Sprintf("bad-%d", i)); r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != 400 {
			t.Errorf("bad-%d: %s %v, want failed with 400", i, r.Status, r.Error)
		}
	}
	t.Logf("%d of %d hostile records pass the codec (schema-valid, key-consistent)", accepted, len(hostile))
}

// A record must carry run.<algorithm>. One that is otherwise current and
// valid — the real runner's own schemas, a fresh start time — but names
// another subject is refused by every reader: it is not listed, and the
// jobs succeed on the real runner. Alone, a record with a subject in the
// jobs namespace must not draw the controller into publishing jobs (it
// once fed its own stream and stored the JetStream ack as the output):
// its jobs wait for a real runner.
func TestForgedSubjectRegistrationReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	h := startRunner(t, e.srv, echo(t, "forged", nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg := e.store.Registry()
	real, err := reg.Lookup(ctx, "forged")
	if err != nil || len(real) != 1 {
		t.Fatalf("real runner's record: %v %v", real, err)
	}
	forge := func(alg, subject string) {
		t.Helper()
		r := real[0]
		r.Algorithm, r.Instance, r.Subject = alg, "forger", subject
		r.StartedAt, r.HeartbeatAt = time.Now().UTC(), time.Now().UTC()
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.KeyValue().Put(ctx, r.Key(), b); err != nil {
			t.Fatal(err)
		}
	}
	forge("forged", "run.nobody_listens")
	forge("lonely", "jobs.lonely")
	for _, alg := range []string{"forged", "lonely"} {
		l, err := reg.Lookup(ctx, alg)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l {
			if r.Instance == "forger" {
				t.Errorf("a record with subject %q is listed for %s", r.Subject, alg)
			}
		}
	}

	startController(t, e, fastConfig(t))
	for i := range 5 {
		e.submit(t, "forged", fmt.Sprintf("f-%d", i), echoIn{N: i})
	}
	e.submit(t, "lonely", "l-1", echoIn{N: 7})
	for i := range 5 {
		r := e.waitResult(t, fmt.Sprintf("f-%d", i))
		if r.Status != controller.StatusSucceeded || r.Instance != h.instance() {
			t.Errorf("f-%d: status %s on instance %q (error %v), want succeeded on the real runner %s", i, r.Status, r.Instance, r.Error, h.instance())
		}
	}
	// The lonely job waits in JOBS until a real runner comes.
	lonely := startRunner(t, e.srv, echo(t, "lonely", nil))
	r := e.waitResult(t, "l-1")
	if r.Status != controller.StatusSucceeded || r.Instance != lonely.instance() || string(r.Output) != `{"n":7}` {
		t.Errorf("l-1: status %s on instance %q, output %s, want succeeded on %s with n 7", r.Status, r.Instance, r.Output, lonely.instance())
	}
	if got := e.statuses(t, "l-1"); len(got) != 1 {
		t.Errorf("l-1 records: %v, want one", got)
	}
}
