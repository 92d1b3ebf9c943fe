package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Bucket is the name of the KV bucket that holds registrations.
const Bucket = "discovery"

// DefaultTTL is how long a registration lives without a heartbeat.
const DefaultTTL = 15 * time.Second

// DefaultMaxBytes bounds the discovery bucket: far above what the live
// records of thousands of instances take, and reserved for discovery alone
// in an account whose JetStream limit is the sum of every stream's max
// bytes, so no other stream filling up can make heartbeats fail.
const DefaultMaxBytes = 64 << 20

// DefaultMaxConsumers bounds the consumers of the discovery bucket's
// stream. Only the system's own processes create them — each controller
// and each gateway keeps one watcher (discovery.Cache), and admin tools
// (pnp algorithms, pnp jobs, nats kv watch) hold one while they run —
// runners read the bucket with direct gets and create none. 256 is about
// ten times what a deployment of ten controllers and ten gateways needs
// with admin tools running, and far below the server's own limit, so
// nobody can take the last consumer slot the controllers need by creating
// thousands. Raise it with pnp provision --discovery-max-consumers.
const DefaultMaxConsumers = 256

// Config configures the discovery bucket. The zero value is the default
// bucket: "discovery", 15 s max age, at most DefaultMaxBytes, one replica,
// file storage.
type Config struct {
	// Bucket name. Default Bucket.
	Bucket string
	// TTL is the bucket's max age: a record that is not renewed within TTL
	// disappears, and watchers see a purge marker. Runners renew every TTL/3.
	// Default DefaultTTL. Only used when provisioning; Open reads it from
	// the bucket.
	TTL time.Duration
	// Replicas of the bucket's stream in a cluster. Default 1.
	Replicas int
	// Placement, when set, puts the bucket's stream in the named cluster
	// (or on servers with all the tags). Default nil: the cluster of the
	// server the provisioning client is connected to. Only used when
	// provisioning.
	Placement *jetstream.Placement
	// MaxBytes caps the bucket's size; -1 means no limit (refused by an
	// account with max_bytes_required). Default DefaultMaxBytes. Only used
	// when provisioning.
	MaxBytes int64
	// MaxConsumers bounds the consumers of the bucket's stream. Default
	// DefaultMaxConsumers; -1 means the server's limit. Only used when
	// provisioning: a new bucket gets it, an existing one with Update.
	MaxConsumers int
	// Update makes Provision bring an existing bucket to this
	// configuration. Without it an existing bucket is used as it is, so
	// runners starting with defaults never undo what an operator set.
	Update bool
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = Bucket
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
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
	if c.TTL != 0 && c.TTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("discovery: ttl %s is below 3s", c.TTL))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("discovery: replicas %d out of range 1..5", c.Replicas))
	}
	if c.MaxBytes < -1 {
		errs = append(errs, fmt.Errorf("discovery: max bytes %d is negative (-1 means no limit)", c.MaxBytes))
	}
	if c.MaxConsumers < -1 {
		errs = append(errs, fmt.Errorf("discovery: max consumers %d is negative (-1 means the server's limit)", c.MaxConsumers))
	}
	return errors.Join(errs...)
}

// Registry reads and writes registrations in the discovery bucket. It is
// safe for concurrent use.
type Registry struct {
	js    jetstream.JetStream
	mu    sync.Mutex // guards kv and cfg.TTL, replaced when re-provisioning
	kv    jetstream.KeyValue
	cfg   Config
	codec *Codec
	// canProvision is set when the registry was made by Provision, so a
	// bucket that disappeared (say, a server that lost its store) is
	// created again on the next heartbeat.
	canProvision bool
	reprovision  sync.Mutex
	// stream is the bucket's stream, bound on first use by LookupDirect
	// (guarded by mu).
	stream jetstream.Stream
}

// Provision creates the discovery bucket if it does not exist (or, with
// cfg.Update, brings it to cfg), and returns a registry over it. It is
// idempotent: every runner and controller may call it at start-up, and none
// depends on another having started first. The registry's TTL is the
// bucket's actual max age.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	r, err := newRegistry(js, cfg)
	if err != nil {
		return nil, err
	}
	r.canProvision = true
	if err := r.provision(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Open returns a registry over an existing bucket, for clients that may not
// create streams. It fails with jetstream.ErrBucketNotFound when the bucket
// has not been provisioned.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Registry, error) {
	cfg.setDefaults()
	r, err := newRegistry(js, cfg)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("discovery: open bucket %s: %w", cfg.Bucket, err)
	}
	if err := r.bind(ctx, kv); err != nil {
		return nil, err
	}
	return r, nil
}

