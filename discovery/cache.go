package discovery

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Cache is a live view of the discovery bucket, kept up to date by a KV
// watcher. Reads are lock-free: every change publishes a new immutable
// snapshot. The watcher is re-created after a reconnect or a failure, so the
// cache survives NATS restarts and sees registrations made after them.
//
// Create it with Registry.NewCache and call Run. Lookup and All are safe for
// concurrent use and never block.
type Cache struct {
	reg  *Registry
	log  zerolog.Logger
	snap atomic.Pointer[snapshot]

	readyOnce sync.Once
	ready     chan struct{}

	mu      sync.Mutex
	changed chan struct{}
}

type snapshot struct {
	byKey map[string]Registration
	byAlg map[string][]Registration
}

func newSnapshot(byKey map[string]Registration) *snapshot {
	s := &snapshot{byKey: byKey, byAlg: make(map[string][]Registration)}
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		r := byKey[k]
		s.byAlg[r.Algorithm] = append(s.byAlg[r.Algorithm], r)
	}
	return s
}

// NewCache returns a cache over the registry's bucket. Invalid records are
// ignored with a warning on log.
func (r *Registry) NewCache(log zerolog.Logger) *Cache {
	c := &Cache{reg: r, log: log, ready: make(chan struct{}), changed: make(chan struct{})}
	c.snap.Store(newSnapshot(map[string]Registration{}))
	return c
}

// Ready is closed once the cache has loaded the bucket's content the first time.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Lookup returns the live instances of algorithm, sorted by key. The slice
// is shared: do not modify it.
func (c *Cache) Lookup(algorithm string) []Registration { return c.snap.Load().byAlg[algorithm] }

// All returns every live instance, sorted by key.
func (c *Cache) All() []Registration {
	s := c.snap.Load()
	out := make([]Registration, 0, len(s.byKey))
	for _, k := range slices.Sorted(maps.Keys(s.byKey)) {
		out = append(out, s.byKey[k])
	}
	return out
}

// Changed returns a channel that is closed at the next change of the
// cache's content. Take a new one after each wake-up.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *Cache) publish(byKey map[string]Registration) {
	c.snap.Store(newSnapshot(byKey))
	c.readyOnce.Do(func() { close(c.ready) })
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Run watches the bucket until ctx is done. It returns nil on cancellation;
// every other failure is logged and retried with backoff.
func (c *Cache) Run(ctx context.Context) error {
	nc := c.reg.js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	backoff := 100 * time.Millisecond
	for {
		err := c.watch(ctx, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.log.Warn().Err(err).Dur("retry_in", backoff).Msg("discovery watch interrupted")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// watch runs one watcher until it fails, the connection is re-established
// (the watcher is then rebuilt from a fresh snapshot, so deletions missed
// while away are not kept), or ctx ends.
func (c *Cache) watch(ctx context.Context, reconnected <-chan nats.Status) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kv := c.reg.bucket()
	created, err := streamCreated(wctx, kv)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return err
	}
	defer stopWatcher(w)
	// A watcher follows stream sequence numbers. If the bucket is deleted
	// and created again while the connection stays up, the new stream
	// starts from sequence 1 and the watcher would wait, blind, until it
	// passes the old sequence. Check the bucket's identity every TTL.
	check := time.NewTicker(c.reg.TTL())
	defer check.Stop()
	// building collects the initial values; after the initial-values marker
	// every update is applied to a copy of the published map.
	building := map[string]Registration{}
	synced := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			c.log.Debug().Msg("reconnected; reloading discovery")
			return nil
		case <-check.C:
			now, err := streamCreated(wctx, kv)
			if err != nil {
				return err
			}
			if !now.Equal(created) {
				c.log.Info().Msg("discovery bucket was re-created; reloading")
				return nil
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errWatcherClosed
			}
			if e == nil {
				synced = true
				c.publish(building)
				continue
			}
			target := building
			if synced {
				target = maps.Clone(c.snap.Load().byKey)
			}
			c.apply(target, e)
			if synced {
				c.publish(target)
			}
		}
	}
}

func (c *Cache) apply(m map[string]Registration, e jetstream.KeyValueEntry) {
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		delete(m, key)
		return
	}
	rec, err := c.reg.codec.Decode(key, e.Value())
	if err != nil {
		delete(m, key)
		c.log.Warn().Err(err).Str("key", key).Msg("ignoring invalid registration")
		return
	}
	m[key] = rec
}

// streamCreated identifies the bucket's current stream by its creation time.
func streamCreated(ctx context.Context, kv jetstream.KeyValue) (time.Time, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		return s.StreamInfo().Created, nil
	}
	return time.Time{}, nil
}

type cacheError string

func (e cacheError) Error() string { return string(e) }

const errWatcherClosed = cacheError("discovery: watcher closed")
