package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/protocol"
)

// Names of the streams, subjects and bucket the job pipeline uses.
const (
	// JobsStream holds jobs on JobsSubjectPrefix+<algorithm> (and, of
	// priority high or low, JobsSubjectPrefix+<algorithm>.<priority>),
	// with work-queue retention: a job leaves the stream when it is acked.
	JobsStream        = "JOBS"
	JobsSubjectPrefix = protocol.JobsSubjectPrefix
	// DeadStream holds jobs that cannot succeed, on
	// DeadSubjectPrefix+<algorithm>, until they are replayed or expire.
	DeadStream        = "DEAD"
	DeadSubjectPrefix = protocol.DeadSubjectPrefix
	// DeadInvalidAlgorithm takes the place of the algorithm in the dead
	// letter subject of a job published to jobs.<name> where name is not
	// a valid algorithm name (discovery.ValidAlgorithmName): such a name
	// may be thousands of characters, more than a subject the controller
	// can publish to. It is not a valid algorithm name itself, so it never
	// collides with one, and such dead letters cannot be replayed.
	DeadInvalidAlgorithm = "_invalid"
	// ResultsBucket is the KV bucket of result records, keyed by job id.
	ResultsBucket = "results"
	// InputsBucket is the object store bucket of data producers upload
	// for jobs (pnp put, Store.SubmitFile), read by runners through obj://
	// references.
	InputsBucket = objref.InputsBucket
	// UploadsBucket is the object store bucket of data uploaded through
	// the HTTP gateway (Store.PutUpload), read by runners like inputs.
	UploadsBucket = objref.UploadsBucket
	// OutputsBucket is the object store bucket of outputs too large for a
	// result record, which the controller stores; a result record then
	// carries output_ref. Runners store theirs in their algorithm's own
	// bucket, objref.OutputsBucketFor(algorithm).
	OutputsBucket = objref.OutputsBucket
	// ServedBucket is the KV bucket in which controllers mark, under the
	// algorithm's name, each algorithm a runner has registered for: jobs
	// of an algorithm without a mark expire after
	// Config.MaxUnservedJobAge rather than Config.MaxJobAge.
	ServedBucket = "served"
	// ConsumerPrefix begins the name of each durable consumer of JOBS,
	// ConsumerName.
	ConsumerPrefix = "controller_"
)

// ConsumerName is the durable consumer of JOBS that every controller
// replica shares for algorithm.
func ConsumerName(algorithm string) string { return ConsumerPrefix + algorithm }

// Defaults of StoreConfig.
const (
	DefaultResultTTL       = 24 * time.Hour
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultInputTTL        = time.Hour // also how long a flood of uploads can keep inputs full
	// DefaultObjectsMaxBytes bounds each of the inputs and outputs
	// object store buckets.
	DefaultObjectsMaxBytes = 1 << 30
	// DefaultUploadsMaxBytes bounds the uploads object store bucket.
	DefaultUploadsMaxBytes = 256 << 20
	// DefaultInputsMaxObjectBytes bounds one object of the inputs bucket,
	// as the HTTP API's upload limit does.
	DefaultInputsMaxObjectBytes = 64 << 20
	// InputsChunkBytes is the largest chunk the inputs bucket takes: the
	// chunk size of nats.go, the nats CLI and the other NATS clients'
	// object stores, 128 KiB.
	InputsChunkBytes = 128 << 10
	// DefaultJobsMaxBytes and DefaultJobsMaxMsgs bound stream JOBS.
	DefaultJobsMaxBytes = 1 << 30
	DefaultJobsMaxMsgs  = 1_000_000
	// DefaultJobsMaxPerAlgorithm is the most jobs one algorithm may have
	// waiting in JOBS by default (at most half of JobsMaxMsgs).
	DefaultJobsMaxPerAlgorithm = 10_000
	// ServedMaxBytes bounds the served bucket: a mark takes about 150
	// bytes, so it holds thousands; past it the oldest marks go.
	ServedMaxBytes = 512 << 10
	// DefaultDeadMaxBytes and DefaultDeadMaxMsgs bound stream DEAD.
	DefaultDeadMaxBytes = 256 << 20
	DefaultDeadMaxMsgs  = 100_000
	// DefaultResultsMaxBytes bounds the results bucket.
	DefaultResultsMaxBytes = 1 << 30
)

// ObjectsConfig bounds an object store bucket.
type ObjectsConfig struct {
	// TTL is how long an object is kept. Default: DefaultInputTTL for
	// inputs, StoreConfig.ResultTTL for outputs (an output lives as long
	// as the record that refers to it).
	TTL time.Duration
	// MaxBytes caps the bucket; when it is full, puts fail rather than
	// older objects being dropped. Default DefaultObjectsMaxBytes.
	MaxBytes int64
}