func newRegistry(js jetstream.JetStream, cfg Config) (*Registry, error) {
	codec, err := NewCodec()
	if err != nil {
		return nil, err
	}
	return &Registry{js: js, cfg: cfg, codec: codec}, nil
}

func (r *Registry) provision(ctx context.Context) error {
	want := jetstream.KeyValueConfig{
		Bucket:         r.cfg.Bucket,
		Description:    "pnpworker: live runner instances, one key <algorithm>.<instance>",
		History:        1,
		TTL:            r.cfg.TTL,
		LimitMarkerTTL: r.cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       r.cfg.Replicas,
		Placement:      r.cfg.Placement,
		MaxBytes:       r.cfg.MaxBytes,
	}
	var kv jetstream.KeyValue
	var err error
	created := true
	if r.cfg.Update {
		kv, err = r.js.CreateOrUpdateKeyValue(ctx, want)
	} else {
		kv, err = r.js.CreateKeyValue(ctx, want)
		if errors.Is(err, jetstream.ErrBucketExists) {
			created = false
			kv, err = r.js.KeyValue(ctx, r.cfg.Bucket)
		}
	}
	if err == nil && (created || r.cfg.Update) {
		// A bucket's configuration has no consumer limit: it is the
		// stream's, set after the bucket (an update of the bucket resets
		// it, so it is set again every time).
		err = SetMaxConsumers(ctx, r.js, "KV_"+r.cfg.Bucket, r.cfg.MaxConsumers)
	}
	if err != nil {
		return fmt.Errorf("discovery: provision bucket %s: %w", r.cfg.Bucket, err)
	}
	return r.bind(ctx, kv)
}

// SetMaxConsumers sets the max_consumers of stream to n (-1: the server's
// limit) unless it has that value already. Consumers that exist stay;
// creating one more fails with "maximum consumers limit reached" while
// there are n or more.
func SetMaxConsumers(ctx context.Context, js jetstream.JetStream, stream string, n int) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxConsumers == n {
		return nil
	}
	cfg.MaxConsumers = n
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("stream %s: max consumers %d: %w", stream, n, err)
	}
	return nil
}

// bind makes kv the registry's bucket and adopts its max age.
func (r *Registry) bind(ctx context.Context, kv jetstream.KeyValue) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("discovery: bucket %s status: %w", r.cfg.Bucket, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kv = kv
	r.stream = nil
	if st.TTL() > 0 {
		r.cfg.TTL = st.TTL()
	}
	return nil
}

func (r *Registry) bucket() jetstream.KeyValue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kv
}

// TTL is the bucket's max age.
func (r *Registry) TTL() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg.TTL
}

// KeyValue exposes the underlying bucket.
func (r *Registry) KeyValue() jetstream.KeyValue { return r.bucket() }

// Codec returns the record codec the registry validates with.
func (r *Registry) Codec() *Codec { return r.codec }

// Register writes rec under rec.Key(), with HeartbeatAt set to now.
func (r *Registry) Register(ctx context.Context, rec Registration) error {
	rec.HeartbeatAt = time.Now().UTC()
	b, err := r.codec.Encode(rec)
	if err != nil {
		return err
	}
	if _, err := r.bucket().Put(ctx, rec.Key(), b); err != nil {
		return fmt.Errorf("discovery: put %s: %w", rec.Key(), err)
	}
	return nil
}

// Deregister deletes the record stored under key. Watchers see the delete
// at once.
func (r *Registry) Deregister(ctx context.Context, key string) error {
	if err := r.bucket().Delete(ctx, key); err != nil {
		return fmt.Errorf("discovery: delete %s: %w", key, err)
	}
	return nil
}

