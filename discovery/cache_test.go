package discovery_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
)

// closed reports whether ch is closed now.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestCacheOrderAndLookup checks that the cache keeps each algorithm's
// instances apart — "ocr" is a prefix of "ocr_v2" — and that All lists
// every instance sorted by key as instances join and leave.
func TestCacheOrderAndLookup(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	c := runCache(t, reg)
	ctx := context.Background()
	want := []string{"ocr_v2.b", "o.z", "ocr.b", "ocr.a", "o.a", "ocr_v2.a", "ocr.c"}
	for _, k := range want {
		alg, inst, _ := strings.Cut(k, ".")
		if err := reg.Register(ctx, record(alg, inst)); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	natstest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(keysOf(c.All()), want) }, "All = %v, want %v", keysOf(c.All()), want)
	if got := keysOf(c.Lookup("ocr")); !slices.Equal(got, []string{"ocr.a", "ocr.b", "ocr.c"}) {
		t.Errorf("Lookup(ocr) = %v", got)
	}
	if err := reg.Deregister(ctx, "ocr.b"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Deregister(ctx, "o.a"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Deregister(ctx, "o.z"); err != nil {
		t.Fatal(err)
	}
	want = []string{"ocr.a", "ocr.c", "ocr_v2.a", "ocr_v2.b"}
	natstest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(keysOf(c.All()), want) }, "All = %v, want %v", keysOf(c.All()), want)
	if got := c.Lookup("o"); len(got) != 0 {
		t.Errorf("Lookup(o) = %v after both left", keysOf(got))
	}
}

// TestCacheChangedIgnoresHeartbeats checks that a renewed heartbeat
// updates the record's heartbeat time without waking Changed — every
// controller and gateway would otherwise do its work again at every
// heartbeat of every instance — while a join, a change and a leave do.
func TestCacheChangedIgnoresHeartbeats(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	c := runCache(t, reg)
	ctx := context.Background()
	rec := record("ocr", "a")

	changed := c.Changed()
	if err := reg.Register(ctx, rec); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return closed(changed) }, "a join did not signal Changed")
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) == 1 }, "join not seen")
	first := c.Lookup("ocr")[0].HeartbeatAt

	// A renewal: once the cache holds its heartbeat time, a wake-up would
	// have been published with it.
	changed = c.Changed()
	time.Sleep(2 * time.Millisecond) // a later heartbeat time
	if err := reg.Register(ctx, rec); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return c.Lookup("ocr")[0].HeartbeatAt.After(first) }, "heartbeat not seen")
	if closed(changed) {
		t.Fatal("a heartbeat woke Changed")
	}

	changed = c.Changed()
	moved := rec
	moved.MaxConcurrency = 9
	if err := reg.Register(ctx, moved); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return closed(changed) }, "a changed record did not signal Changed")
	if got := c.Lookup("ocr")[0].MaxConcurrency; got != 9 {
		t.Errorf("max concurrency %d after the change, want 9", got)
	}

	changed = c.Changed()
	if err := reg.Deregister(ctx, rec.Key()); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return closed(changed) }, "a leave did not signal Changed")
	if got := c.Lookup("ocr"); len(got) != 0 {
		t.Errorf("Lookup(ocr) = %v after the leave", keysOf(got))
	}
}