// StoreConfig configures the streams and buckets. The zero value is the
// default set-up: results kept 24 h, job ids de-duplicated for 2 min, dead
// letters kept until replayed, one replica, file storage everywhere, and
// every stream bounded — JOBS to 1 GiB and 1 000 000 jobs, DEAD to 256 MiB
// and 100 000 letters, SCHEDULES to 64 MiB, results to 1 GiB, discovery to
// discovery.DefaultMaxBytes, the inputs and outputs object stores to 1 GiB
// each, uploads to 256 MiB (and each of OutputAlgorithms' to 64 MiB) —
// so that together (about 4.6 GiB, times the replicas; with rollout's
// routes, COMPARE and HISTORY about 4.8 GiB) they fit an
// account's JetStream limit with room to spare, and
// a flood of one never starves the others. For the size and count limits,
// -1 means no limit, which an account with max_bytes_required refuses.
type StoreConfig struct {
	// Discovery configures the discovery bucket, provisioned here as well
	// so that one call sets up everything. Zero value: discovery defaults.
	Discovery discovery.Config
	// ResultTTL is how long a result record is kept. Default
	// DefaultResultTTL.
	ResultTTL time.Duration
	// DuplicateWindow is how long JOBS remembers job ids: a job published
	// again with the same id inside the window is stored once. Default
	// DefaultDuplicateWindow. (After the window, the controller still keeps
	// the first stored result of a job id.)
	DuplicateWindow time.Duration
	// ResultHistory is how many records the results bucket keeps per job:
	// with more than 1, `nats kv history results <id>` shows the retrying
	// records before the outcome. Default 1, at most 64.
	ResultHistory int
	// DeadMaxAge is how long dead letters are kept. Zero keeps them until
	// they are replayed or deleted.
	DeadMaxAge time.Duration
	// JobsMaxBytes caps the bytes stream JOBS holds. A full JOBS refuses
	// new jobs (discard new): Submit fails with an error wrapping
	// ErrJobsFull, and no stored job is ever dropped to make room. Default
	// DefaultJobsMaxBytes.
	JobsMaxBytes int64
	// JobsMaxMsgs caps the number of jobs JOBS holds, refusing more the
	// same way. Default DefaultJobsMaxMsgs.
	JobsMaxMsgs int64
	// JobsMaxPerAlgorithm caps the jobs one algorithm (one subject
	// jobs.<algorithm>) may have in JOBS. A full algorithm refuses only its
	// own new jobs (discard new per subject), so a flood of one algorithm
	// leaves room for the others: Submit fails with an error wrapping
	// ErrAlgorithmFull and ErrJobsFull that names the limit. JetStream
	// counts a subject's jobs, not its bytes: one algorithm holds at most
	// JobsMaxPerAlgorithm times the largest job the server takes, and a
	// flood of large jobs is confined only when that is well below
	// JobsMaxBytes (docs/DEPLOY.md). Default DefaultJobsMaxPerAlgorithm,
	// at most half of JobsMaxMsgs; -1 means no limit. Provision never
	// lowers it below what an algorithm already has waiting (JetStream
	// would drop the oldest jobs to meet it); it logs that it kept the
	// higher value instead.
	JobsMaxPerAlgorithm int64
	// DeadMaxBytes caps the bytes stream DEAD holds. When it is reached
	// the oldest dead letters are dropped (discard old), so dead-lettering
	// never stalls the pipeline; a job's failed result still records its
	// reason. Default DefaultDeadMaxBytes.
	DeadMaxBytes int64
	// DeadMaxMsgs caps the number of dead letters, dropping the oldest
	// the same way. Default DefaultDeadMaxMsgs.
	DeadMaxMsgs int64
	// SchedulesMaxBytes caps stream SCHEDULES: the delayed jobs waiting
	// for their time, the periodic schedules, and the jobs they fired in
	// the last ScheduleDueTTL. JetStream schedules need discard old, so
	// when it is full the oldest messages go, which may be a schedule:
	// size it for the delayed jobs you keep waiting. Default
	// DefaultSchedulesMaxBytes.
	SchedulesMaxBytes int64
	// ResultsMaxBytes caps the results bucket. When it is reached the
	// oldest records are dropped (discard old), as if their ResultTTL had
	// passed, so storing an outcome never fails for room. Default
	// DefaultResultsMaxBytes.
	ResultsMaxBytes int64
	// Replicas of every stream in a cluster. Default 1.
	Replicas int
	// Placement, when set, puts every stream and bucket Provision creates
	// in the named cluster (or on servers with all the tags), e.g. one
	// region of a supercluster. Default nil: JetStream places a new stream
	// in the cluster of the server the provisioning client is connected
	// to, and leaves an existing stream where it is.
	Placement *jetstream.Placement
	// Inputs bounds the inputs object store bucket. Zero value: objects
	// kept 24 h, 1 GiB in all.
	Inputs ObjectsConfig
	// Outputs bounds the outputs object store bucket. Zero value: objects
	// kept as long as results, 1 GiB in all.
	Outputs ObjectsConfig
	// Uploads bounds the uploads object store bucket (HTTP uploads).
	// Zero value: objects kept as long as inputs, 256 MiB in all.
	Uploads ObjectsConfig
	// OutputAlgorithms lists the algorithms whose outputs bucket
	// (objref.OutputsBucketFor) Provision creates or updates, for runners
	// that may not create it (pnp runner --no-provision). Default: none;
	// a runner that may create streams creates its own.
	OutputAlgorithms []string
	// AlgorithmOutputs bounds each of those buckets. Zero value: objects
	// kept as long as results, objref.DefaultAlgorithmOutputsMaxBytes
	// (64 MiB) each.
	AlgorithmOutputs ObjectsConfig
	// InputsMaxObjectBytes bounds one object of the inputs bucket, on the
	// server: the bucket takes chunks of at most InputsChunkBytes (plus
	// room for the object's metadata), and at most InputsMaxObjectBytes /
	// InputsChunkBytes of them per object, refusing the upload past it.
	// So one upload takes at most this much of Inputs.MaxBytes, whatever
	// client made it. Default DefaultInputsMaxObjectBytes; -1 means no
	// limit.
	InputsMaxObjectBytes int64
	// Logger receives Provision's warnings. The zero value discards them.
	Logger zerolog.Logger
}

