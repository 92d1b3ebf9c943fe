package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"pnpworker/controller"
	"pnpworker/discovery"
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

// A schema-valid record for an algorithm, with a subject nobody serves and
// a start time in the future, must not draw the algorithm's jobs away from
// the real runners: the controller prefers run.<algorithm> and ignores
// start times in the future when it picks the subject.
func TestForgedNewestRegistrationStallsJobsReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "forged", nil))
	future := time.Now().Add(24 * time.Hour).UTC()
	b, err := json.Marshal(map[string]any{
		"algorithm": "forged", "version": "9.9.9", "instance": "forger",
		"subject": "run.nobody_listens", "queue_group": "runners",
		"input_schema": map[string]any{}, "output_schema": map[string]any{},
		"timeout_ms": 1000, "max_concurrency": 1, "started_at": future, "heartbeat_at": future,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Registry().KeyValue().Put(context.Background(), "forged.forger", b); err != nil {
		t.Fatal(err)
	}
	startController(t, e, fastConfig(t))
	e.submit(t, "forged", "f-1", echoIn{N: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.store.WaitResult(ctx, "f-1", nil); err != nil {
		t.Fatalf("job of a live, healthy runner has no result: %v", err)
	}
}