// Keepalive renews rec every TTL/3 until ctx is done, then deletes it. The
// caller registers first (Register), so that a failure to join is an error
// it sees; Keepalive itself never gives up: renewal failures (NATS away,
// bucket gone) are logged once and retried at the next tick, and a bucket
// that vanished is created again when the registry may provision.
func (r *Registry) Keepalive(ctx context.Context, rec Registration, log zerolog.Logger) {
	tick := time.NewTicker(r.TTL() / 3)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := r.Deregister(dctx, rec.Key()); err != nil {
				log.Warn().Err(err).Str("key", rec.Key()).Msg("deregister failed; the record expires by itself")
				return
			}
			log.Debug().Str("key", rec.Key()).Msg("deregistered")
			return
		case <-tick.C:
			err := r.Register(ctx, rec)
			if err != nil && r.canProvision && errors.Is(err, jetstream.ErrNoStreamResponse) {
				r.reprovision.Lock()
				if perr := r.provision(ctx); perr == nil {
					err = r.Register(ctx, rec)
				}
				r.reprovision.Unlock()
			}
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn().Err(err).Str("key", rec.Key()).Msg("heartbeat failed; retrying")
				}
				failing = true
			case err == nil && failing:
				log.Info().Str("key", rec.Key()).Msg("heartbeat restored")
				failing = false
			}
		}
	}
}

// stopWatcher stops w and drains what it still holds: the watcher's
// delivery callback blocks on a full updates channel, and would otherwise
// never return and release its subscription.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}

// List returns every valid record in the bucket, sorted by key. Invalid
// records are skipped and reported to skip, which may be nil.
func (r *Registry) List(ctx context.Context, skip func(key string, err error)) ([]Registration, error) {
	return r.list(ctx, jetstream.AllKeys, skip)
}

func (r *Registry) list(ctx context.Context, pattern string, skip func(key string, err error)) ([]Registration, error) {
	w, err := r.bucket().Watch(ctx, pattern, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("discovery: list: %w", err)
	}
	defer stopWatcher(w)
	var out []Registration
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("discovery: list: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("discovery: list: watcher closed")
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
				return out, nil
			}
			rec, err := r.codec.Decode(e.Key(), e.Value())
			if err != nil {
				if skip != nil {
					skip(e.Key(), err)
				}
				continue
			}
			out = append(out, rec)
		}
	}
}

// Lookup returns the valid records of one algorithm, sorted by key.
func (r *Registry) Lookup(ctx context.Context, algorithm string) ([]Registration, error) {
	if !ValidAlgorithmName(algorithm) {
		return nil, fmt.Errorf("discovery: lookup: invalid algorithm name %q", algorithm)
	}
	return r.list(ctx, algorithm+".*", nil)
}

// LookupDirect returns the valid records of one algorithm, sorted by key,
// like Lookup, but creates no consumer: it lists the algorithm's keys
// with a stream info request filtered on $KV.<bucket>.<algorithm>.*, then
// reads each key's last message with a direct get. So a client needs only
// $JS.API.STREAM.INFO.KV_<bucket> and
// $JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<algorithm>.* — grants
// nats.conf can confine to the algorithms of a runner user, where a grant
// to create consumers cannot be confined at all (a consumer's deliver
// subject is not checked against its creator's permissions). The bucket
// must allow direct gets, as every bucket made by Provision or nats kv add
// does. Deleted and expired keys are left out; invalid records are passed
// to skip, which may be nil.
func (r *Registry) LookupDirect(ctx context.Context, algorithm string, skip func(key string, err error)) ([]Registration, error) {
	if !ValidAlgorithmName(algorithm) {
		return nil, fmt.Errorf("discovery: lookup: invalid algorithm name %q", algorithm)
	}
	r.mu.Lock()
	kv, st, bucket := r.kv, r.stream, r.cfg.Bucket
	r.mu.Unlock()
	if st == nil {
		var err error
		if st, err = r.js.Stream(ctx, "KV_"+bucket); err != nil {
			return nil, fmt.Errorf("discovery: lookup %s: %w", algorithm, err)
		}
		r.mu.Lock()
		if r.kv == kv {
			r.stream = st
		}
		r.mu.Unlock()
	}
	prefix := "$KV." + bucket + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+algorithm+".*"))
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			r.mu.Lock()
			r.stream = nil
			r.mu.Unlock()
		}
		return nil, fmt.Errorf("discovery: lookup %s: %w", algorithm, err)
	}
	var out []Registration
	for subject := range info.State.Subjects {
		key := strings.TrimPrefix(subject, prefix)
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("discovery: lookup %s: get %s: %w", algorithm, key, err)
		}
		rec, err := r.codec.Decode(key, e.Value())
		if err != nil {
			if skip != nil {
				skip(key, err)
			}
			continue
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}