// limit returns v, or def when v is zero.
func limit(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

func (c *StoreConfig) setDefaults() {
	if c.ResultTTL == 0 {
		c.ResultTTL = DefaultResultTTL
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.ResultHistory == 0 {
		c.ResultHistory = 1
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Inputs.TTL == 0 {
		c.Inputs.TTL = DefaultInputTTL
	}
	if c.Outputs.TTL == 0 {
		c.Outputs.TTL = c.ResultTTL
	}
	if c.Uploads.TTL == 0 {
		c.Uploads.TTL = c.Inputs.TTL
	}
	if c.Uploads.MaxBytes == 0 {
		c.Uploads.MaxBytes = DefaultUploadsMaxBytes
	}
	if c.AlgorithmOutputs.TTL == 0 {
		c.AlgorithmOutputs.TTL = c.ResultTTL
	}
	if c.AlgorithmOutputs.MaxBytes == 0 {
		c.AlgorithmOutputs.MaxBytes = objref.DefaultAlgorithmOutputsMaxBytes
	}
	for _, o := range []*ObjectsConfig{&c.Inputs, &c.Outputs} {
		if o.MaxBytes == 0 {
			o.MaxBytes = DefaultObjectsMaxBytes
		}
	}
	c.JobsMaxBytes = limit(c.JobsMaxBytes, DefaultJobsMaxBytes)
	c.JobsMaxMsgs = limit(c.JobsMaxMsgs, DefaultJobsMaxMsgs)
	c.DeadMaxBytes = limit(c.DeadMaxBytes, DefaultDeadMaxBytes)
	c.DeadMaxMsgs = limit(c.DeadMaxMsgs, DefaultDeadMaxMsgs)
	c.ResultsMaxBytes = limit(c.ResultsMaxBytes, DefaultResultsMaxBytes)
	c.SchedulesMaxBytes = limit(c.SchedulesMaxBytes, DefaultSchedulesMaxBytes)
	c.InputsMaxObjectBytes = limit(c.InputsMaxObjectBytes, DefaultInputsMaxObjectBytes)
}

// Validate reports every problem with c.
func (c StoreConfig) Validate() error {
	var errs []error
	if err := c.Discovery.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ResultTTL < 0 {
		errs = append(errs, fmt.Errorf("result ttl %s is negative", c.ResultTTL))
	} else if c.ResultTTL != 0 && c.ResultTTL < time.Second {
		errs = append(errs, fmt.Errorf("result ttl %s is below 1s", c.ResultTTL))
	}
	if c.DuplicateWindow < 0 {
		errs = append(errs, fmt.Errorf("duplicate window %s is negative", c.DuplicateWindow))
	}
	if c.ResultHistory < 0 || c.ResultHistory > 64 {
		errs = append(errs, fmt.Errorf("result history %d out of range 1..64", c.ResultHistory))
	}
	if c.DeadMaxAge < 0 {
		errs = append(errs, fmt.Errorf("dead letter max age %s is negative", c.DeadMaxAge))
	}
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"jobs max bytes", c.JobsMaxBytes}, {"jobs max messages", c.JobsMaxMsgs},
		{"jobs max per algorithm", c.JobsMaxPerAlgorithm},
		{"dead letter max bytes", c.DeadMaxBytes}, {"dead letter max messages", c.DeadMaxMsgs},
		{"results max bytes", c.ResultsMaxBytes}, {"inputs max object bytes", c.InputsMaxObjectBytes},
		{"schedules max bytes", c.SchedulesMaxBytes},
	} {
		if l.v < -1 {
			errs = append(errs, fmt.Errorf("%s %d is negative (-1 means no limit)", l.name, l.v))
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d out of range 1..5", c.Replicas))
	}
	if p := c.Placement; p != nil && p.Cluster == "" && len(p.Tags) == 0 {
		errs = append(errs, errors.New("placement names neither a cluster nor tags"))
	}
	for name, o := range map[string]ObjectsConfig{InputsBucket: c.Inputs, OutputsBucket: c.Outputs, UploadsBucket: c.Uploads, "algorithm outputs": c.AlgorithmOutputs} {
		if o.TTL < 0 {
			errs = append(errs, fmt.Errorf("%s ttl %s is negative", name, o.TTL))
		}
		if o.MaxBytes < 0 {
			errs = append(errs, fmt.Errorf("%s max bytes %d is negative", name, o.MaxBytes))
		}
	}
	for _, a := range c.OutputAlgorithms {
		if !discovery.ValidAlgorithmName(a) {
			errs = append(errs, fmt.Errorf("output algorithm %q is not an algorithm name", a))
		}
	}
	return errors.Join(errs...)
}

// ErrNotProvisioned is wrapped by OpenStore's error when a stream or bucket
// does not exist yet.
var ErrNotProvisioned = errors.New("job streams not provisioned")

// Store is the job pipeline's storage: streams JOBS and DEAD, the results
// bucket and the discovery registry. It also offers the producer-side
// operations (submit, read results, list and replay dead letters). It is
// safe for concurrent use.
type Store struct {
	js       jetstream.JetStream
	cfg      StoreConfig
	jobs     jetstream.Stream
	dead     jetstream.Stream
	results  jetstream.KeyValue
	registry *discovery.Registry
	// inputs and outputs are nil when OpenStore found no such bucket (a
	// deployment provisioned before they existed, or a role that may not
	// see them).
	inputs, outputs jetstream.ObjectStore
	// served is nil in a store OpenStore made, until bindServed, and
	// when there is no such bucket: every algorithm then counts as
	// served once.
	served jetstream.KeyValue
	// schedules is stream SCHEDULES; nil when OpenStore found none.
	schedules jetstream.Stream
}

// Provision creates or updates every stream and bucket of the system —
// discovery, SCHEDULES, JOBS, results, DEAD, the inputs, outputs and uploads object
// stores and the outputs buckets of cfg.OutputAlgorithms — to cfg and
// returns a Store over them. It
// is idempotent, so every controller (and `pnp up`) calls it at start-up;
// replicas must use the same cfg, or the last one to start wins.
func Provision(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	cfg.setDefaults()
	return provisionAll(ctx, js, cfg)
}

// provisionAll creates or updates everything; cfg has its defaults.
func provisionAll(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	s := &Store{js: js, cfg: cfg}
	reg, err := discovery.Provision(ctx, s.js, s.cfg.Discovery)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	perAlg, err := s.jobsPerAlgorithm(ctx)
	if err != nil {
		return nil, err
	}
	schedules, err := ensureSchedules(ctx, s.js, schedulesConfig(s.cfg))
	if err != nil {
		return nil, fmt.Errorf("jobs: provision stream %s: %w", SchedulesStream, err)
	}
	jobs, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        JobsStream,
		Description: "pnpworker: pending jobs, one subject per algorithm; a job leaves when its result is stored",
		Subjects:    jobsSubjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  s.cfg.DuplicateWindow,
		Replicas:    s.cfg.Replicas,
		Placement:   s.cfg.Placement,
		// A full queue refuses the producer, never drops a stored job;
		// a full algorithm refuses only its own producers.
		MaxBytes:             s.cfg.JobsMaxBytes,
		MaxMsgs:              s.cfg.JobsMaxMsgs,
		MaxMsgsPerSubject:    perAlg,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: perAlg > 0,
		// The jobs the schedules fire, as jobs.<algorithm>. A full JOBS
		// makes the server retry them until it has room.
		Sources: []*jetstream.StreamSource{{
			Name: SchedulesStream,
			SubjectTransforms: []jetstream.SubjectTransformConfig{
				{Source: ScheduleDuePrefix + "*", Destination: JobsSubjectPrefix + "{{wildcard(1)}}"},
				{Source: ScheduleDuePrefix + "*.*", Destination: JobsSubjectPrefix + "{{wildcard(1)}}.{{wildcard(2)}}"},
			},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: provision stream %s: %w", JobsStream, err)
	}
	dead, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DeadStream,
		Description: "pnpworker: jobs that cannot succeed, with their original payload and the reason; replayable",
		Subjects:    []string{DeadSubjectPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      s.cfg.DeadMaxAge,
		Replicas:    s.cfg.Replicas,
		Placement:   s.cfg.Placement,
		// Dead-lettering must always succeed, or jobs stall: the oldest
		// letters make room.
		MaxBytes: s.cfg.DeadMaxBytes,
		MaxMsgs:  s.cfg.DeadMaxMsgs,
		Discard:  jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: provision stream %s: %w", DeadStream, err)
	}
	resultsCfg := jetstream.KeyValueConfig{
		Bucket:      ResultsBucket,
		Description: "pnpworker: job results, key = job id (schemas/result.json)",
		History:     uint8(s.cfg.ResultHistory),
		TTL:         s.cfg.ResultTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
		Placement:   s.cfg.Placement,
		MaxBytes:    s.cfg.ResultsMaxBytes,
	}
	var results jetstream.KeyValue
	// Two processes provisioning at once (a controller starting while
	// pnp submit provisions) may both find no bucket and both create it;
	// the later create is refused as "already in use" once the earlier one
	// has switched the bucket to discard old, and then an update, the next
	// try, applies.
	for try := 0; ; try++ {
		results, err = s.js.CreateOrUpdateKeyValue(ctx, resultsCfg)
		if err == nil || try == 2 || !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: provision bucket %s: %w", ResultsBucket, err)
	}
	if err := discardOld(ctx, s.js, "KV_"+ResultsBucket); err != nil {
		return nil, fmt.Errorf("jobs: provision bucket %s: %w", ResultsBucket, err)
	}
	objects := make([]jetstream.ObjectStore, 3)
	for i, b := range []struct {
		name, what string
		cfg        ObjectsConfig
	}{
		{InputsBucket, "data producers upload for jobs, read by runners through obj:// references", s.cfg.Inputs},
		{OutputsBucket, "outputs too large for a result record, stored by the controller, referred to by output_ref", s.cfg.Outputs},
		{UploadsBucket, "data uploaded through the HTTP gateway, read by runners through obj:// references", s.cfg.Uploads},
	} {
		objects[i], err = s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      b.name,
			Description: "pnpworker: " + b.what,
			TTL:         b.cfg.TTL,
			MaxBytes:    b.cfg.MaxBytes,
			Storage:     jetstream.FileStorage,
			Replicas:    s.cfg.Replicas,
			Placement:   s.cfg.Placement,
		})
		if err != nil {
			return nil, fmt.Errorf("jobs: provision object store %s: %w", b.name, err)
		}
	}
	// Each algorithm's runners write only their own outputs bucket, so
	// that one of them rolling a bucket up empties no other's.
	for _, a := range s.cfg.OutputAlgorithms {
		oc := objref.OutputsConfig(a, s.cfg.AlgorithmOutputs.TTL, s.cfg.AlgorithmOutputs.MaxBytes, s.cfg.Replicas)
		oc.Placement = s.cfg.Placement
		if _, err := s.js.CreateOrUpdateObjectStore(ctx, oc); err != nil {
			return nil, fmt.Errorf("jobs: provision object store %s: %w", oc.Bucket, err)
		}
	}
	if err := limitObjects(ctx, s.js, InputsBucket, s.cfg.InputsMaxObjectBytes, s.cfg.Logger); err != nil {
		return nil, fmt.Errorf("jobs: provision object store %s: %w", InputsBucket, err)
	}
	servedCfg := jetstream.KeyValueConfig{
		Bucket:      ServedBucket,
		Description: "pnpworker: algorithms a runner has registered for, key = algorithm; jobs of the others expire sooner",
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
		Placement:   s.cfg.Placement,
		MaxBytes:    ServedMaxBytes,
	}
	var served jetstream.KeyValue
	// Switched to discard old like results, so the same race (see above).
	for try := 0; ; try++ {
		served, err = s.js.CreateOrUpdateKeyValue(ctx, servedCfg)
		if err == nil || try == 2 || !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			break
		}
	}
	if err == nil {
		// Full, it forgets the algorithms marked longest ago rather than
		// refusing a new mark.
		err = discardOld(ctx, s.js, "KV_"+ServedBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: provision bucket %s: %w", ServedBucket, err)
	}
	s.registry, s.jobs, s.dead, s.results, s.served, s.schedules = reg, jobs, dead, results, served, schedules
	s.inputs, s.outputs = objects[0], objects[1]
	if err := checkNotifyFree(ctx, s.js); err != nil {
		return nil, err
	}
	return s, nil
}

// ErrNotifyCaptured is wrapped by Provision's error when a stream stores
// subjects under NotifySubjectPrefix: a producer's Pnp-Notify could then
// make the controller write into it.
var ErrNotifyCaptured = errors.New("a stream captures the notification subjects")

// checkNotifyFree fails when any stream of the account listens on a
// subject under NotifySubjectPrefix.
func checkNotifyFree(ctx context.Context, js jetstream.JetStream) error {
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(NotifySubjectPrefix+">"))
	var found []string
	for n := range names.Name() {
		found = append(found, n)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("jobs: list streams on %s>: %w", NotifySubjectPrefix, err)
	}
	if len(found) > 0 {
		return fmt.Errorf("jobs: %w: stream %s listens on %s>, where producers direct result notifications (Pnp-Notify); give it other subjects",
			ErrNotifyCaptured, strings.Join(found, ", "), NotifySubjectPrefix)
	}
	return nil
}

