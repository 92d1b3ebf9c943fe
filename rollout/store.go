package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
)

// Bucket is the name of the KV bucket that holds routes.
const Bucket = "routes"

// DefaultMaxBytes bounds the routes bucket: one small record per
// algorithm, with a short history.
const DefaultMaxBytes = 1 << 20

// DefaultMaxConsumers bounds the consumers of the routes bucket's stream.
// Only the system's own processes create them — each controller and each
// gateway keeps one watcher (Table), admin tools one while they run —
// runners read their routes with direct gets and create none. The figure
// and the way to raise it (pnp provision --routes-max-consumers) are those
// of discovery.DefaultMaxConsumers. COMPARE and HISTORY get the same bound:
// their readers (the gateway, pnp route report, pnp replay) hold a
// consumer for one read each.
const DefaultMaxConsumers = 256

// Config configures the routes bucket. The zero value is the default:
// bucket "routes", at most DefaultMaxBytes, one replica, file storage (so
// routes survive restarts), 5 revisions of history per key.
type Config struct {
	// Bucket name. Default Bucket.
	Bucket string
	// Replicas of the bucket's stream in a cluster. Default 1.
	Replicas int
	// Placement, when set, puts the bucket's stream in the named cluster
	// (or on servers with all the tags). Default nil: the cluster of the
	// server the provisioning client is connected to. Only used when
	// provisioning.
	Placement *jetstream.Placement
	// MaxBytes caps the bucket's size. Default DefaultMaxBytes. Only used
	// when provisioning.
	MaxBytes int64
	// MaxConsumers bounds the consumers of the bucket's stream. Default
	// DefaultMaxConsumers; -1 means the server's limit. Only used when
	// provisioning: a new bucket gets it, an existing one with Update.
	MaxConsumers int
	// Update makes Provision bring an existing bucket to this
	// configuration (pnp provision). Without it an existing bucket is used
	// as it is, so runners starting with defaults never undo what an
	// operator set.
	Update bool
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = Bucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxConsumers == 0 {
		c.MaxConsumers = DefaultMaxConsumers
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("rollout: replicas %d out of range 1..5", c.Replicas))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("rollout: max bytes %d is negative", c.MaxBytes))
	}
	if c.MaxConsumers < -1 {
		errs = append(errs, fmt.Errorf("rollout: max consumers %d is negative (-1 means the server's limit)", c.MaxConsumers))
	}
	return errors.Join(errs...)
}

// Store reads and writes routes. It is safe for concurrent use.
type Store struct {
	kv    jetstream.KeyValue
	codec *Codec
}

// Provision creates the routes bucket if it does not exist (or, with
// cfg.Update, brings it to cfg) and returns a store over it. It is
// idempotent.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	want := jetstream.KeyValueConfig{
		Bucket:       cfg.Bucket,
		Description:  "pnpworker: routes between versions, one key <algorithm>",
		History:      5,
		Storage:      jetstream.FileStorage,
		Replicas:     cfg.Replicas,
		Placement:    cfg.Placement,
		MaxBytes:     cfg.MaxBytes,
		MaxValueSize: MaxRecordSize,
	}
	var kv jetstream.KeyValue
	var err error
	created := true
	if cfg.Update {
		kv, err = js.CreateOrUpdateKeyValue(ctx, want)
	} else {
		kv, err = js.CreateKeyValue(ctx, want)
		if errors.Is(err, jetstream.ErrBucketExists) {
			created = false
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err == nil && (created || cfg.Update) {
		// The consumer limit is the stream's; an update of the bucket
		// resets it, so it is set after every one.
		err = discovery.SetMaxConsumers(ctx, js, "KV_"+cfg.Bucket, cfg.MaxConsumers)
	}
	if err != nil {
		return nil, fmt.Errorf("rollout: provision bucket %s: %w", cfg.Bucket, err)
	}
	return newStore(kv)
}

// Open returns a store over an existing bucket. It fails with
// jetstream.ErrBucketNotFound when the bucket has not been provisioned.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	cfg.setDefaults()
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("rollout: open bucket %s: %w", cfg.Bucket, err)
	}
	return newStore(kv)
}

func newStore(kv jetstream.KeyValue) (*Store, error) {
	c, err := NewCodec()
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, codec: c}, nil
}

// KeyValue exposes the underlying bucket.
func (s *Store) KeyValue() jetstream.KeyValue { return s.kv }

// Get returns the route of algorithm, or ErrNoRoute.
func (s *Store) Get(ctx context.Context, algorithm string) (Route, error) {
	r, _, err := s.get(ctx, algorithm)
	return r, err
}

func (s *Store) get(ctx context.Context, algorithm string) (Route, uint64, error) {
	e, err := s.kv.Get(ctx, algorithm)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Route{}, 0, fmt.Errorf("rollout: %s: %w", algorithm, ErrNoRoute)
	}
	if err != nil {
		return Route{}, 0, fmt.Errorf("rollout: get route %s: %w", algorithm, err)
	}
	r, err := s.codec.Decode(algorithm, e.Value())
	if err != nil {
		return Route{}, 0, fmt.Errorf("rollout: route %s: %w", algorithm, err)
	}
	return r, e.Revision(), nil
}

// Set validates r, stamps UpdatedAt and stores it as the route of
// r.Algorithm, replacing any other.
func (s *Store) Set(ctx context.Context, r Route) error {
	r.UpdatedAt = time.Now().UTC()
	b, err := s.codec.Encode(r)
	if err != nil {
		return fmt.Errorf("rollout: set route: %w", err)
	}
	if _, err := s.kv.Put(ctx, r.Algorithm, b); err != nil {
		return fmt.Errorf("rollout: put route %s: %w", r.Algorithm, err)
	}
	return nil
}

// Clear deletes the route of algorithm: every version serves
// run.<algorithm> again.
func (s *Store) Clear(ctx context.Context, algorithm string) error {
	if err := s.kv.Delete(ctx, algorithm); err != nil {
		return fmt.Errorf("rollout: clear route %s: %w", algorithm, err)
	}
	return nil
}

// Promote makes the route's candidate (its canary, else its shadow) the
// stable version and drops canary and shadow. The update is conditional
// on the revision read, so two concurrent changes cannot both win. It
// fails when the route has no candidate.
func (s *Store) Promote(ctx context.Context, algorithm, by string) (Route, error) {
	r, rev, err := s.get(ctx, algorithm)
	if err != nil {
		return Route{}, err
	}
	c := r.Candidate()
	if c == "" {
		return Route{}, fmt.Errorf("rollout: promote %s: the route names no canary or shadow", algorithm)
	}
	r = Route{Algorithm: algorithm, Stable: c, UpdatedAt: time.Now().UTC(), UpdatedBy: by}
	b, err := s.codec.Encode(r)
	if err != nil {
		return Route{}, fmt.Errorf("rollout: promote: %w", err)
	}
	if _, err := s.kv.Update(ctx, algorithm, b, rev); err != nil {
		return Route{}, fmt.Errorf("rollout: promote %s (changed concurrently?): %w", algorithm, err)
	}
	return r, nil
}

// List returns every valid route, sorted by algorithm. Invalid records are
// passed to skip (may be nil) and left out.
func (s *Store) List(ctx context.Context, skip func(key string, err error)) ([]Route, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollout: list routes: %w", err)
	}
	var out []Route
	for k := range keys.Keys() {
		r, err := s.Get(ctx, k)
		if errors.Is(err, ErrNoRoute) {
			continue
		}
		if err != nil {
			if skip != nil {
				skip(k, err)
			}
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Algorithm < out[j].Algorithm })
	return out, nil
}
