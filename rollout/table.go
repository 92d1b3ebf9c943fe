package rollout

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Table is a live, lock-free view of every route, kept by watching the
// routes bucket. Create it with NewTable and call Run; Lookup is safe for
// concurrent use at any time (before the first load it knows no route).
type Table struct {
	js  jetstream.JetStream
	cfg Config
	log zerolog.Logger

	routes    atomic.Pointer[map[string]Route]
	readyOnce sync.Once
	ready     chan struct{}
	mu        sync.Mutex
	changed   chan struct{}
}

// MaxWatchFailures is how many consecutive failures to open or watch the
// routes bucket Table.Run retries (with backoff up to 5 s, so a few
// minutes) before it gives up, logs and returns the last error. A bucket
// that does not exist is no failure: Run looks for it every missingPoll.
const MaxWatchFailures = 60

// missingPoll is how often Table.Run looks for a routes bucket that does
// not exist yet: the first pnp route set creates it, and the route must
// hold within about a second, as a change to an existing one does (one
// stream info request a second per controller and gateway).
const missingPoll = time.Second

// NewTable returns a table over the routes bucket of cfg. The bucket does
// not have to exist yet: Run waits for it.
func NewTable(js jetstream.JetStream, cfg Config, log zerolog.Logger) *Table {
	cfg.setDefaults()
	t := &Table{js: js, cfg: cfg, log: log, ready: make(chan struct{}), changed: make(chan struct{})}
	empty := map[string]Route{}
	t.routes.Store(&empty)
	return t
}

// Lookup returns the route of algorithm, and whether there is one.
func (t *Table) Lookup(algorithm string) (Route, bool) {
	r, ok := (*t.routes.Load())[algorithm]
	return r, ok
}

// All returns every route, sorted by algorithm.
func (t *Table) All() []Route {
	m := *t.routes.Load()
	out := make([]Route, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Algorithm, b.Algorithm) })
	return out
}

// Ready is closed once the table holds the bucket's content, or once the
// bucket was found missing (no routes).
func (t *Table) Ready() <-chan struct{} { return t.ready }

// Changed returns a channel closed at the next change of the table.
func (t *Table) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

func (t *Table) markReady() { t.readyOnce.Do(func() { close(t.ready) }) }

func (t *Table) publish(m map[string]Route) {
	t.routes.Store(&m)
	t.markReady()
	t.mu.Lock()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// Run watches the bucket until ctx is done and returns nil then. Failures
// are logged and retried with backoff; after MaxWatchFailures in a row it
// gives up, logs an error and returns it (the table keeps its last
// content).
func (t *Table) Run(ctx context.Context) error {
	nc := t.js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	backoff := 100 * time.Millisecond
	failures := 0
	missing := false
	for {
		err := t.watch(ctx, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			failures, backoff, missing = 0, 100*time.Millisecond, false
			continue
		}
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			// Not a failure: no routes yet. Look again every few seconds
			// for as long as the table runs (pnp route set creates the
			// bucket), without counting towards giving up.
			if !missing {
				missing = true
				t.log.Info().Str("bucket", t.cfg.Bucket).Msg("no routes bucket yet: every version serves run.<algorithm>; looking for it every second")
				t.publish(map[string]Route{})
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(missingPoll):
			}
			continue
		}
		missing = false
		failures++
		if failures >= MaxWatchFailures {
			t.log.Error().Err(err).Int("attempts", failures).Msg("giving up watching routes; keeping the last routes seen")
			return fmt.Errorf("rollout: watch routes: %w", err)
		}
		t.log.Warn().Err(err).Dur("retry_in", backoff).Msg("routes watch interrupted")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (t *Table) watch(ctx context.Context, reconnected <-chan nats.Status) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := Open(wctx, t.js, t.cfg)
	if err != nil {
		return err
	}
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("rollout: watch routes: %w", err)
	}
	defer func() { _ = w.Stop() }()
	building := map[string]Route{}
	synced := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			t.log.Debug().Msg("reconnected; reloading routes")
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("rollout: routes watcher closed")
			}
			if e == nil {
				synced = true
				t.publish(building)
				continue
			}
			target := building
			if synced {
				target = maps.Clone(*t.routes.Load())
			}
			t.apply(s.codec, target, e)
			if synced {
				t.publish(target)
			}
		}
	}
}

func (t *Table) apply(c *Codec, m map[string]Route, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		delete(m, e.Key())
		return
	}
	r, err := c.Decode(e.Key(), e.Value())
	if err != nil {
		delete(m, e.Key())
		t.log.Warn().Err(err).Str("key", e.Key()).Msg("ignoring invalid route")
		return
	}
	m[e.Key()] = r
}