// discardOld makes a full stream drop its oldest messages instead of
// refusing new ones. A KV bucket is created with discard new; for results
// that would refuse an outcome when the bucket is full, and the controller
// would hand the job back to run again and again. Dropping the oldest
// records instead is what their TTL does anyway, only earlier.
func discardOld(ctx context.Context, js jetstream.JetStream, name string) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.Discard == jetstream.DiscardOld {
		return nil
	}
	cfg.Discard = jetstream.DiscardOld
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("discard old: %w", err)
	}
	return nil
}

// OpenStore binds to streams and buckets that already exist, for clients
// that may not create them; of cfg only the discovery bucket's name is
// used. It fails with an error wrapping ErrNotProvisioned when one is
// missing.
func OpenStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	s := &Store{js: js}
	var err error
	if s.registry, err = discovery.Open(ctx, js, cfg.Discovery); err != nil {
		return nil, notProvisioned(err)
	}
	if s.jobs, err = js.Stream(ctx, JobsStream); err != nil {
		return nil, notProvisioned(fmt.Errorf("jobs: stream %s: %w", JobsStream, err))
	}
	if s.dead, err = js.Stream(ctx, DeadStream); err != nil {
		return nil, notProvisioned(fmt.Errorf("jobs: stream %s: %w", DeadStream, err))
	}
	if s.results, err = js.KeyValue(ctx, ResultsBucket); err != nil {
		return nil, notProvisioned(fmt.Errorf("jobs: bucket %s: %w", ResultsBucket, err))
	}
	// SCHEDULES and the object stores are optional: without them, delayed
	// jobs, schedules, uploads and outputs by reference fail when used,
	// not at start-up.
	s.schedules, _ = js.Stream(ctx, SchedulesStream)
	s.inputs, _ = js.ObjectStore(ctx, InputsBucket)
	s.outputs, _ = js.ObjectStore(ctx, OutputsBucket)
	return s, nil
}

