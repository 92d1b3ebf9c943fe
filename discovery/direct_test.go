package discovery_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// LookupDirect lists the live records of one algorithm without a
// consumer: deleted, expired and invalid keys are left out, other
// algorithms are not read, and the bucket's stream has no consumer.
func TestLookupDirect(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := provision(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range []struct{ alg, inst string }{{"ocr", "a"}, {"ocr", "b"}, {"ocr", "gone"}, {"ocr", "dies"}, {"other", "x"}} {
		if err := reg.Register(ctx, record(r.alg, r.inst)); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Deregister(ctx, "ocr.gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.KeyValue().Put(ctx, "ocr.bad", []byte(`{"algorithm":"ocr"}`)); err != nil {
		t.Fatal(err)
	}
	var skipped []string
	got, err := reg.LookupDirect(ctx, "ocr", func(key string, _ error) { skipped = append(skipped, key) })
	if err != nil {
		t.Fatal(err)
	}
	if keys := keysOf(got); !slices.Equal(keys, []string{"ocr.a", "ocr.b", "ocr.dies"}) {
		t.Errorf("live ocr instances %v, want ocr.a, ocr.b, ocr.dies", keys)
	}
	if !slices.Equal(skipped, []string{"ocr.bad"}) {
		t.Errorf("skipped %v, want ocr.bad", skipped)
	}

	// Keep all but ocr.dies alive past the max age: its expiry, which is
	// published on no subject, must show in the next lookup.
	kctx, stop := context.WithCancel(ctx)
	var kept sync.WaitGroup
	for _, inst := range []string{"a", "b"} {
		kept.Add(1)
		go func() { defer kept.Done(); reg.Keepalive(kctx, record("ocr", inst), zerolog.Nop()) }()
	}
	defer func() { stop(); kept.Wait() }()
	natstest.Eventually(t, testTTL+5*time.Second, func() bool {
		got, err := reg.LookupDirect(ctx, "ocr", nil)
		return err == nil && slices.Equal(keysOf(got), []string{"ocr.a", "ocr.b"})
	}, "ocr.dies was still listed after its max age")

	if _, err := reg.LookupDirect(ctx, "no such.name", nil); err == nil {
		t.Error("an invalid algorithm name was looked up")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_"+discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("the bucket has %d consumers; LookupDirect must create none", n)
	}
	// The bucket's stream is gone (and nobody re-creates it at its next
	// heartbeat): an error, then found again once it is back.
	stop()
	kept.Wait()
	if err := js.DeleteStream(ctx, "KV_"+discovery.Bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.LookupDirect(ctx, "ocr", nil); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("lookup without the bucket: %v, want ErrStreamNotFound", err)
	}
	reg2 := provision(t, nc)
	if err := reg2.Register(ctx, record("ocr", "c")); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.LookupDirect(ctx, "ocr", nil); err != nil || !slices.Equal(keysOf(got), []string{"ocr.c"}) {
		t.Errorf("lookup after the bucket came back: %v, %v", keysOf(got), err)
	}
}
