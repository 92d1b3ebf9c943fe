package discovery

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"strings"
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

// snapshot is one immutable view of the bucket: each algorithm's records,
// sorted by key. Keys are <algorithm>.<instance> and algorithm names hold
// no dot, so the records of all algorithms in algorithm order are sorted
// by key too.
type snapshot struct {
	byAlg map[string][]Registration
}

func newSnapshot(byKey map[string]Registration) *snapshot {
	s := &snapshot{byAlg: make(map[string][]Registration)}
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		r := byKey[k]
		s.byAlg[r.Algorithm] = append(s.byAlg[r.Algorithm], r)
	}
	return s
}

// len is the number of records.
func (s *snapshot) len() int {
	n := 0
	for _, regs := range s.byAlg {
		n += len(regs)
	}
	return n
}

// find returns where the record of key is, or would be, in its
// algorithm's slice.
func (s *snapshot) find(key string) (alg string, i int, found bool) {
	alg, instance, _ := strings.Cut(key, ".")
	i, found = slices.BinarySearchFunc(s.byAlg[alg], instance, func(r Registration, instance string) int {
		return strings.Compare(r.Instance, instance)
	})
	return alg, i, found
}

// with returns s with the record of key replaced by rec, or removed when
// rec is nil, copying only the slice of key's algorithm: an update costs
// what that algorithm's instances take, not what the whole bucket does.
// It returns s itself when nothing changes.
func (s *snapshot) with(key string, rec *Registration) *snapshot {
	alg, i, found := s.find(key)
	regs := s.byAlg[alg]
	switch {
	case rec != nil && found:
		regs = slices.Clone(regs)
		regs[i] = *rec
	case rec != nil:
		regs = slices.Insert(slices.Clip(regs), i, *rec)
	case found:
		regs = slices.Delete(slices.Clone(regs), i, i+1)
	default:
		return s
	}
	next := &snapshot{byAlg: maps.Clone(s.byAlg)}
	if len(regs) == 0 {
		delete(next.byAlg, alg)
	} else {
		next.byAlg[alg] = regs
	}
	return next
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
	out := make([]Registration, 0, s.len())
	for _, alg := range slices.Sorted(maps.Keys(s.byAlg)) {
		out = append(out, s.byAlg[alg]...)
	}
	return out
}

// Changed returns a channel that is closed at the next change of the
// cache's content other than a renewed heartbeat: an instance joins,
// leaves or expires, or its record changes in more than its heartbeat
// time. Take a new one after each wake-up. (Lookup and All return the
// latest heartbeat times all the same.)
func (c *Cache) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// publish makes s the cache's content and, when notify is set, wakes
// whoever waits on Changed.
func (c *Cache) publish(s *snapshot, notify bool) {
	c.snap.Store(s)
	c.readyOnce.Do(func() { close(c.ready) })
	if !notify {
		return
	}
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
	// every update makes a new snapshot from the published one.
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
				c.publish(newSnapshot(building), true)
				building = nil
				continue
			}
			rec := c.decode(e)
			if !synced {
				if rec == nil {
					delete(building, e.Key())
				} else {
					building[e.Key()] = *rec
				}
				continue
			}
			old := c.snap.Load()
			next := old.with(e.Key(), rec)
			if next != old {
				c.publish(next, !old.renews(e.Key(), rec))
			}
		}
	}
}

// decode returns the record an update puts, or nil for a delete, an
// expiry or an invalid record (logged), which all remove the key.
func (c *Cache) decode(e jetstream.KeyValueEntry) *Registration {
	if e.Operation() != jetstream.KeyValuePut {
		return nil
	}
	rec, err := c.reg.codec.Decode(e.Key(), e.Value())
	if err != nil {
		c.log.Warn().Err(err).Str("key", e.Key()).Msg("ignoring invalid registration")
		return nil
	}
	return &rec
}

// renews reports whether rec is the record s holds for key with only its
// heartbeat time renewed.
func (s *snapshot) renews(key string, rec *Registration) bool {
	alg, i, found := s.find(key)
	if rec == nil || !found {
		return false
	}
	prev, next := s.byAlg[alg][i], *rec
	prev.HeartbeatAt, next.HeartbeatAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(prev, next)
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