// AwaitConfig says how AwaitStore retries. The zero value retries every
// 2 s, each attempt bounded to 5 s, until the context ends.
type AwaitConfig struct {
	// Tries bounds the attempts; 0: until the context ends.
	Tries int
	// Interval is the wait between two attempts; 0: 2 s.
	Interval time.Duration
	// AttemptTimeout bounds each attempt; 0: 5 s.
	AttemptTimeout time.Duration
	// OnRetry, when set, is called with the number (from 1) and the error
	// of each failed attempt that is retried, before the wait.
	OnRetry func(try int, err error)
}

// AwaitError is AwaitStore's error when it gives up: after Tries failed
// attempts, or when the context ended after a failed one. It unwraps to
// the last attempt's error (ErrNotProvisioned while nobody provisioned
// the streams).
type AwaitError struct {
	Tries int
	Err   error
}

func (e *AwaitError) Error() string {
	return fmt.Sprintf("jobs: streams not available after %d tries: %v", e.Tries, e.Err)
}

func (e *AwaitError) Unwrap() error { return e.Err }

// AwaitStore is OpenStore retried until the streams are there, so that a
// client (the gateway) does not depend on start order: a controller or
// pnp provision may create them later. It returns the context's error
// when the context ends during a wait, and an *AwaitError when it gives
// up.
func AwaitStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig, ac AwaitConfig) (*Store, error) {
	if ac.Interval <= 0 {
		ac.Interval = 2 * time.Second
	}
	if ac.AttemptTimeout <= 0 {
		ac.AttemptTimeout = 5 * time.Second
	}
	for try := 1; ; try++ {
		octx, cancel := context.WithTimeout(ctx, ac.AttemptTimeout)
		store, err := OpenStore(octx, js, cfg)
		cancel()
		if err == nil {
			return store, nil
		}
		if (ac.Tries > 0 && try >= ac.Tries) || ctx.Err() != nil {
			return nil, &AwaitError{Tries: try, Err: err}
		}
		if ac.OnRetry != nil {
			ac.OnRetry(try, err)
		}
		t := time.NewTimer(ac.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// BindServed binds the served bucket, for a controller on a store it
// opened: producers and the gateway have no use for it (and no
// permission). Without it (provisioned by an older version), jobs of
// algorithms nobody serves expire after MaxJobAge, as before.
func (s *Store) BindServed(ctx context.Context) {
	s.served, _ = s.js.KeyValue(ctx, ServedBucket)
}

// jobsPerAlgorithm is the MaxMsgsPerSubject JOBS gets: the configured
// value (or its default), raised to what an algorithm already has
// waiting, since JetStream meets a lowered limit by dropping the oldest
// jobs. -1 (no limit) stays.
func (s *Store) jobsPerAlgorithm(ctx context.Context) (int64, error) {
	want := s.cfg.JobsMaxPerAlgorithm
	if want == 0 {
		want = DefaultJobsMaxPerAlgorithm
		if s.cfg.JobsMaxMsgs > 0 {
			want = max(1, min(want, s.cfg.JobsMaxMsgs/2))
		}
	}
	if want < 0 {
		return -1, nil
	}
	st, err := s.js.Stream(ctx, JobsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return want, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jobs: provision stream %s: %w", JobsStream, err)
	}
	old := st.CachedInfo()
	if old.State.Msgs == 0 || (old.Config.MaxMsgsPerSubject > 0 && old.Config.MaxMsgsPerSubject <= want) {
		return want, nil
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(JobsSubjectPrefix+">"))
	if err != nil {
		return 0, fmt.Errorf("jobs: provision stream %s: %w", JobsStream, err)
	}
	var most uint64
	for _, n := range info.State.Subjects {
		most = max(most, n)
	}
	if int64(most) > want {
		s.cfg.Logger.Warn().Int64("jobs_max_per_algorithm", want).Uint64("waiting", most).
			Msg("an algorithm has more jobs waiting in JOBS than the per-algorithm limit: keeping the limit at that, as a lower one would drop them; provision again once they are fewer")
		return int64(most), nil
	}
	return want, nil
}

// jobsSubjects are the subjects of JOBS: one per algorithm and priority.
var jobsSubjects = []string{JobsSubjectPrefix + "*", JobsSubjectPrefix + "*." + string(PriorityHigh), JobsSubjectPrefix + "*." + string(PriorityLow)}

// jobsConfig is the configuration of JOBS as the server has it now (an
// admin may have changed the limits since this store bound the stream),
// for error messages; the one read at start-up when it cannot be read.
func (s *Store) jobsConfig(ctx context.Context) jetstream.StreamConfig {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if info, err := s.jobs.Info(ictx); err == nil {
		return info.Config
	}
	return s.jobs.CachedInfo().Config
}

func notProvisioned(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("%w: %w", ErrNotProvisioned, err)
	}
	return err
}

// Reprovision creates or updates every stream and bucket again, to the
// configuration Provision made s with, and returns a new Store over them:
// for a controller that finds them gone (a server that lost its store, an
// operator who deleted a stream). s itself is unchanged.
func (s *Store) Reprovision(ctx context.Context) (*Store, error) {
	return provisionAll(ctx, s.js, s.cfg)
}

// JetStream returns the JetStream context s uses.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Served returns the served bucket, or nil when s has none (a store
// OpenStore made, before BindServed; a deployment without the bucket).
func (s *Store) Served() jetstream.KeyValue { return s.served }

// Outputs returns the outputs object store bucket, or nil when there is
// none (a deployment provisioned before it existed, a role that may not
// see it).
func (s *Store) Outputs() jetstream.ObjectStore { return s.outputs }

// Registry returns the discovery registry.
func (s *Store) Registry() *discovery.Registry { return s.registry }

// Results returns the results bucket.
func (s *Store) Results() jetstream.KeyValue { return s.results }

// Schedules returns stream SCHEDULES, or nil when s has none (a
// deployment provisioned before it existed).
func (s *Store) Schedules() jetstream.Stream { return s.schedules }

// Jobs returns stream JOBS.
func (s *Store) Jobs() jetstream.Stream { return s.jobs }

// Dead returns stream DEAD.
func (s *Store) Dead() jetstream.Stream { return s.dead }

// ErrCorruptResult is wrapped by the errors of Result and WaitResult when
// the record stored under a job id is not that job's record (its job_id
// differs from the key, or it is not a result record at all): a record
// put there by something other than the controller is never taken for
// the job's result.
var ErrCorruptResult = errors.New("corrupt result record")

// ErrNoResult is returned by Result for a job id without a record: the job
// is pending, unknown, or its result expired.
var ErrNoResult = errors.New("no result")

// Result returns the record stored for job id, which may be a retrying
// record, or, for a delayed job waiting for its time, a record with
// StatusScheduled made from its schedule. It fails with ErrNoResult when
// there is neither.
func (s *Store) Result(ctx context.Context, id string) (Result, error) {
	if !ValidJobID(id) {
		return Result{}, fmt.Errorf("jobs: invalid job id %q", id)
	}
	e, err := s.results.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if s.schedules != nil {
			if j, serr := s.Scheduled(ctx, id); serr == nil {
				return j.record(), nil
			}
		}
		return Result{}, fmt.Errorf("jobs: job %s: %w", id, ErrNoResult)
	}
	if err != nil {
		return Result{}, fmt.Errorf("jobs: get result %s: %w", id, err)
	}
	return decodeResult(id, e.Value())
}

// Polling intervals of WaitResult: the first read follows at once, then
// the interval grows from the first to the last.
const (
	waitPollFirst = 20 * time.Millisecond
	waitPollMax   = 500 * time.Millisecond
)

// waitCorruptGrace is how long WaitResult waits for the controller to
// replace a corrupt record before it reports it: a job that runs soon gets
// its result; a record that stays corrupt (a job long done) is an error,
// not a wait without end.
var waitCorruptGrace = 30 * time.Second

// WaitResult returns the final record of job id, waiting for it until ctx
// ends. It reads the key (a direct get) at intervals growing from 20 ms to
// 500 ms rather than watching it: a watch is a consumer, and the producer
// role may not create consumers (a consumer's deliver subject is not
// checked against its creator's permissions). The records it reads that
// are not final (retrying, running) are passed to progress, which may be
// nil, each once (two written between reads show as the later one). Read errors (NATS
// reconnecting, say) do not end the wait; the last one is reported, and
// wrapped, when ctx ends first. Nor does a corrupt record
// (ErrCorruptResult), which the controller replaces when it stores the
// job's outcome, until it has stayed for waitCorruptGrace (30 s).
func (s *Store) WaitResult(ctx context.Context, id string, progress func(Result)) (Result, error) {
	if !ValidJobID(id) {
		return Result{}, fmt.Errorf("jobs: invalid job id %q", id)
	}
	var (
		seen       uint64
		lastErr    error
		wait       time.Duration
		timer      = time.NewTimer(0)
		corrupt    time.Time // since when the record read is corrupt
		corruptErr error
	)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return Result{}, fmt.Errorf("jobs: waiting for result %s: %w (last read: %w)", id, ctx.Err(), lastErr)
			}
			return Result{}, fmt.Errorf("jobs: waiting for result %s: %w", id, ctx.Err())
		case <-timer.C:
		}
		e, err := s.results.Get(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			lastErr = nil
		case err != nil:
			if ctx.Err() == nil {
				lastErr = err
			}
		case e.Revision() != seen:
			seen, lastErr = e.Revision(), nil
			r, err := decodeResult(id, e.Value())
			if err != nil {
				lastErr, corruptErr = err, err
				if corrupt.IsZero() {
					corrupt = time.Now()
				}
				break
			}
			corrupt = time.Time{}
			if r.Status.Final() {
				return r, nil
			}
			if progress != nil {
				progress(r)
			}
		}
		if !corrupt.IsZero() && time.Since(corrupt) >= waitCorruptGrace {
			return Result{}, fmt.Errorf("jobs: waiting for result %s: %w (for %s)", id, corruptErr, time.Since(corrupt).Round(time.Second))
		}
		wait = min(max(2*wait, waitPollFirst), waitPollMax)
		timer.Reset(wait)
	}
}

// decodeResult parses the record stored under key id. A record that is
// not JSON, or that names another job, is corruption (ErrCorruptResult):
// nothing the controller wrote, and never that job's result.
func decodeResult(id string, data []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("jobs: result %s: %w: %w", id, ErrCorruptResult, err)
	}
	if r.JobID != id {
		return Result{}, fmt.Errorf("jobs: result %s: %w: the record is for job %q", id, ErrCorruptResult, truncate(r.JobID, 300))
	}
	return r, nil
}

// limitObjects bounds each object of an object store bucket to maxObject
// bytes on the server: chunks of at most InputsChunkBytes (and 8 KiB more
// for a metadata message with its headers), at most
// maxObject/InputsChunkBytes of them on one object's chunk subject, with
// discard new per subject, so the chunk past the limit is refused and the
// client's put fails (nats.go then purges the chunks it wrote). The
// object's metadata is written with a roll-up, which the per-subject limit
// lets through. -1 removes the limits. It never lowers the per-subject
// limit below the chunks an object already has: JetStream would drop
// those chunks to meet it.
func limitObjects(ctx context.Context, js jetstream.JetStream, bucket string, maxObject int64, log zerolog.Logger) error {
	st, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	perObject, msgSize := int64(-1), int32(-1)
	if maxObject > 0 {
		perObject = (maxObject + InputsChunkBytes - 1) / InputsChunkBytes
		msgSize = InputsChunkBytes + 8<<10
	}
	if perObject > 0 && st.CachedInfo().State.Msgs > 0 && (cfg.MaxMsgsPerSubject <= 0 || cfg.MaxMsgsPerSubject > perObject) {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+bucket+".C.>"))
		if err != nil {
			return err
		}
		var most uint64
		for _, n := range info.State.Subjects {
			most = max(most, n)
		}
		if int64(most) > perObject {
			log.Warn().Str("bucket", bucket).Int64("max_chunks", perObject).Uint64("chunks", most).
				Msg("an object has more chunks than the per-object limit: keeping the limit at that, as a lower one would drop them; provision again once it has expired")
			perObject = int64(most)
		}
	}
	if cfg.MaxMsgsPerSubject == perObject && cfg.MaxMsgSize == msgSize && cfg.DiscardNewPerSubject == (perObject > 0) {
		return nil
	}
	cfg.MaxMsgsPerSubject, cfg.MaxMsgSize, cfg.DiscardNewPerSubject = perObject, msgSize, perObject > 0
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("per-object limit: %w", err)
	}
	return nil
}

// schedulesConfig is stream SCHEDULES: delayed jobs (one-shot schedules
// on ScheduleJobPrefix+<id>), periodic schedules (ScheduleEveryPrefix+
// <name>) and the jobs they fire (ScheduleDuePrefix+<algorithm>, kept
// ScheduleDueTTL), in a file-backed stream so that none is lost to a
// restart.
func schedulesConfig(cfg StoreConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        SchedulesStream,
		Description: "pnpworker: delayed jobs and periodic schedules, and the jobs they fired, which JOBS sources",
		Subjects:    []string{ScheduleSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Placement:   cfg.Placement,
		Duplicates:  cfg.DuplicateWindow,
		MaxBytes:    cfg.SchedulesMaxBytes,
		// Message schedules refuse discard new, and replace a schedule
		// by a roll-up of its subject.
		Discard:           jetstream.DiscardOld,
		AllowMsgSchedules: true,
		AllowMsgTTL:       true,
		AllowRollup:       true,
		AllowDirect:       true,
	}
}

// ensureSchedules creates stream SCHEDULES as want, or updates it when it
// differs, and leaves it alone when it is as wanted. JOBS sources it, and
// nats-server (single server, not clustered) reads a sourced stream's
// configuration without a lock while checking the sourcing stream's
// update: updating an unchanged SCHEDULES while another controller
// provisions JOBS would be a data race in the server.
func ensureSchedules(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, want.Name)
	switch {
	case err == nil && sameSchedulesConfig(st.CachedInfo().Config, want):
		return st, nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// Created by another provisioner meanwhile with the same
		// configuration, the create succeeds too.
		return js.CreateStream(ctx, want)
	case err != nil:
		return nil, err
	}
	return js.UpdateStream(ctx, want)
}

// sameSchedulesConfig reports whether have has every setting
// schedulesConfig sets as want has it.
func sameSchedulesConfig(have, want jetstream.StreamConfig) bool {
	placement := func(p *jetstream.Placement) string {
		if p == nil {
			return ""
		}
		return p.Cluster + "\x00" + strings.Join(p.Tags, ",")
	}
	return have.Description == want.Description && strings.Join(have.Subjects, " ") == strings.Join(want.Subjects, " ") &&
		have.Retention == want.Retention && have.Storage == want.Storage && max(have.Replicas, 1) == max(want.Replicas, 1) &&
		(want.Placement == nil || placement(have.Placement) == placement(want.Placement)) &&
		have.Duplicates == want.Duplicates && have.MaxBytes == want.MaxBytes && have.Discard == want.Discard &&
		have.AllowMsgSchedules == want.AllowMsgSchedules && have.AllowMsgTTL == want.AllowMsgTTL &&
		have.AllowRollup == want.AllowRollup && have.AllowDirect == want.AllowDirect
}
